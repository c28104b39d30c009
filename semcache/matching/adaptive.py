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

Observations are kept as counts per ``(region, similarity bin)`` of width 0.001
(:mod:`semcache.matching.binned`): an update is an increment, and the thresholds are re-solved from
cumulative counts in O(regions x bins) when a decision needs them after a change. A solved
threshold is a bin edge, within one bin width of the per-observation solution.

By default everything lives in process memory. With ``state=`` (a
:class:`~semcache.matching.learned_state.SqliteLearnedState` or
:class:`~semcache.matching.learned_redis.RedisLearnedState`) the counts and the per-entry floors
are shared by every replica on that store and survive restarts (:mod:`semcache.matching.ledger`
says how and how fresh); a storage failure never fails a lookup. Which entry was served to whom
(for :meth:`AdaptiveThresholds.feedback`) stays in the serving process.

Plug it into a cache with ``SemanticCache(thresholds=AdaptiveThresholds(...))``; the policy's
``min_similarity`` stays the floor below which nothing is served, and ``cache.feedback(...)``
feeds it.
"""

from __future__ import annotations

import asyncio
import math
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from semcache.errors import ConfigurationError, InvalidInputError
from semcache.matching.binned import BIN_WIDTH, bin_of, bins_of, solve
from semcache.matching.bounds import AllowanceTable
from semcache.matching.explore import Exploration
from semcache.matching.learned_state import LearnedState, StateSpec
from semcache.matching.ledger import Ledger
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
        window: observations kept per region (drift): they are counted in generations of
            ``window // 2`` and the two latest are kept, so between ``window / 2`` and
            ``window`` observations count; an older generation is forgotten whole.
        verify_margin: candidates less than this far from their threshold (either side) are
            checked by the verifier, if one is given: it decides, and its verdict is learned
            from (this is how thresholds can come down). ``0`` disables verification.
        pending: how many recently served entries are remembered for :meth:`feedback` (and
            how many entries served wrongly keep their per-entry floor).
        refresh_every: with a shared ``state``, seconds after which a decision schedules a
            re-read of the store (in the background): how stale another replica's verdicts
            may be here, plus their writer's flush and one read.
    """

    delta: float = 0.01
    confidence: float = 0.95
    initial_threshold: float = 0.95
    window: int = 50_000
    verify_margin: float = 0.0
    pending: int = 10_000
    refresh_every: float = 1.0

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
        if not self.refresh_every > 0.0:
            raise ConfigurationError(f"refresh_every must be > 0 seconds, got {self.refresh_every}")

    def shared(self) -> dict[str, float | int]:
        """The settings replicas sharing a learned state must agree on."""
        return {
            "delta": self.delta,
            "confidence": self.confidence,
            "initial_threshold": self.initial_threshold,
            "window": self.window,
            "bin_width": BIN_WIDTH,
        }


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
        state: where observations and per-entry floors are shared and kept
            (:class:`~semcache.matching.learned_state.SqliteLearnedState`,
            :class:`~semcache.matching.learned_redis.RedisLearnedState`); ``None``: in memory.
            A store written with other settings or centroids raises :class:`ConfigurationError`.
            Call :meth:`close` (or :meth:`refresh`) to write what is pending before exiting.
        explore: online learning from the LLM's own answers (:mod:`semcache.matching.explore`):
            the ``@cached`` decorator sends a small share of hits in the uncertain band upstream
            anyway and learns from comparing the answers. On by default (``Exploration()``:
            5% of hits within 0.03 of their threshold, seeded ``random.Random(0)``);
            ``Exploration(band=0)`` turns it off.
    """

    def __init__(
        self,
        config: AdaptiveConfig | None = None,
        *,
        centroids: NDArray[np.float32] | None = None,
        verifier: Judge | None = None,
        state: LearnedState | None = None,
        explore: Exploration | None = None,
    ) -> None:
        self.config = config or AdaptiveConfig()
        self.exploration = explore or Exploration()
        if centroids is not None:
            centroids = np.ascontiguousarray(centroids, dtype=np.float32)
            if centroids.ndim != 2 or len(centroids) < 1:
                raise ConfigurationError(
                    f"centroids must be a (k, dim) array, got shape {centroids.shape}"
                )
        self._centroids = centroids
        self._verifier = verifier
        k = 1 if centroids is None else len(centroids)
        spec = StateSpec(
            settings={
                **self.config.shared(),
                "regions": k,
                "dim": 0 if centroids is None else int(centroids.shape[1]),
            },
            centroids=b"" if centroids is None else centroids.astype("<f4").tobytes(),
            half=max(1, self.config.window // 2),
            keep_floors=self.config.pending,
        )
        self._ledger = Ledger(spec, state=state, refresh_every=self.config.refresh_every)
        self._regions = k
        self._solved: tuple[int, tuple[float | None, list[float]]] | None = None
        self._table = AllowanceTable(self.config.delta, self.config.confidence)
        self._pending: OrderedDict[str, _Served] = OrderedDict()
        self._lock = threading.RLock()
        self.verified = 0

    # -- regions and thresholds ---------------------------------------------------------------

    @property
    def regions(self) -> int:
        return self._regions

    def region(self, vector: NDArray[np.float32]) -> int:
        """The region of ``vector``: its nearest centroid."""
        if self._centroids is None:
            return 0
        if vector.shape != (self._centroids.shape[1],):
            raise InvalidInputError(
                f"vector has shape {vector.shape}; centroids are {self._centroids.shape[1]}-d"
            )
        return int(np.argmax(self._centroids @ vector))

    def _current(self) -> tuple[float | None, list[float]]:
        """(pooled, per-region) thresholds, re-solved from the counts when they changed."""
        solved = self._solved
        if solved is not None and solved[0] == self._ledger.version:
            return solved[1]
        with self._lock:
            total, false, version = self._ledger.counts()
            result = solve(total, false, self.config.initial_threshold, self._table)
            self._solved = (version, result)
            return result

    def global_threshold(self) -> float | None:
        """The pooled threshold (a calibrated static threshold); ``None`` if none is certified."""
        return self._current()[0]

    def threshold(self, region: int) -> float:
        """The threshold a candidate in ``region`` must reach."""
        return self._current()[1][region]

    def thresholds(self) -> list[float]:
        """The current threshold of every region."""
        return list(self._current()[1])

    @property
    def observations(self) -> int:
        """Observations the thresholds are solved from (every region, within the window)."""
        return self._ledger.observations

    @property
    def state_errors(self) -> int:
        """Failed reads or writes of the shared state (each logged; none reached a caller)."""
        return self._ledger.errors

    # -- learning -----------------------------------------------------------------------------

    def observe(self, region: int, similarity: float, correct: bool) -> None:
        """Record that serving at ``similarity`` in ``region`` was right or wrong."""
        if not 0 <= region < self._regions:
            raise InvalidInputError(f"region must be in 0..{self._regions - 1}, got {region}")
        self._ledger.observe(
            region,
            np.array([bin_of(float(similarity))], dtype=np.int64),
            np.array([not correct]),
        )

    def fit(
        self,
        vectors: NDArray[np.float32],
        similarities: NDArray[np.floating[Any]],
        correct: NDArray[np.bool_],
    ) -> AdaptiveThresholds:
        """Learn from labelled pairs: the query vector, its similarity to the entry, the label."""
        sims = np.asarray(similarities, dtype=np.float64)
        ok = np.asarray(correct, dtype=bool)
        if not len(vectors) == len(sims) == len(ok):
            raise InvalidInputError(
                f"fit needs as many vectors, similarities and labels, got "
                f"{len(vectors)}, {len(sims)} and {len(ok)}"
            )
        regions = (
            np.zeros(len(sims), dtype=np.int64)
            if self._centroids is None
            else np.argmax(np.asarray(vectors, dtype=np.float32) @ self._centroids.T, axis=1)
        )
        bins = bins_of(sims)
        for r in range(self._regions):
            mine = regions == r
            if mine.any():
                self._ledger.observe(r, bins[mine], ~ok[mine])
        return self

    def feedback(self, entry_id: str, correct: bool) -> bool:
        """Learn from a verdict on an entry served recently; ``False`` if it is not remembered."""
        with self._lock:
            served = self._pending.pop(entry_id, None)
        if served is None:
            return False
        self.observe(served.region, served.similarity, correct)
        if not correct:
            self._ledger.raise_floor(entry_id, math.nextafter(served.similarity, math.inf))
        return True

    # -- sharing --------------------------------------------------------------------------------

    def refresh(self) -> None:
        """Write pending verdicts to the shared state and read everyone's (blocking; no-op in
        memory). Failures are counted in :attr:`state_errors`, never raised."""
        self._ledger.sync()

    async def arefresh(self) -> None:
        """:meth:`refresh`, awaited (the store's I/O runs on the learned-state worker thread)."""
        await self._ledger.async_sync()

    def close(self) -> None:
        """Write what is pending and release the state (its worker thread and connection)."""
        self._ledger.close()

    async def aclose(self) -> None:
        """:meth:`close`, without blocking the event loop."""
        await asyncio.to_thread(self._ledger.close)

    # -- the hooks the cache calls ------------------------------------------------------------

    def for_query(self, query: str, vector: NDArray[np.float32]) -> Callable[[Candidate], float]:
        self._ledger.poll()
        region = self.region(vector)
        base = self.threshold(region)
        margin = self.config.verify_margin
        floor_of = self._ledger.floor

        def threshold_for(candidate: Candidate) -> float:
            floor = floor_of(candidate.entry.id)
            t = base if floor is None else max(base, floor)
            if self._verifier is None or not margin or abs(candidate.similarity - t) >= margin:
                return t
            # Near the threshold, on either side: the verifier decides, and is learned from.
            self.verified += 1
            ok = bool(self._verifier(query, candidate))
            self.observe(region, candidate.similarity, ok)
            return min(t, candidate.similarity) if ok else math.inf

        return threshold_for

    def served(self, entry_id: str, vector: NDArray[np.float32], similarity: float) -> None:
        region = self.region(vector)
        with self._lock:
            self._pending[entry_id] = _Served(region, float(similarity))
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
