"""Thresholds learned from feedback, under a user-set bound on the false-hit rate.

A static threshold is one number for the whole embedding space, but how close two prompts must be
to share an answer varies from topic to topic (and from entry to entry). :class:`AdaptiveThresholds`
keeps labelled observations ``(similarity, correct)``, from explicit feedback (a thumbs-down, a
regenerate), from an optional verifier on near-threshold hits, or from labelled pairs given to
:meth:`AdaptiveThresholds.fit`, and splits them by *region* of the embedding space (the nearest of a
few centroids). The thresholds are solved together:

1. the pooled threshold: the lowest similarity whose one-sided Clopper-Pearson upper bound on
   the false-hit rate of all observations at or above it is ``<= delta`` (what a calibrated
   static threshold is);
2. a region whose *own* observations certify a lower threshold under the same bound uses it;
3. every other region shares the lowest threshold ``>=`` the pooled one at which the bound over
   everything served (the lowered regions included) is still ``<= delta``.

So no region is served below the static threshold unless its own evidence certifies it, and the
bound holds over all observations together. Without enough evidence for any threshold, regions
keep ``initial_threshold`` (and stay above every false hit seen). An entry that was served wrongly
is not served again at that similarity or below (the per-entry idea of vCache, Schroeder et al.
2025, implemented here from the paper's description).

Plug it into a cache with ``SemanticCache(thresholds=AdaptiveThresholds(...))``; the policy's
``min_similarity`` stays the floor below which nothing is served, and ``cache.feedback(...)``
feeds it.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from semcache.errors import ConfigurationError, InvalidInputError
from semcache.matching.bounds import AllowanceTable, lowest_safe_threshold
from semcache.models import Candidate

if TYPE_CHECKING:
    from numpy.typing import NDArray

__all__ = [
    "AdaptiveConfig",
    "AdaptiveThresholds",
    "Judge",
    "ThresholdModel",
    "kmeans_centroids",
]


class ThresholdModel(Protocol):
    """What :class:`semcache.SemanticCache` asks of a learned threshold."""

    def for_query(self, query: str, vector: NDArray[np.float32]) -> Callable[[Candidate], float]:
        """The threshold each candidate of this query must reach."""
        ...

    def served(self, entry_id: str, vector: NDArray[np.float32], similarity: float) -> None:
        """A candidate was (or, in shadow mode, would have been) served; feedback may follow."""
        ...

    def feedback(self, entry_id: str, correct: bool) -> bool:
        """Learn whether serving ``entry_id`` was right; ``False`` if it was not served lately."""
        ...


class Judge(Protocol):
    """Labels a near-threshold candidate: ``True`` if its entry's answer is right for ``query``.

    The ``verifier=`` hook of :class:`AdaptiveThresholds`. Not a :class:`semcache.policy.Guard`:
    a guard *vetoes*, its ``None`` means "no objection" and it may pass a candidate unread (the
    cross-encoder verifier does above its band). A judge's verdict is recorded as a label that
    can lower the thresholds, so it must decide every candidate it is given.
    ``CrossEncoderVerifier.confirms`` is a judge; ``CrossEncoderVerifier`` itself is a guard.
    """

    def __call__(self, query: str, candidate: Candidate) -> bool: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class AdaptiveConfig:
    """Settings of :class:`AdaptiveThresholds`.

    Attributes:
        delta: the false-hit rate to stay under (its upper confidence bound, not the estimate).
        confidence: the confidence of that bound (one-sided Clopper-Pearson).
        initial_threshold: served-at threshold before any evidence certifies a lower one.
        window: observations kept per region; the oldest are forgotten (drift).
        verify_margin: candidates less than this far from their threshold (either side) are
            checked by the verifier, if one is given: it decides, and its verdict is learned
            from (this is how thresholds can come down). ``0`` disables verification.
        pending: how many recently served entries are remembered for :meth:`feedback`.
    """

    delta: float = 0.01
    confidence: float = 0.95
    initial_threshold: float = 0.95
    window: int = 50_000
    verify_margin: float = 0.0
    pending: int = 10_000

    def __post_init__(self) -> None:
        if not 0.0 < self.delta < 1.0:
            raise ConfigurationError(f"delta is a false-hit rate in (0, 1), got {self.delta}")
        if not 0.5 <= self.confidence < 1.0:
            raise ConfigurationError(f"confidence must be in [0.5, 1), got {self.confidence}")
        if not -1.0 <= self.initial_threshold <= 1.0:
            raise ConfigurationError(
                f"initial_threshold is a cosine similarity in [-1, 1], got {self.initial_threshold}"
            )
        if self.window < 1 or self.pending < 1:
            raise ConfigurationError(
                f"window and pending must be >= 1, got {self.window} and {self.pending}"
            )
        if not 0.0 <= self.verify_margin <= 2.0:
            raise ConfigurationError(f"verify_margin must be in [0, 2], got {self.verify_margin}")


@dataclass(slots=True)
class _Region:
    sims: list[float]
    correct: list[bool]


@dataclass(frozen=True, slots=True)
class _Served:
    region: int
    similarity: float


class AdaptiveThresholds:
    """Per-region thresholds learned from feedback with a false-hit bound (thread-safe).

    Args:
        config: the bound and its settings.
        centroids: ``(k, dim)`` unit vectors splitting the embedding space into ``k`` regions
            (e.g. :func:`kmeans_centroids` of past queries); ``None`` = one region.
        verifier: optional :class:`Judge` of candidates within ``config.verify_margin`` of their
            threshold: its verdict decides them and is learned from.
    """

    def __init__(
        self,
        config: AdaptiveConfig | None = None,
        *,
        centroids: NDArray[np.float32] | None = None,
        verifier: Judge | None = None,
    ) -> None:
        self.config = config or AdaptiveConfig()
        if centroids is not None:
            centroids = np.ascontiguousarray(centroids, dtype=np.float32)
            if centroids.ndim != 2 or len(centroids) < 1:
                raise ConfigurationError(
                    f"centroids must be a (k, dim) array, got shape {centroids.shape}"
                )
        self._centroids = centroids
        self._verifier = verifier
        k = 1 if centroids is None else len(centroids)
        self._regions = [_Region([], []) for _ in range(k)]
        self._solved: tuple[float | None, list[float]] | None = None  # None = stale
        self._table = AllowanceTable(self.config.delta, self.config.confidence)
        self._entry_floor: OrderedDict[str, float] = OrderedDict()
        self._pending: OrderedDict[str, _Served] = OrderedDict()
        self._lock = threading.RLock()
        self.verified = 0

    # -- regions and thresholds ---------------------------------------------------------------

    @property
    def regions(self) -> int:
        return len(self._regions)

    def region(self, vector: NDArray[np.float32]) -> int:
        """The region of ``vector``: its nearest centroid."""
        if self._centroids is None:
            return 0
        if vector.shape != (self._centroids.shape[1],):
            raise InvalidInputError(
                f"vector has shape {vector.shape}; centroids are {self._centroids.shape[1]}-d"
            )
        return int(np.argmax(self._centroids @ vector))

    def _uncertified(self, sims: NDArray[np.float64], ok: NDArray[np.bool_]) -> float:
        """No threshold certified: ``initial_threshold``, kept above every false hit seen."""
        fallback = self.config.initial_threshold
        false = sims[~ok]
        if false.size == 0:
            return fallback
        return max(fallback, math.nextafter(float(false.max()), math.inf))

    def _solve(self) -> tuple[float | None, list[float]]:
        """(pooled threshold, per-region thresholds), as the module docstring describes."""
        k = len(self._regions)
        region = np.concatenate(
            [np.full(len(r.sims), i, dtype=np.int64) for i, r in enumerate(self._regions)]
        )
        sims = np.fromiter((s for r in self._regions for s in r.sims), dtype=np.float64)
        ok = np.fromiter((c for r in self._regions for c in r.correct), dtype=bool)
        pooled = lowest_safe_threshold(sims, ok, self.config.delta, table=self._table)
        own = np.full(k, math.inf)
        for i in range(k):
            mine = region == i
            t = lowest_safe_threshold(sims[mine], ok[mine], self.config.delta, table=self._table)
            own[i] = math.inf if t is None else t
        ceiling = self._uncertified(sims, ok) if pooled is None else pooled
        lowered = own < ceiling
        fixed = lowered[region] & (sims >= own[region])
        rest = ~lowered[region]
        shared = self._shared(
            sims[rest], ok[rest], int(fixed.sum()), int((fixed & ~ok).sum()), ceiling
        )
        if shared is None:
            shared = max(ceiling, self._uncertified(sims[rest], ok[rest]))
        return pooled, [float(own[i]) if lowered[i] else shared for i in range(k)]

    def _shared(
        self,
        sims: NDArray[np.float64],
        ok: NDArray[np.bool_],
        fixed_hits: int,
        fixed_false: int,
        floor: float,
    ) -> float | None:
        """The lowest cut ``>= floor`` over ``sims`` whose bound, with the fixed hits, holds."""
        keep = sims >= floor
        sims, ok = sims[keep], ok[keep]
        if sims.size == 0:
            return None
        order = np.argsort(-sims, kind="stable")
        sims, ok = sims[order], ok[order]
        hits = fixed_hits + np.arange(1, sims.size + 1)
        false = fixed_false + np.cumsum(~ok)
        last = np.append(sims[1:] != sims[:-1], True)  # cut only between distinct values
        allowed = self._table.upto(fixed_hits + sims.size)[hits]
        idx = np.flatnonzero(last & (false <= allowed))
        return None if idx.size == 0 else float(sims[idx[-1]])

    def _current(self) -> tuple[float | None, list[float]]:
        with self._lock:
            if self._solved is None:
                self._solved = self._solve()
            return self._solved

    def global_threshold(self) -> float | None:
        """The pooled threshold (a calibrated static threshold); ``None`` if none is certified."""
        return self._current()[0]

    def threshold(self, region: int) -> float:
        """The threshold a candidate in ``region`` must reach."""
        return self._current()[1][region]

    def thresholds(self) -> list[float]:
        """The current threshold of every region."""
        return list(self._current()[1])

    # -- learning -----------------------------------------------------------------------------

    def observe(self, region: int, similarity: float, correct: bool) -> None:
        """Record that serving at ``similarity`` in ``region`` was right or wrong."""
        with self._lock:
            r = self._regions[region]
            r.sims.append(float(similarity))
            r.correct.append(bool(correct))
            if len(r.sims) > self.config.window:
                del r.sims[0], r.correct[0]
            self._solved = None

    def fit(
        self,
        vectors: NDArray[np.float32],
        similarities: NDArray[np.floating[Any]],
        correct: NDArray[np.bool_],
    ) -> AdaptiveThresholds:
        """Learn from labelled pairs: the query vector, its similarity to the entry, the label."""
        regions = (
            np.zeros(len(vectors), dtype=np.int64)
            if self._centroids is None
            else np.argmax(np.asarray(vectors, dtype=np.float32) @ self._centroids.T, axis=1)
        )
        with self._lock:
            for reg, s, ok in zip(regions, similarities, correct, strict=True):
                r = self._regions[int(reg)]
                r.sims.append(float(s))
                r.correct.append(bool(ok))
            for r in self._regions:
                del r.sims[: -self.config.window], r.correct[: -self.config.window]
            self._solved = None
        return self

    def feedback(self, entry_id: str, correct: bool) -> bool:
        """Learn from a verdict on an entry served recently; ``False`` if it is not remembered."""
        with self._lock:
            served = self._pending.pop(entry_id, None)
            if served is None:
                return False
            self.observe(served.region, served.similarity, correct)
            if not correct:
                floor = math.nextafter(served.similarity, math.inf)
                self._entry_floor[entry_id] = max(floor, self._entry_floor.get(entry_id, floor))
                self._entry_floor.move_to_end(entry_id)
                while len(self._entry_floor) > self.config.pending:
                    self._entry_floor.popitem(last=False)
            return True

    # -- the hooks the cache calls ------------------------------------------------------------

    def for_query(self, query: str, vector: NDArray[np.float32]) -> Callable[[Candidate], float]:
        region = self.region(vector)
        base = self.threshold(region)
        margin = self.config.verify_margin

        def threshold_for(candidate: Candidate) -> float:
            t = max(base, self._entry_floor.get(candidate.entry.id, base))
            if self._verifier is None or not margin or abs(candidate.similarity - t) >= margin:
                return t
            # Near the threshold, on either side: the verifier decides, and is learned from.
            self.verified += 1
            ok = bool(self._verifier(query, candidate))
            self.observe(region, candidate.similarity, ok)
            return min(t, candidate.similarity) if ok else math.inf

        return threshold_for

    def served(self, entry_id: str, vector: NDArray[np.float32], similarity: float) -> None:
        with self._lock:
            self._pending[entry_id] = _Served(self.region(vector), float(similarity))
            self._pending.move_to_end(entry_id)
            while len(self._pending) > self.config.pending:
                self._pending.popitem(last=False)


def kmeans_centroids(
    vectors: NDArray[np.float32], k: int, *, iterations: int = 25, seed: int = 0
) -> NDArray[np.float32]:
    """``k`` unit centroids of unit ``vectors`` by spherical k-means (cosine), seeded."""
    data = np.asarray(vectors, dtype=np.float32)
    if not 1 <= k <= len(data):
        raise ConfigurationError(f"k must be in 1..{len(data)} (the number of vectors), got {k}")
    rng = np.random.default_rng(seed)
    centroids = data[rng.choice(len(data), size=k, replace=False)].copy()
    for _ in range(iterations):
        assign = np.argmax(data @ centroids.T, axis=1)
        for j in range(k):
            members = data[assign == j]
            if len(members):
                c = members.sum(axis=0)
                centroids[j] = c / max(float(np.linalg.norm(c)), 1e-12)
    return centroids
