"""The dense side of the embedded store: vector files, quantizers and the search pipelines.

Vectors live in slots, append-only row numbers shared by every file (float32, int8, binary); a
slot is live once its chunk is committed, and dead after a delete or a failed write. Quantizers
are calibrated per dimension on the live vectors and recalibrated (every code rewritten, the
compact index rebuilt) when the live count reaches ``recalibrate_growth`` times the count they
were fitted on. They are saved as JSON beside the vectors.
"""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from semcache.backends.vector_index import HnswIndex, HnswParams
from semcache.errors import ConfigurationError
from semcache.retrieval._matrix import Matrix
from semcache.retrieval.base import (
    BinaryRescored,
    DenseMode,
    Float32Search,
    Int8Rescored,
    MemoryUse,
    candidates,
)
from semcache.retrieval.quantization import (
    BinaryQuantizer,
    Int8Quantizer,
    Projection,
    hamming_distances,
)

if TYPE_CHECKING:
    from numpy.typing import NDArray

log = logging.getLogger("semcache")

__all__ = ["DenseConfig", "DenseIndexes"]

_CALIBRATION_SAMPLE = 200_000
_BLOCK = 65_536


@dataclass(frozen=True, slots=True, kw_only=True)
class DenseConfig:
    """Which dense indexes are built, and how.

    Attributes:
        hnsw: graph settings for the HNSW indexes.
        float32_index: an HNSW over full float32 vectors (4 bytes per dimension in RAM).
        compact_fraction: the compact first stage, an HNSW over vectors projected onto the top
            ``round(dim * compact_fraction)`` principal directions; ``None`` for none. Its
            candidates are rescored with int8 codes (:class:`Int8Rescored`).
        binary_index: one bit per dimension in RAM, for :class:`BinaryRescored`.
        recalibrate_growth: recalibrate when the live count reaches this multiple of the
            count the quantizers were fitted on.
    """

    hnsw: HnswParams = field(default_factory=lambda: HnswParams(ef_search=128))
    float32_index: bool = False
    compact_fraction: float | None = 0.25
    binary_index: bool = False
    recalibrate_growth: float = 2.0

    def __post_init__(self) -> None:
        if self.compact_fraction is not None and not 0.0 < self.compact_fraction <= 1.0:
            raise ConfigurationError(
                f"compact_fraction must be in (0, 1] or None, got {self.compact_fraction!r}"
            )
        if not math.isfinite(self.recalibrate_growth) or self.recalibrate_growth <= 1.0:
            raise ConfigurationError(
                f"recalibrate_growth must be a finite number > 1, got {self.recalibrate_growth!r}"
            )
        if not (self.float32_index or self.compact_fraction is not None or self.binary_index):
            raise ConfigurationError("enable at least one dense index (float32, compact, binary)")


def top_indices(scores: NDArray[Any], n: int) -> NDArray[np.intp]:
    """Indices of the ``n`` largest scores, best first (ties by position)."""
    n = min(n, scores.shape[0])
    if n <= 0:
        return np.empty(0, dtype=np.intp)
    part = np.argpartition(-scores, n - 1)[:n]
    return part[np.lexsort((part, -scores[part]))]


