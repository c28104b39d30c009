"""In-process vector indexes for one scope: HNSW (hnswlib) and an exact numpy oracle.

Both take unit vectors and integer labels and answer with cosine similarities.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

from semcache.errors import ConfigurationError

if TYPE_CHECKING:
    from numpy.typing import NDArray

__all__ = ["ExactIndex", "HnswIndex", "HnswParams", "VectorIndex"]


@dataclass(frozen=True, slots=True, kw_only=True)
class HnswParams:
    """HNSW graph settings.

    Attributes:
        m: links per node (memory and recall grow with it).
        ef_construction: candidate list size while building (build time vs graph quality).
        ef_search: candidate list size while searching (latency vs recall).
        initial_capacity: slots reserved per scope; the index doubles when full.
    """

    m: int = 16
    ef_construction: int = 200
    ef_search: int = 64
    initial_capacity: int = 1024

    def __post_init__(self) -> None:
        for name, low in (("m", 2), ("ef_construction", 1), ("ef_search", 1)):
            value = getattr(self, name)
            if not isinstance(value, int) or value < low:
                raise ConfigurationError(
                    f"HnswParams.{name} must be an int >= {low}, got {value!r}"
                )
        if self.initial_capacity < 1:
            raise ConfigurationError(
                f"HnswParams.initial_capacity must be >= 1, got {self.initial_capacity}"
            )


class VectorIndex(Protocol):
    def add(self, labels: NDArray[np.int64], vectors: NDArray[np.float32]) -> None: ...
    def remove(self, label: int) -> None: ...
    def knn(self, vector: NDArray[np.float32], k: int) -> list[tuple[int, float]]: ...
    def labels(self) -> set[int]: ...
    def save(self, path: Path) -> None: ...
    def __len__(self) -> int: ...


class ExactIndex:
    """Brute-force inner product over a numpy matrix. The recall oracle for tests."""

    def __init__(self, dim: int) -> None:
        self._dim = dim
        self._vectors: dict[int, NDArray[np.float32]] = {}
        self._matrix: NDArray[np.float32] | None = None
        self._order: NDArray[np.int64] | None = None

    def add(self, labels: NDArray[np.int64], vectors: NDArray[np.float32]) -> None:
        for label, vec in zip(labels.tolist(), vectors, strict=True):
            self._vectors[int(label)] = np.array(vec, dtype=np.float32)
        self._matrix = None

    def remove(self, label: int) -> None:
        if self._vectors.pop(label, None) is not None:
            self._matrix = None

    def knn(self, vector: NDArray[np.float32], k: int) -> list[tuple[int, float]]:
        if not self._vectors or k <= 0:
            return []
        if self._matrix is None or self._order is None:
            self._order = np.fromiter(self._vectors.keys(), dtype=np.int64)
            self._matrix = np.stack([self._vectors[int(i)] for i in self._order])
        sims = self._matrix @ vector
        k = min(k, sims.shape[0])
        top = np.argpartition(-sims, k - 1)[:k]
        top = top[np.argsort(-sims[top], kind="stable")]
        return [(int(self._order[i]), float(sims[i])) for i in top]

    def labels(self) -> set[int]:
        return set(self._vectors)

    def save(self, path: Path) -> None:
        """Nothing to persist: rebuilt from the entry store on open."""

    def __len__(self) -> int:
        return len(self._vectors)


class HnswIndex:
    """An hnswlib inner-product index that grows as needed and reuses deleted slots."""

    def __init__(self, dim: int, params: HnswParams, path: Path | None = None) -> None:
        import hnswlib

        self._dim = dim
        self._params = params
        self._index = hnswlib.Index(space="ip", dim=dim)
        self._live: set[int] = set()
        if path is not None:
            self._index.load_index(str(path), allow_replace_deleted=True)
            if self._index.dim != dim:
                raise ValueError(f"stored HNSW index has dim {self._index.dim}, expected {dim}")
            self._live = set(int(x) for x in self._index.get_ids_list())
        else:
            self._index.init_index(
                max_elements=params.initial_capacity,
                ef_construction=params.ef_construction,
                M=params.m,
                allow_replace_deleted=True,
            )
        self._index.set_ef(params.ef_search)

    def add(self, labels: NDArray[np.int64], vectors: NDArray[np.float32]) -> None:
        needed = self._index.element_count + len(labels)
        capacity = self._index.get_max_elements()
        if needed > capacity:
            self._index.resize_index(max(needed, capacity * 2))
        self._index.add_items(vectors, labels, replace_deleted=True)
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
        self._index.set_ef(max(self._params.ef_search, k))
        try:
            labels, distances = self._index.knn_query(vector, k=k)
        except RuntimeError:
            # hnswlib cannot fill k results when most slots are deleted; widen the search once.
            self._index.set_ef(max(self._params.ef_search, 4 * k, 256))
            labels, distances = self._index.knn_query(vector, k=k)
        # space="ip" reports 1 - <a, b>; for unit vectors that is 1 - cosine similarity.
        return [
            (int(label), 1.0 - float(dist))
            for label, dist in zip(labels[0].tolist(), distances[0].tolist(), strict=True)
        ]

    def labels(self) -> set[int]:
        return set(self._live)

    def save(self, path: Path) -> None:
        """Write atomically: a temporary file, fsync, then rename over the old snapshot."""
        tmp = path.with_suffix(path.suffix + ".tmp")
        self._index.save_index(str(tmp))
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)

    def __len__(self) -> int:
        return len(self._live)
