"""Counters that describe a cache without OpenTelemetry (``cache_info()``)."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Literal, get_args

__all__ = ["CacheInfo", "Counter", "Counters"]


@dataclass(frozen=True, slots=True, kw_only=True)
class CacheInfo:
    """A snapshot of a cache's counters.

    Attributes:
        hits_exact / hits_semantic: hits per tier.
        misses: lookups that found nothing usable.
        bypasses: requests not looked up (bypass requested, uncacheable input, policy skip).
        errors: cache failures turned into misses by the fail-open path (the decorator and the
            integrations); direct ``lookup()``/``store()`` calls raise instead.
        stores / store_refusals: responses stored / refused (error, truncated, tool call, ...).
        coalesced: requests served the answer of a near-identical in-flight upstream call (their
            own lookup counted a miss; the lookup after the wait, which must hit, is not counted).
        evictions: entries removed by the size bound.
        tokens_saved: prompt + completion tokens of the responses served from cache.
        cost_saved: their estimated price, from the telemetry's price table (0 without one).
        shadow_hits: shadow-mode lookups that would have been hits (and were returned as misses).
        feedback: verdicts received by ``feedback()`` (and near misses judged by exploration);
            false_hits / shadow_false_hits: those that said a served / would-be hit was wrong.
        explored / explored_false: hits in the uncertain band sent upstream anyway by
            exploration (:mod:`semcache.matching.explore`), and those whose stored answer the
            fresh one contradicted (counted as misses: the caller got the fresh answer).
        volatile: requests whose prompt the policy's volatility detector recognised (bypassed,
            or looked up among fresh entries only; see :class:`~semcache.policy.VolatilePolicy`).
        entries: entries stored now (``-1`` if the backend could not say).
    """

    hits_exact: int = 0
    hits_semantic: int = 0
    misses: int = 0
    bypasses: int = 0
    errors: int = 0
    stores: int = 0
    store_refusals: int = 0
    coalesced: int = 0
    evictions: int = 0
    tokens_saved: int = 0
    cost_saved: float = 0.0
    shadow_hits: int = 0
    feedback: int = 0
    false_hits: int = 0
    shadow_false_hits: int = 0
    explored: int = 0
    explored_false: int = 0
    volatile: int = 0
    entries: int = 0

    @property
    def hits(self) -> int:
        return self.hits_exact + self.hits_semantic

    @property
    def hit_rate(self) -> float:
        looked_up = self.hits + self.misses
        return self.hits / looked_up if looked_up else 0.0

    @property
    def projected_hit_rate(self) -> float:
        """The hit rate had shadow-mode would-be hits been served (else ``hit_rate``)."""
        looked_up = self.hits + self.misses
        return (self.hits + self.shadow_hits) / looked_up if looked_up else 0.0


Counter = Literal[
    "hits_exact",
    "hits_semantic",
    "misses",
    "bypasses",
    "errors",
    "stores",
    "store_refusals",
    "coalesced",
    "evictions",
    "tokens_saved",
    "cost_saved",
    "shadow_hits",
    "feedback",
    "false_hits",
    "shadow_false_hits",
    "explored",
    "explored_false",
    "volatile",
]
"""The name of a :class:`CacheInfo` counter (a typo fails in mypy, not at run time)."""


class Counters:
    """Thread-safe increments behind :class:`CacheInfo`."""

    _NAMES: tuple[Counter, ...] = get_args(Counter)

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: dict[str, Any] = dict.fromkeys(self._NAMES, 0)

    def add(self, name: Counter, amount: float = 1) -> None:
        with self._lock:
            self._values[name] += amount

    def snapshot(self, entries: int) -> CacheInfo:
        with self._lock:
            return CacheInfo(entries=entries, **self._values)

    def reset(self) -> None:
        with self._lock:
            self._values = dict.fromkeys(self._NAMES, 0)
