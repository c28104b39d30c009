"""Online learning from the LLM's own answers: explore uncertain hits, judge, learn.

With adaptive thresholds (a false-hit bound), a lookup whose served candidate lies in the
*uncertain band* (similarity in ``[threshold, threshold + band)``) is, with probability
``probability``, answered by the LLM anyway: the caller gets the fresh answer, which is compared
with the candidate's stored answer by an :class:`AnswerCheck`, and the verdict is fed to the
thresholds as feedback on that entry. A miss whose nearest candidate was refused only by its
learned threshold, within ``band`` below it, goes upstream anyway, so it is always judged (this
is the evidence that can bring a threshold down). In shadow mode every call goes upstream
already, so every would-be hit in the band is judged too, and reported like any shadow feedback.

:func:`explore_target` is the decision, a pure function shared by the sync and async paths of the
decorator; the random draw is made by the caller (:meth:`Exploration.draw`, a seeded RNG).
"""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

import numpy as np

from semcache.errors import ConfigurationError
from semcache.keys import normalize_text
from semcache.models import Candidate, LookupResult, Tier

if TYPE_CHECKING:
    from semcache.embedders.base import Embedder

__all__ = ["AnswerCheck", "AnswerMatch", "Exploration", "explore_target"]


class AnswerCheck(Protocol):
    """``True`` if a fresh answer and a stored answer say the same (the stored one was right)."""

    def __call__(self, fresh: str, stored: str) -> bool: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class AnswerMatch:
    """The default :class:`AnswerCheck`.

    Short answers (at most ``short_words`` words, either of them) must be equal once normalised
    (case, whitespace, trailing punctuation: :func:`semcache.keys.normalize_text`). Longer ones
    are equal when normalised, or when the cosine similarity of their embeddings is at least
    ``min_cosine`` (0.9 by default: two wordings of one answer, not two answers on one topic,
    for the packaged MiniLM). Without an ``embedder`` long answers must match exactly too.
    """

    embedder: Embedder | None = None
    short_words: int = 12
    min_cosine: float = 0.9

    def __post_init__(self) -> None:
        if self.short_words < 0:
            raise ConfigurationError(f"short_words must be >= 0, got {self.short_words}")
        if not -1.0 <= self.min_cosine <= 1.0:
            raise ConfigurationError(f"min_cosine must be in [-1, 1], got {self.min_cosine}")

    def __call__(self, fresh: str, stored: str) -> bool:
        a, b = normalize_text(fresh), normalize_text(stored)
        if a == b:
            return True
        if self.embedder is None or max(len(a.split()), len(b.split())) <= self.short_words:
            return False
        va, vb = self.embedder.embed([fresh, stored])
        return float(np.dot(va, vb)) >= self.min_cosine


@dataclass(slots=True)
class Exploration:
    """How often, and where, the cache checks itself against the LLM.

    Args:
        probability: chance of exploring a hit inside the band (each explored hit costs one
            upstream call; shadow mode judges every would-be hit in the band for free).
        band: width of the uncertain band above a candidate's threshold.
        rng: the seeded source of the draws (pass ``random.Random(seed)``).
        check: the answer-equivalence check; ``None``: :class:`AnswerMatch` over the cache's
            embedder.

    ``Exploration(band=0)`` turns exploring off (shadow mode's free verdicts too).
    """

    probability: float = 0.05
    band: float = 0.03
    rng: random.Random = field(default_factory=lambda: random.Random(0))
    check: AnswerCheck | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __post_init__(self) -> None:
        if not 0.0 <= self.probability <= 1.0:
            raise ConfigurationError(f"probability must be in [0, 1], got {self.probability}")
        if not 0.0 <= self.band <= 2.0:
            raise ConfigurationError(f"band must be in [0, 2], got {self.band}")

    def draw(self) -> float:
        """The next draw in ``[0, 1)`` (thread-safe)."""
        with self._lock:
            return self.rng.random()


def explore_target(
    result: LookupResult, *, band: float, probability: float, draw: float, shadow: bool
) -> Candidate | None:
    """The candidate to judge against the LLM's answer for this lookup, or ``None``.

    - a served semantic hit (in shadow mode, a would-be hit) within ``band`` above its threshold
      is explored when ``draw < probability`` (one extra upstream call), in shadow mode always;
    - a miss whose nearest candidate was refused only by its learned threshold, within ``band``
      below it, is always judged: the call goes upstream anyway, so the verdict is free.
    """
    if result.similarity is None or result.similarity >= 1.0 or result.tier is Tier.EXACT:
        return None  # no candidate, or an exact repeat: never uncertain
    low, high = result.threshold - band, result.threshold + band
    served = result.shadow if shadow else result.entry
    if served is not None:
        if not result.threshold <= result.similarity < high:
            return None
        return Candidate(served, result.similarity) if shadow or draw < probability else None
    near = result.nearest
    if near is not None and low <= near.similarity < result.threshold:
        return near
    return None