class DenseIndexes:
    """Vectors of one store, in slots. Not thread-safe on its own: the store holds a lock.

    Args:
        directory: where the files live; ``None`` keeps everything in RAM.
        dim: vector size.
        config: which indexes to build.
        alive: which existing slots hold a live chunk (from the store's records).
    """

    def __init__(
        self, directory: Path | None, dim: int, config: DenseConfig, alive: NDArray[np.bool_]
    ) -> None:
        self.dim = dim
        self.config = config
        self._dir = directory
        self._f32 = Matrix(self._file("float32.f32"), np.float32, dim)
        self._i8 = Matrix(self._file("int8.i8"), np.int8, dim)
        self._b1 = (
            Matrix(self._file("binary.b1"), np.uint8, math.ceil(dim / 8), resident=True)
            if config.binary_index
            else None
        )
        slots = len(self._f32)
        self.alive = np.zeros(slots, dtype=bool)
        self.alive[: min(slots, len(alive))] = alive[:slots]
        self._int8: Int8Quantizer | None = None
        self._binary: BinaryQuantizer | None = None
        self._projection: Projection | None = None
        self._calibrated_on = 0
        self._hnsw: HnswIndex | None = None
        self._compact: HnswIndex | None = None
        self._load_quantizers()
        if self.alive.any() and self._stale():
            self._calibrate()
        self._build_missing()

    # -- files and quantizers ------------------------------------------------------------------

    def _file(self, name: str) -> Path | None:
        return None if self._dir is None else self._dir / name

    def _load_quantizers(self) -> None:
        path = self._file("quantizers.json")
        if path is None or not path.is_file():
            return
        data = json.loads(path.read_text())
        self._calibrated_on = int(data.get("calibrated_on", 0))
        if "int8" in data:
            self._int8 = Int8Quantizer.from_dict(data["int8"])
        if "binary" in data and self.config.binary_index:
            self._binary = BinaryQuantizer.from_dict(data["binary"])
        if "projection" in data and self.config.compact_fraction is not None:
            self._projection = Projection.from_dict(data["projection"])

    def _save_quantizers(self) -> None:
        path = self._file("quantizers.json")
        if path is None:
            return
        data: dict[str, Any] = {"calibrated_on": self._calibrated_on}
        for key, value in (
            ("int8", self._int8),
            ("binary", self._binary),
            ("projection", self._projection),
        ):
            if value is not None:
                data[key] = value.to_dict()
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data))
        os.replace(tmp, path)

    def _stale(self) -> bool:
        """Whether a quantizer is missing or a code file is behind the float32 file."""
        slots = len(self._f32)
        if self._int8 is None or len(self._i8) < slots:
            return True
        if self._b1 is not None and (self._binary is None or len(self._b1) < slots):
            return True
        return self.config.compact_fraction is not None and self._projection is None

    def _live_slots(self) -> NDArray[np.int64]:
        return np.flatnonzero(self.alive).astype(np.int64)

    def _calibrate(self) -> None:
        """Fit the quantizers on the live vectors; rewrite every code and the compact index."""
        slots = self._live_slots()
        rows = self._f32.view()
        sample_slots = slots
        if len(slots) > _CALIBRATION_SAMPLE:
            rng = np.random.default_rng(0)
            sample_slots = np.sort(rng.choice(slots, _CALIBRATION_SAMPLE, replace=False))
        sample = np.asarray(rows[sample_slots], dtype=np.float32)
        self._int8 = Int8Quantizer.calibrate(sample)
        self._i8.rewrite(_encode_blocks(self._int8.encode, rows, np.int8))
        if self._b1 is not None:
            self._binary = BinaryQuantizer.calibrate(sample)
            self._b1.rewrite(_encode_blocks(self._binary.encode, rows, np.uint8))
        if self.config.compact_fraction is not None:
            dim = max(1, min(self.dim, round(self.dim * self.config.compact_fraction)))
            self._projection = Projection.calibrate(sample, dim)
            live = np.asarray(rows[slots], dtype=np.float32)
            self._compact = self._build("compact", self._projection.apply(live), slots, fresh=True)
        self._calibrated_on = len(slots)
        self._save_quantizers()

    # -- HNSW ----------------------------------------------------------------------------------

    def _build(
        self, name: str, vectors: NDArray[np.float32], slots: NDArray[np.int64], *, fresh: bool
    ) -> HnswIndex:
        """An HNSW index over ``vectors``, from its snapshot when that holds exactly ``slots``."""
        path = self._file(f"{name}.hnsw")
        if path is not None and path.exists() and not fresh:
            try:
                index = HnswIndex(vectors.shape[1], self.config.hnsw, path)
                if index.labels() == set(slots.tolist()):
                    return index
            except (RuntimeError, ValueError, OSError) as e:
                log.info("semcache: rebuilding %s (snapshot unreadable: %s)", path, e)
        index = HnswIndex(vectors.shape[1], self.config.hnsw)
        if len(slots):
            index.add(slots, vectors)
        return index

    def _build_missing(self) -> None:
        slots = self._live_slots()
        rows = np.asarray(self._f32.view()[slots], dtype=np.float32)
        if self.config.float32_index and self._hnsw is None:
            self._hnsw = self._build("float32", rows, slots, fresh=False)
        if self._compact is None and self._projection is not None:
            self._compact = self._build("compact", self._projection.apply(rows), slots, fresh=False)

    # -- writes --------------------------------------------------------------------------------

    def append(self, vectors: NDArray[np.float32]) -> NDArray[np.int64]:
        """Write vectors (and their codes) into new, dead slots; returns the slots."""
        first = len(self._f32)
        n = vectors.shape[0]
        self._f32.append(vectors)
        self._i8.append(
            self._int8.encode(vectors)
            if self._int8 is not None and n
            else np.zeros((n, self.dim), np.int8)
        )
        if self._b1 is not None:
            self._b1.append(
                self._binary.encode(vectors)
                if self._binary is not None and n
                else np.zeros((n, self._b1.width), np.uint8)
            )
        self.alive = np.concatenate([self.alive, np.zeros(n, dtype=bool)])
        return np.arange(first, first + n, dtype=np.int64)

    def activate(self, slots: NDArray[np.int64]) -> None:
        """Make appended slots live: index them, or recalibrate if the corpus has grown."""
        self.alive[slots] = True
        live = int(self.alive.sum())
        vectors = np.asarray(self._f32.view()[slots], dtype=np.float32)
        if self._hnsw is not None and len(slots):
            self._hnsw.add(slots, vectors)
        if self._int8 is None or live >= self.config.recalibrate_growth * self._calibrated_on:
            if live:
                self._calibrate()
            return
        if len(slots) and self._compact is not None and self._projection is not None:
            self._compact.add(slots, self._projection.apply(vectors))

    def kill(self, slots: list[int]) -> None:
        for slot in slots:
            self.alive[slot] = False
            for index in (self._hnsw, self._compact):
                if index is not None:
                    index.remove(slot)

    # -- search --------------------------------------------------------------------------------

    def search(
        self, query: NDArray[np.float32], k: int, mode: DenseMode
    ) -> list[tuple[int, float]]:
        """Up to ``k`` ``(slot, cosine similarity)`` pairs, best first."""
        if k <= 0 or not self.alive.any():
            return []
        if isinstance(mode, Float32Search):
            if self._hnsw is None:
                raise ConfigurationError("Float32Search needs float32_index=True")
            return self._hnsw.knn(query, k)
        if isinstance(mode, Int8Rescored):
            return self._int8_rescored(query, k, mode)
        if isinstance(mode, BinaryRescored):
            return self._binary_rescored(query, k, mode)
        raise ConfigurationError(f"unknown dense mode {mode!r}")

    def _rescore_int8(
        self, query: NDArray[np.float32], slots: NDArray[np.int64], keep: int
    ) -> tuple[NDArray[np.int64], NDArray[np.float32]]:
        assert self._int8 is not None
        order = np.sort(slots)  # sequential reads from the memory map
        scores = self._int8.scores(query, np.asarray(self._i8.view()[order]))
        top = top_indices(scores, keep)
        return order[top], scores[top]

    def _int8_rescored(
        self, query: NDArray[np.float32], k: int, mode: Int8Rescored
    ) -> list[tuple[int, float]]:
        n = candidates(k, mode.oversample)
        if self._compact is not None and self._projection is not None:
            hits = self._compact.knn(self._projection.apply(query[None, :])[0], n)
        elif self._hnsw is not None:
            hits = self._hnsw.knn(query, n)
        else:
            raise ConfigurationError("Int8Rescored needs a compact or float32 HNSW index")
        slots = np.fromiter((s for s, _ in hits), dtype=np.int64, count=len(hits))
        best, scores = self._rescore_int8(query, slots, k)
        return list(zip(best.tolist(), scores.tolist(), strict=True))

    def _binary_rescored(
        self, query: NDArray[np.float32], k: int, mode: BinaryRescored
    ) -> list[tuple[int, float]]:
        if self._b1 is None or self._binary is None:
            raise ConfigurationError("BinaryRescored needs binary_index=True")
        code = self._binary.encode(query[None, :])[0]
        distances = hamming_distances(code, self._b1.view()).astype(np.float32)
        distances[~self.alive[: distances.shape[0]]] = np.inf
        first = top_indices(-distances, candidates(k, mode.binary_oversample))
        first = first[np.isfinite(distances[first])].astype(np.int64)
        keep = candidates(k, mode.int8_oversample) if mode.float32_final else k
        slots, scores = self._rescore_int8(query, first, keep)
        if mode.float32_final:
            order = np.sort(slots)
            exact = np.asarray(self._f32.view()[order], dtype=np.float32) @ query
            top = top_indices(exact, k)
            slots, scores = order[top], exact[top]
        return list(zip(slots.tolist(), scores.tolist(), strict=True))

    # -- sizes and lifecycle -------------------------------------------------------------------

    @property
    def calibrated_on(self) -> int:
        """The live count the quantizers were last fitted on."""
        return self._calibrated_on

    def vector_bytes(self) -> dict[str, int]:
        """Bytes per vector of each representation kept, without graph overhead."""
        out = {"float32": 4 * self.dim, "int8": self.dim}
        if self._projection is not None:
            out["compact"] = 4 * self._projection.dim
        if self._b1 is not None:
            out["binary"] = self._b1.width
        return out

    def memory(self) -> list[MemoryUse]:
        """Sizes of each part; HNSW sizes are those of a snapshot (vectors, links, labels)."""
        live = int(self.alive.sum())
        out: list[MemoryUse] = []
        for name, index in (("hnsw_float32", self._hnsw), ("hnsw_compact", self._compact)):
            if index is not None:
                with tempfile.TemporaryDirectory() as tmp:
                    snap = Path(tmp) / "index.bin"
                    index.save(snap)
                    size = snap.stat().st_size
                out.append(MemoryUse(name=name, nbytes=size, resident=True, vectors=live))
        parts = [
            ("binary_codes", self._b1),
            ("int8_codes", self._i8),
            ("float32_vectors", self._f32),
        ]
        for name, matrix in parts:
            if matrix is not None:
                out.append(
                    MemoryUse(
                        name=name,
                        nbytes=matrix.nbytes,
                        resident=matrix.resident,
                        vectors=len(matrix),
                    )
                )
        return out

    def flush(self) -> None:
        """Write the HNSW snapshots."""
        if self._dir is None:
            return
        for name, index in (("float32", self._hnsw), ("compact", self._compact)):
            if index is not None:
                index.save(self._dir / f"{name}.hnsw")


def _encode_blocks(encode: Any, rows: NDArray[Any], dtype: type[np.generic]) -> NDArray[Any]:
    if rows.shape[0] == 0:
        return np.empty((0, rows.shape[1]), dtype=dtype)
    return np.concatenate(
        [encode(np.asarray(rows[i : i + _BLOCK])) for i in range(0, rows.shape[0], _BLOCK)]
    )
