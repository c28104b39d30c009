"""The vector indexes of every scope, with a fixed cost per scope that stays small.

A scope (model, params, prompt, tools, tenant, earlier turns) is often a single conversation
with a handful of entries, so a store can hold 100,000 scopes. An hnswlib graph costs about
2.6 MB however small (its 65,536 label-operation mutexes), so one per scope does not scale.
Each structure, its fixed cost and its bound (384-d float32 vectors; ``bench/bench_scopes.py``
measures 100,000 scopes of 1-5 entries at ~0.6 GB RSS, against ~2.6 MB a scope before):

============== ============================================ =====================================
structure      cost                                         bound
============== ============================================ =====================================
a scope        ~0.6 KB (its record, key, dict slots, an     ``max_scopes`` of the backend
               ``ExactIndex`` or graph handle)
an exact scope 1.5 KB per vector in one matrix, spare rows  ``HnswParams.exact_up_to`` vectors
               only past 16 (at most half again)            (2048: 3 MB); ``max_bytes`` overall
an HNSW graph  ~2.6 MB plus ~1.7 KB per slot, in memory     only scopes past ``exact_up_to``;
               only while resident; on disk otherwise       ``HnswParams.max_resident`` in memory
an empty scope nothing: dropped with its snapshot           n/a
============== ============================================ =====================================

Brute force is exact and, up to ~2,000 vectors, about as fast as a graph search (0.08 ms for
2,048 on one core), so small scopes lose no recall and little time. A scope that grows past
``exact_up_to`` is promoted to a graph; one that shrinks to half of it is demoted (the gap stops
a scope at the boundary from flapping). Graphs that are not resident are loaded on first use and
reconciled with SQLite, the source of truth.

A graph keeps a removed entry (a replaced one too) as a deleted slot that still routes searches;
reusing such slots instead degraded recall under churn. Once a graph's deleted slots exceed
``REBUILD_AFTER`` of its live vectors it is rebuilt from those (:func:`rebuild_due`), which
bounds the slots (memory) and the dead nodes a search walks. A rebuild blocks the store while
it runs (0.3 s at 5,000 vectors), so only graphs of up to ``REBUILD_UP_TO`` live vectors work
this way; a larger graph is rebuilt once, as it grows past that size, into one that reuses
deleted slots (no pauses; some recall lost under heavy churn, as before).
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol

import numpy as np

from semcache.backends import snapshots
from semcache.backends.vector_index import ExactIndex, HnswIndex, HnswParams, VectorIndex

if TYPE_CHECKING:
    from numpy.typing import NDArray

__all__ = [
    "REBUILD_AFTER",
    "REBUILD_UP_TO",
    "IndexCounts",
    "Layout",
    "ScopedIndexes",
    "VectorSource",
    "layout",
    "over_cap",
    "rebuild_due",
    "reuses_slots",
]

log = logging.getLogger("semcache")

Layout = Literal["exact", "hnsw"]

# Measured on 5,000 384-d vectors (docs/BENCHMARKS.md, "Many small scopes"): deleted slots cost
# no recall, but a search walks them (k=5 took 1.35x as long with 25% deleted, 2x with 50%); a
# rebuild (0.3 s) spread over the 1,250 removals that trigger it adds ~0.25 ms to each, where a
# write that reused a deleted slot cost ~2 ms.
REBUILD_AFTER = 0.25

#: Graphs of at most this many live vectors are rebuilt when due (a pause of a second or so);
#: larger ones reuse deleted slots instead.
REBUILD_UP_TO = 20_000


def over_cap(held: int, incoming: int, cap: int | None) -> int:
    """How much of ``held`` must go for ``held + incoming`` to fit ``cap`` (0: it fits, or none).

    ``incoming`` counts at most ``cap``: what is larger cannot fit whatever is evicted.
    """
    if cap is None:
        return 0
    return max(0, min(held, held + min(incoming, cap) - cap))


def layout(current: Layout, size: int, exact_up_to: int | None) -> Layout:
    """The structure a scope of ``size`` entries should have (``exact_up_to`` None: no graphs)."""
    if exact_up_to is None:
        return "exact"
    if current == "exact":
        return "hnsw" if size > exact_up_to else "exact"
    return "exact" if size <= exact_up_to // 2 else "hnsw"


def rebuild_due(deleted: int, size: int, reuses: bool = False) -> bool:
    """Whether a graph with ``size`` live vectors and ``deleted`` deleted slots is rebuilt: past
    ``REBUILD_AFTER``, or once when it outgrows ``REBUILD_UP_TO`` (into a slot-reusing graph)."""
    if reuses:
        return False
    return deleted > REBUILD_AFTER * size or size > REBUILD_UP_TO


def reuses_slots(size: int) -> bool:
    """Whether a graph built for ``size`` live vectors reuses deleted slots (see module doc)."""
    return size > REBUILD_UP_TO


class VectorSource(Protocol):
    """The stored vectors, read back when a graph is rebuilt or reconciled."""

    def scope_ids(self, scope_key: str) -> set[int]:
        """The ids stored under ``scope_key``."""

    def scope_vectors(
        self, scope_key: str, ids: list[int] | None = None
    ) -> Iterator[tuple[NDArray[np.int64], NDArray[np.float32]]]:
        """The vectors of ``ids`` (all of the scope's if ``None``), in chunks."""


@dataclass(frozen=True, slots=True)
class IndexCounts:
    """What the vector indexes hold now.

    Attributes:
        scopes: scopes with at least one entry.
        exact_scopes: scopes searched by brute force, with no graph.
        graph_scopes: scopes with an HNSW graph, in memory or on disk.
        resident_graphs: graphs held in memory.
        exact_vectors: vectors held by the exact scopes.
    """

    scopes: int
    exact_scopes: int
    graph_scopes: int
    resident_graphs: int
    exact_vectors: int


class _Scope:
    __slots__ = ("index", "kind", "size")

    def __init__(self, kind: Layout, index: VectorIndex | None, size: int) -> None:
        self.kind: Layout = kind
        self.index = index  # None: a graph not in memory
        self.size = size


class ScopedIndexes:
    """One index per scope: exact when small, HNSW past ``hnsw.exact_up_to``.

    ``hnsw`` None keeps every scope exact (no graphs, nothing on disk). Graphs are snapshotted
    under ``directory`` (None: kept in memory, never unloaded). Not thread-safe: the backend
    calls it under its lock.
    """

    def __init__(
        self,
        dim: int,
        hnsw: HnswParams | None,
        directory: Path | None,
        source: VectorSource,
    ) -> None:
        self._dim = dim
        self._hnsw = hnsw
        self._dir = directory
        self._source = source
        self._scopes: OrderedDict[str, _Scope] = OrderedDict()  # least recently used first
        self._resident: OrderedDict[str, None] = OrderedDict()  # graphs in memory, LRU first
        self._dirty: set[str] = set()  # graphs changed since their snapshot
        self._unlink: set[str] = set()  # snapshots of scopes now exact or gone
        self._rebuilds = 0

    # -- opening ------------------------------------------------------------------------------

    def open(self, sizes: Iterator[tuple[str, int]]) -> None:
        """Register every stored scope with its size, least recently used first.

        Exact scopes are filled from the source now; graphs are loaded on first use. Snapshot
        files of scopes that have no graph are deleted.
        """
        for scope, size in sizes:
            kind = layout("exact", size, self._exact_up_to)
            state = _Scope(kind, None, size)
            if kind == "exact":
                state.index = self._exact_from(self._source.scope_vectors(scope))
            self._scopes[scope] = state
        if self._dir is not None and self._dir.is_dir():
            for path in self._dir.glob("*.bin"):
                state_ = self._scopes.get(path.stem)
                if state_ is None or state_.kind == "exact":
                    snapshots.remove(path)

    # -- reads and writes ---------------------------------------------------------------------

    def knn(self, scope: str, vector: NDArray[np.float32], k: int) -> list[tuple[int, float]]:
        """The ``k`` nearest labels of the scope with their cosine similarity."""
        state = self._scopes.get(scope)
        if state is None or k <= 0:
            return []
        return self._index(scope, state).knn(vector, k)

    def add(self, scope: str, labels: NDArray[np.int64], vectors: NDArray[np.float32]) -> None:
        """Add vectors to a scope (created if new); it is promoted first if it outgrows exact."""
        state = self._scopes.get(scope)
        if state is None:
            state = self._scopes[scope] = _Scope("exact", ExactIndex(self._dim), 0)
        self._scopes.move_to_end(scope)
        loaded = state.index is None
        index = self._index(scope, state)
        fresh = _absent(labels, index) if loaded else labels
        if layout(state.kind, state.size + len(fresh), self._exact_up_to) != state.kind:
            index = self._rebuild(scope, state, "hnsw", growing_to=state.size + len(fresh))
        if len(fresh) < len(labels):
            vectors = vectors[np.isin(labels, fresh)]
        if len(fresh):
            index.add(fresh, vectors)
        state.size = len(index)
        self._changed(scope, state)

    def remove(self, scope: str, labels: list[int]) -> None:
        """Remove labels from a scope; it is demoted when small and dropped when empty."""
        state = self._scopes.get(scope)
        if state is None:
            return
        if state.index is None:  # a graph on disk: reconciled with SQLite when next loaded
            state.size = max(0, state.size - len(labels))
        else:
            for label in labels:
                state.index.remove(label)
            state.size = len(state.index)
        if state.size == 0:
            self._drop(scope, state)
            return
        if layout(state.kind, state.size, self._exact_up_to) != state.kind:
            self._index(scope, state)  # a graph on disk is loaded (and reconciled) first
            if layout(state.kind, state.size, self._exact_up_to) != state.kind:
                self._rebuild(scope, state, "exact")
        self._changed(scope, state)

    def compact(self, scopes: set[str]) -> None:
        """Rebuild the graphs of ``scopes`` that hold deleted slots, so that neither memory nor
        their next snapshot keeps a removed vector or label (a graph on disk is loaded first)."""
        for scope in sorted(scopes):
            state = self._scopes.get(scope)
            if state is None or state.kind != "hnsw":
                continue
            index = self._index(scope, state)
            if isinstance(index, HnswIndex) and index.deleted:
                self._rebuild(scope, state, "hnsw")
                self._dirty.add(scope)

    def use(self, scope: str) -> None:
        """Mark a scope as just used (an entry of it was served)."""
        if scope in self._scopes:
            self._scopes.move_to_end(scope)

    def least_recent(self, n: int, keep: set[str]) -> list[str]:
        """The ``n`` least recently used scope keys, skipping those in ``keep``."""
        out: list[str] = []
        for scope in self._scopes:
            if len(out) >= n:
                break
            if scope not in keep:
                out.append(scope)
        return out

    def __contains__(self, scope: object) -> bool:
        return scope in self._scopes

    def __len__(self) -> int:
        return len(self._scopes)

    def counts(self) -> IndexCounts:
        exact = [s for s in self._scopes.values() if s.kind == "exact"]
        return IndexCounts(
            scopes=len(self._scopes),
            exact_scopes=len(exact),
            graph_scopes=len(self._scopes) - len(exact),
            resident_graphs=len(self._resident),
            exact_vectors=sum(s.size for s in exact),
        )

    @property
    def rebuilds(self) -> int:
        """Graphs rebuilt to drop their deleted slots (:func:`rebuild_due`) since creation."""
        return self._rebuilds

    # -- persistence --------------------------------------------------------------------------

    @property
    def dirty(self) -> bool:
        """Whether a snapshot is out of date."""
        return bool(self._dirty or self._unlink)

    def save(self) -> None:
        """Snapshot every changed resident graph; delete the snapshots of exact or gone scopes."""
        if self._dir is None:
            self._dirty.clear()
            self._unlink.clear()
            return
        for scope in sorted(self._unlink):
            snapshots.remove(self._path(scope))
        self._unlink.clear()
        for scope in sorted(self._dirty):
            state = self._scopes.get(scope)
            if state is not None and state.index is not None and state.kind == "hnsw":
                self._save(scope, state.index)
        self._dirty.clear()

    def _path(self, scope: str) -> Path:
        assert self._dir is not None
        return self._dir / f"{scope}.bin"

    def _save(self, scope: str, index: VectorIndex) -> None:
        assert self._dir is not None
        self._dir.mkdir(parents=True, exist_ok=True)
        snapshots.write(self._path(scope), index.save)

    # -- layout and residency -----------------------------------------------------------------

    @property
    def _exact_up_to(self) -> int | None:
        return None if self._hnsw is None else self._hnsw.exact_up_to

    def _index(self, scope: str, state: _Scope) -> VectorIndex:
        """The scope's index, loading its graph (and unloading the least recent) if needed."""
        if state.kind == "exact":
            assert state.index is not None
            return state.index
        if state.index is None:
            state.index = self._load(scope)
            state.size = len(state.index)
        self._resident[scope] = None
        self._resident.move_to_end(scope)
        self._unload_beyond_cap()
        return state.index

    def _load(self, scope: str) -> VectorIndex:
        """A scope's graph from its snapshot, reconciled with the source; rebuilt if unreadable."""
        assert self._hnsw is not None
        index: VectorIndex | None = None
        stored = self._source.scope_ids(scope)
        if self._dir is not None and snapshots.verified(self._path(scope)):
            try:
                index = HnswIndex(
                    self._dim,
                    self._hnsw,
                    self._path(scope),
                    reuse_deleted=reuses_slots(len(stored)),
                )
            except (RuntimeError, ValueError, OSError) as e:
                log.warning(
                    "semcache: cannot load %s (%s); rebuilding it from SQLite", self._path(scope), e
                )
                index = None
        if index is None:
            index = HnswIndex(self._dim, self._hnsw, reuse_deleted=reuses_slots(len(stored)))
            self._fill(index, self._source.scope_vectors(scope))
            self._dirty.add(scope)
            return index
        have = index.labels()
        missing = sorted(stored - have)
        if missing:
            self._fill(index, self._source.scope_vectors(scope, missing))
        for stale in have - stored:
            index.remove(stale)
        if missing or have - stored:
            self._dirty.add(scope)
        return index

    def _unload_beyond_cap(self) -> None:
        cap = None if self._hnsw is None else self._hnsw.max_resident
        if cap is None or self._dir is None:
            return
        while len(self._resident) > cap:
            scope, _ = self._resident.popitem(last=False)
            state = self._scopes[scope]
            assert state.index is not None
            if scope in self._dirty or not self._path(scope).exists():
                self._save(scope, state.index)
                self._dirty.discard(scope)
            state.index = None

    def _rebuild(
        self, scope: str, state: _Scope, kind: Layout, *, growing_to: int = 0
    ) -> VectorIndex:
        """Rebuild the scope's index as ``kind`` from its current vectors (about to be
        ``growing_to``, which decides whether a graph reuses slots: no second rebuild)."""
        assert state.index is not None
        assert self._hnsw is not None
        labels, vectors = state.index.items()
        index: VectorIndex
        if kind == "hnsw":
            size = max(len(labels), growing_to)
            index = HnswIndex(self._dim, self._hnsw, reuse_deleted=reuses_slots(size))
            self._unlink.discard(scope)
        else:
            index = ExactIndex(self._dim)
            self._resident.pop(scope, None)
            self._dirty.discard(scope)
            self._unlink.add(scope)
        if len(labels):
            index.add(labels, vectors)
        state.kind, state.index = kind, index
        if kind == "hnsw":
            self._resident[scope] = None
            self._resident.move_to_end(scope)
            self._unload_beyond_cap()
        return index

    def _changed(self, scope: str, state: _Scope) -> None:
        """Mark a graph's snapshot out of date; rebuild it if deleted slots are too many."""
        if state.kind != "hnsw":
            return
        self._dirty.add(scope)
        index = state.index
        if isinstance(index, HnswIndex) and rebuild_due(
            index.deleted, len(index), index.reuse_deleted
        ):
            self._rebuild(scope, state, "hnsw")
            self._rebuilds += 1

    def _drop(self, scope: str, state: _Scope) -> None:
        del self._scopes[scope]
        self._resident.pop(scope, None)
        self._dirty.discard(scope)
        if state.kind == "hnsw":
            self._unlink.add(scope)

    def _exact_from(
        self, chunks: Iterator[tuple[NDArray[np.int64], NDArray[np.float32]]]
    ) -> ExactIndex:
        index = ExactIndex(self._dim)
        self._fill(index, chunks)
        return index

    @staticmethod
    def _fill(
        index: VectorIndex, chunks: Iterator[tuple[NDArray[np.int64], NDArray[np.float32]]]
    ) -> None:
        for labels, vectors in chunks:
            index.add(labels, vectors)


def _absent(labels: NDArray[np.int64], index: VectorIndex) -> NDArray[np.int64]:
    """The labels not already in ``index`` (a graph just loaded may hold new rows already)."""
    have = index.labels()
    keep = [label for label in labels.tolist() if label not in have]
    return labels if len(keep) == len(labels) else np.array(keep, dtype=np.int64)
