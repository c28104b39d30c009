"""Which entry a full store evicts: the priority every entry carries, as pure arithmetic.

Both backends keep one number per entry, its *priority*, and evict the lowest first (SQLite:
an indexed column; Redis: the score in a sorted set). The policy says how it is computed:

- :class:`LRU`: the time of the last use. The least recently used goes first.
- :class:`GDSF` (GreedyDual-Size-Frequency, Cherkasova 1998): ``clock + hits * cost / size``.
  ``cost`` is the tokens one hit saves, ``size`` the bytes the entry takes (or 1 per entry),
  ``hits`` counts the store and each use, and ``clock`` is the priority of the last entry
  evicted, so an entry not used for a while falls below newer ones (ageing without timestamps).

``cost`` comes from the answer's token usage (``prompt_tokens + completion_tokens`` in the
entry's metadata, as ``@cached`` and the LiteLLM plugin record it: the tokens a hit saves, the
same figure the ``tokens_saved`` counter adds up); without usage it is estimated from the text,
at :data:`CHARS_PER_TOKEN` characters per token (OpenAI's rule of thumb for English).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from semcache.errors import ConfigurationError

__all__ = [
    "CHARS_PER_TOKEN",
    "GDSF",
    "LRU",
    "Eviction",
    "check_eviction",
    "entry_cost",
    "metadata_cost",
]

#: Characters per token when an answer's usage is unknown (English text, OpenAI tokenisers).
CHARS_PER_TOKEN = 4.0


@dataclass(frozen=True, slots=True)
class LRU:
    """Evict the least recently used entry first (priority = time of last use)."""

    @property
    def name(self) -> str:
        """What a store records, so that reopening it with another policy re-ranks its entries."""
        return "lru"

    @property
    def uses_clock(self) -> bool:
        return False

    def priority(self, clock: float, hits: int, cost: float, size: int, now: float) -> float:
        """The priority of an entry stored or used at ``now``."""
        return now

    def clock_after(self, clock: float, evicted: Iterable[float]) -> float:
        """The clock once entries of these priorities are evicted (LRU keeps none)."""
        return clock


@dataclass(frozen=True, slots=True, kw_only=True)
class GDSF:
    """GreedyDual-Size-Frequency: evict the entry saving the fewest tokens per unit of space.

    Attributes:
        per_byte: divide by the entry's stored bytes (the knapsack density when ``max_bytes``
            binds). ``False``: every entry counts as 1 (when ``max_entries`` binds, a slot is
            the scarce unit and a long answer takes no more of it).
    """

    per_byte: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.per_byte, bool):
            raise ConfigurationError(f"GDSF(per_byte=) must be a bool, got {self.per_byte!r}")

    @property
    def name(self) -> str:
        return "gdsf" if self.per_byte else "gdsf-entry"

    @property
    def uses_clock(self) -> bool:
        return True

    def priority(self, clock: float, hits: int, cost: float, size: int, now: float) -> float:
        """``clock + hits * cost / size`` (size 1 unless ``per_byte``)."""
        return clock + max(hits, 1) * cost / (max(size, 1) if self.per_byte else 1)

    def clock_after(self, clock: float, evicted: Iterable[float]) -> float:
        """The highest priority evicted so far: entries not used since fall below new ones."""
        return max([clock, *evicted])


#: An eviction policy: built by the caller and passed to a backend (``eviction=GDSF()``).
Eviction = LRU | GDSF


def check_eviction(value: object) -> Eviction:
    """``value`` if it is an eviction policy; else :class:`ConfigurationError` saying what is."""
    if not isinstance(value, LRU | GDSF):
        raise ConfigurationError(
            f"eviction must be LRU() or GDSF() from semcache.backends.eviction, got {value!r}"
        )
    return value


def _tokens(value: Any) -> int:
    """A token count from metadata: a non-negative whole number, else 0."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return 0
    return max(0, int(value))


def entry_cost(prompt: str, response_json: str, metadata: Mapping[str, Any]) -> float:
    """The tokens one hit on this entry saves: its recorded usage, else an estimate from text.

    ``response_json`` is the response as stored (JSON text); the estimate counts its characters
    and the prompt's at :data:`CHARS_PER_TOKEN` per token. At least 1.
    """
    used = _tokens(metadata.get("prompt_tokens")) + _tokens(metadata.get("completion_tokens"))
    if used > 0:
        return float(used)
    return max(1.0, (len(prompt) + len(response_json)) / CHARS_PER_TOKEN)


def metadata_cost(prompt: str, response_json: str, metadata_json: str) -> float:
    """:func:`entry_cost` with the metadata as stored (JSON text; unreadable counts as none)."""
    try:
        metadata = json.loads(metadata_json)
    except (TypeError, ValueError):
        metadata = {}
    return entry_cost(prompt, response_json, metadata if isinstance(metadata, dict) else {})
