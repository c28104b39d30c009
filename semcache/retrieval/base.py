"""What a retrieval store offers the retriever: dense and sparse search over chunks.

Dense search modes are values, chosen per call; a store raises :class:`ConfigurationError` for a
mode whose index it did not build.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from semcache.errors import ConfigurationError

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray

    from semcache.models import ModelFingerprint
    from semcache.retrieval.documents import Chunk, Document

__all__ = [
    "BinaryRescored",
    "DenseMode",
    "Float32Search",
    "Int8Rescored",
    "MemoryUse",
    "RetrievalStore",
    "candidates",
]


def _check_oversample(name: str, value: float) -> None:
    if not math.isfinite(value) or value < 1.0:
        raise ConfigurationError(f"{name} must be a finite number >= 1, got {value!r}")


@dataclass(frozen=True, slots=True, kw_only=True)
class Float32Search:
    """HNSW over full float32 vectors; scores are exact cosine similarities."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Int8Rescored:
    """A compact first stage returns ``k * oversample`` candidates, rescored with int8 vectors
    against the float32 query."""

    oversample: float = 4.0

    def __post_init__(self) -> None:
        _check_oversample("oversample", self.oversample)


@dataclass(frozen=True, slots=True, kw_only=True)
class BinaryRescored:
    """Binary codes (Hamming) -> ``k * binary_oversample`` -> int8 rescoring ->
    ``k * int8_oversample`` -> float32 rescoring (if ``float32_final``) -> ``k``."""

    binary_oversample: float = 10.0
    int8_oversample: float = 2.0
    float32_final: bool = True

    def __post_init__(self) -> None:
        _check_oversample("binary_oversample", self.binary_oversample)
        _check_oversample("int8_oversample", self.int8_oversample)


DenseMode = Float32Search | Int8Rescored | BinaryRescored


def candidates(k: int, oversample: float) -> int:
    """How many candidates a stage keeps for a final ``k``."""
    return max(k, math.ceil(k * oversample))


@dataclass(frozen=True, slots=True, kw_only=True)
class MemoryUse:
    """The size of one part of an index.

    Attributes:
        name: the part (``"hnsw_float32"``, ``"int8_codes"``, ``"bm25"``...).
        nbytes: its size in bytes.
        resident: ``True`` if held in RAM, ``False`` if on disk (memory-mapped or read on use).
        vectors: how many vectors it holds (0 for non-vector parts).
    """

    name: str
    nbytes: int
    resident: bool
    vectors: int = 0

    @property
    def bytes_per_vector(self) -> float:
        return self.nbytes / self.vectors if self.vectors else math.nan


@runtime_checkable
class RetrievalStore(Protocol):
    """Chunks with their vectors and text, searchable densely and by BM25. Thread-safe."""

    def bind(self, fingerprint: ModelFingerprint) -> None:
        """Record the embedding model on first use; refuse a different one afterwards."""

    def doc_hashes(self, doc_ids: Iterable[str] | None = None) -> dict[str, str]:
        """Content hash of each stored document (of those named, or all)."""

    def replace(
        self, docs: Sequence[Document], chunks: Sequence[Chunk], vectors: NDArray[np.float32]
    ) -> None:
        """Store ``docs`` with these chunks (``vectors[i]`` embeds ``chunks[i]``), replacing
        every chunk those documents had before."""

    def delete(self, doc_ids: Iterable[str]) -> int:
        """Remove documents and their chunks; returns how many documents existed."""

    def dense(
        self, vector: NDArray[np.float32], k: int, mode: DenseMode
    ) -> list[tuple[str, float]]:
        """Up to ``k`` ``(chunk_id, cosine similarity)`` pairs, best first."""

    def sparse(self, query: str, k: int) -> list[tuple[str, float]]:
        """Up to ``k`` ``(chunk_id, BM25 score)`` pairs, best first."""

    def chunks(self, chunk_ids: Iterable[str]) -> dict[str, Chunk]:
        """The stored chunks among ``chunk_ids``."""

    def count(self) -> int:
        """How many chunks are stored."""

    def memory(self) -> list[MemoryUse]:
        """The size of each index part."""

    def close(self) -> None:
        """Persist and release resources."""
