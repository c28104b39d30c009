"""In-process vector indexes for one scope: HNSW (hnswlib) and exact numpy brute force.

Both take unit vectors and integer labels and answer with cosine similarities. Which one a
scope gets is decided in ``scoped_index.py``.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

from semcache.errors import ConfigurationError

if TYPE_CHECKING:
    from numpy.typing import NDArray

__all__ = ["ExactIndex", "HnswIndex", "HnswParams", "VectorIndex"]


_PARALLEL_FROM = 10_000  # vectors in one add() from which hnswlib inserts in parallel

# The size-aware search width (HnswParams.ef_search=None): EF_FLOOR up to EF_FROM vectors, then
# EF_FLOOR * (size / EF_FROM) ** EF_GROWTH, at most EF_CAP. Derived with bench/bench_ann_million.py
# on half of its planted queries (real MiniLM vectors to 161k, a fitted extension to 1M): the
# smallest ef with recall@1 >= 0.99 at thresholds 0.90 and 0.95 was 16 at 10k, 16 at 100k and 64
# at 1M (0.9916) on hnswlib. The rule gives twice that at 1M (128), never less than the old
# constant 64, and grows past 1M as that smallest ef did from 100k to 1M (x4 per decade, size^0.6).
# Held-out results: docs/BENCHMARKS.md, "ANN recall on a realistic million".
EF_FLOOR = 64
EF_FROM = 315_000
EF_GROWTH = 0.6
EF_CAP = 1024


def size_aware_ef(size: int) -> int:
    """The search width for a graph of ``size`` vectors when ``ef_search`` is not set."""
    if size <= EF_FROM:
        return EF_FLOOR
    return min(EF_CAP, math.ceil(EF_FLOOR * float((size / EF_FROM) ** EF_GROWTH)))


@dataclass(frozen=True, slots=True, kw_only=True)
class HnswParams:
    """HNSW graph settings, and when a scope gets a graph at all.

    Attributes:
        m: links per node (memory and recall grow with it).
        ef_construction: candidate list size while building (build time vs graph quality).
        ef_search: candidate list size while searching (latency vs recall). ``None`` (the
            default): chosen from the graph's size by :func:`size_aware_ef`, so recall holds
            as a cache grows; an int: that width at every size.
        initial_capacity: slots reserved when a graph is built; it doubles when full.
        exact_up_to: a scope of at most this many entries is searched exactly (brute force)
            and has no graph; past it the scope gets one, and loses it again at half this size.
        max_resident: how many graphs are held in memory at once; the least recently used of
            the others wait on disk until a search or a write needs them. ``None``: all.

    ``exact_up_to`` and ``max_resident`` apply to the embedded backend's scopes; an index
    built directly (the dense retrieval store) ignores them.
    """

    m: int = 16
    ef_construction: int = 200
    ef_search: int | None = None
    initial_capacity: int = 1024
    exact_up_to: int = 2048
    max_resident: int | None = 32

    def __post_init__(self) -> None:
        for name, low in (
            ("m", 2),
            ("ef_construction", 1),
            ("ef_search", 1),
            ("initial_capacity", 1),
            ("exact_up_to", 0),
        ):
            value = getattr(self, name)
            if name == "ef_search" and value is None:
                continue
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ConfigurationError(
                    f"HnswParams.{name} must be an int >= {low}, got {value!r}"
                )
        if self.max_resident is not None and (
            not isinstance(self.max_resident, int) or self.max_resident < 1
        ):
            raise ConfigurationError(
                f"HnswParams.max_resident must be an int >= 1 or None, got {self.max_resident!r}"
            )

    def ef_for(self, size: int) -> int:
        """The search width for a graph of ``size`` vectors: ``ef_search``, or the size-aware
        one when it is ``None``."""
        return size_aware_ef(size) if self.ef_search is None else self.ef_search


class VectorIndex(Protocol):
    def add(self, labels: NDArray[np.int64], vectors: NDArray[np.float32]) -> None: ...
    def remove(self, label: int) -> None: ...
    def knn(self, vector: NDArray[np.float32], k: int) -> list[tuple[int, float]]: ...
    def items(self) -> tuple[NDArray[np.int64], NDArray[np.float32]]: ...
    def labels(self) -> set[int]: ...
    def save(self, path: Path) -> None: ...
    def __len__(self) -> int: ...


class ExactIndex:
    """Brute-force inner product over one numpy matrix: exact, and no cost beyond the vectors.

    Rows ``[:n]`` of the matrix hold the vectors (spare rows only past 16, at most half
    again); a removed row is filled by the last one.
    """

    __slots__ = ("_labels", "_matrix", "_n")

    def __init__(self, dim: int) -> None:
        self._labels: NDArray[np.int64] = np.empty(0, dtype=np.int64)
        self._matrix: NDArray[np.float32] = np.empty((0, dim), dtype=np.float32)
        self._n = 0

    def add(self, labels: NDArray[np.int64], vectors: NDArray[np.float32]) -> None:
        new = len(labels)
        if new == len(np.unique(labels)) and not np.isin(labels, self._labels[: self._n]).any():
            self._grow(self._n + new)
            self._labels[self._n : self._n + new] = labels
            self._matrix[self._n : self._n + new] = vectors
            self._n += new
            return
        for label, vec in zip(labels.tolist(), vectors, strict=True):
            at = self._find(label)
            if at is None:
                self._grow(self._n + 1)
                at = self._n
                self._labels[at] = label
                self._n += 1
            self._matrix[at] = vec

    def _find(self, label: int) -> int | None:
        hits = np.flatnonzero(self._labels[: self._n] == label)
        return int(hits[0]) if hits.size else None

    def _grow(self, needed: int) -> None:
        capacity = self._labels.shape[0]
        if needed <= capacity:
            return
        size = needed if needed <= 16 else max(needed, capacity + capacity // 2)
        labels = np.empty(size, dtype=np.int64)
        matrix = np.empty((size, self._matrix.shape[1]), dtype=np.float32)
        labels[: self._n] = self._labels[: self._n]
        matrix[: self._n] = self._matrix[: self._n]
        self._labels, self._matrix = labels, matrix

    def remove(self, label: int) -> None:
        at = self._find(label)
        if at is None:
            return
        last = self._n - 1
        self._labels[at] = self._labels[last]
        self._matrix[at] = self._matrix[last]
        self._n = last

    def knn(self, vector: NDArray[np.float32], k: int) -> list[tuple[int, float]]:
        if self._n == 0 or k <= 0:
            return []
        sims = self._matrix[: self._n] @ vector
        k = min(k, self._n)
        top = np.argpartition(-sims, k - 1)[:k]
        top = top[np.argsort(-sims[top], kind="stable")]
        return [(int(self._labels[i]), float(sims[i])) for i in top]

    def items(self) -> tuple[NDArray[np.int64], NDArray[np.float32]]:
        """Every label and its vector (copies)."""
        return self._labels[: self._n].copy(), self._matrix[: self._n].copy()

    def labels(self) -> set[int]:
        return set(self._labels[: self._n].tolist())

    def save(self, path: Path) -> None:
        """Nothing to persist: rebuilt from the entry store on open."""

    def __len__(self) -> int:
        return self._n


class HnswIndex:
    """An hnswlib inner-product index that grows as needed.

    A removed label stays in the graph, marked deleted, and still routes searches. With
    ``reuse_deleted`` a new label takes a deleted slot (hnswlib's ``replace_deleted``): memory
    stays bounded with no pause, but rewiring in place cost recall under heavy churn and made
    each write ~10x slower (docs/BENCHMARKS.md). Without it a new label gets a new slot, and the
    owner rebuilds the graph when :attr:`deleted` grows large.
    """

    def __init__(
        self,
        dim: int,
        params: HnswParams,
        path: Path | None = None,
        *,
        reuse_deleted: bool = True,
    ) -> None:
        import hnswlib

        self._dim = dim
        self._params = params
        self.reuse_deleted = reuse_deleted
        self._index = hnswlib.Index(space="ip", dim=dim)
        self._live: set[int] = set()
        if path is not None:
            self._index.load_index(str(path), allow_replace_deleted=reuse_deleted)
            if self._index.dim != dim:
                raise ValueError(f"stored HNSW index has dim {self._index.dim}, expected {dim}")
            self._live = set(int(x) for x in self._index.get_ids_list())
        else:
            self._index.init_index(
                max_elements=params.initial_capacity,
                ef_construction=params.ef_construction,
                M=params.m,
                allow_replace_deleted=reuse_deleted,
            )
        self._index.set_ef(params.ef_for(self._index.element_count))

    def add(self, labels: NDArray[np.int64], vectors: NDArray[np.float32]) -> None:
        needed = self._index.element_count + len(labels)
        capacity = self._index.get_max_elements()
        if needed > capacity:
            self._index.resize_index(max(needed, capacity * 2))
        # Small batches are inserted on one thread: the graph (and so recall) is then the same
        # run after run; bulk loads use every core.
        threads = 1 if len(labels) < _PARALLEL_FROM else -1
        self._index.add_items(
            vectors, labels, num_threads=threads, replace_deleted=self.reuse_deleted
        )
        self._live.update(int(x) for x in labels.tolist())

    def remove(self, label: int) -> None:
        if label in self._live:
            self._live.discard(label)
            try:
                self._index.mark_deleted(label)
            except RuntimeError:
                # Already deleted in a loaded snapshot: hnswlib lists deleted labels too.
                return

    def knn(self, vector: NDArray[np.float32], k: int) -> list[tuple[int, float]]:
        k = min(k, len(self._live))
        if k <= 0:
            return []
        # The width follows the graph's slots (deleted ones still route searches).
        ef = self._params.ef_for(int(self._index.element_count))
        self._index.set_ef(max(ef, k))
        try:
            labels, distances = self._index.knn_query(vector, k=k)
        except RuntimeError:
            # hnswlib cannot fill k results when most slots are deleted; widen the search once.
            self._index.set_ef(max(ef, 4 * k, 256))
            labels, distances = self._index.knn_query(vector, k=k)
        # space="ip" reports 1 - <a, b>; for unit vectors that is 1 - cosine similarity.
        return [
            (int(label), 1.0 - float(dist))
            for label, dist in zip(labels[0].tolist(), distances[0].tolist(), strict=True)
        ]

    def items(self) -> tuple[NDArray[np.int64], NDArray[np.float32]]:
        """Every live label and its vector."""
        labels = np.array(sorted(self._live), dtype=np.int64)
        if labels.size == 0:
            return labels, np.empty((0, self._dim), dtype=np.float32)
        vectors = np.asarray(self._index.get_items(labels.tolist()), dtype=np.float32)
        return labels, vectors

    def labels(self) -> set[int]:
        return set(self._live)

    @property
    def deleted(self) -> int:
        """Slots of removed labels still in the graph.

        A loaded snapshot lists its deleted labels as live until they are removed again, as
        reconciling it with the entry store does.
        """
        return int(self._index.element_count) - len(self._live)

    def save(self, path: Path) -> None:
        """Write atomically: a temporary file, fsync, then rename over the old snapshot."""
        tmp = path.with_suffix(path.suffix + ".tmp")
        self._index.save_index(str(tmp))
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)

    def __len__(self) -> int:
        return len(self._live)
