"""Vector compression for the dense index: int8 scalar quantization, binary codes, projection.

All pure numpy. Each compressor is calibrated on the corpus (per dimension) and serialises to
JSON, never pickle.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from semcache.errors import ConfigurationError, InvalidInputError

if TYPE_CHECKING:
    from numpy.typing import NDArray

__all__ = ["BinaryQuantizer", "Int8Quantizer", "Projection", "hamming_distances"]


def _matrix(vectors: NDArray[Any], what: str) -> NDArray[np.float32]:
    arr = np.asarray(vectors, dtype=np.float32)
    if arr.ndim != 2 or arr.shape[0] == 0:
        raise InvalidInputError(f"{what} needs a non-empty 2-d array, got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise InvalidInputError(f"{what}: vectors contain NaN or infinity")
    return arr


@dataclass(frozen=True, slots=True, eq=False)
class Int8Quantizer:
    """Per-dimension scalar quantization to int8: ``[low_j, high_j]`` maps onto ``[-128, 127]``.

    Build with :meth:`calibrate` on corpus vectors. Scores against a float32 query are computed
    without materialising float vectors (asymmetric distance).
    """

    low: NDArray[np.float32]
    high: NDArray[np.float32]

    @classmethod
    def calibrate(cls, vectors: NDArray[Any], *, clip_quantile: float = 0.0) -> Int8Quantizer:
        """Ranges from the corpus: per-dimension min/max, or quantiles to ignore outliers."""
        if not 0.0 <= clip_quantile < 0.5:
            raise ConfigurationError(f"clip_quantile must be in [0, 0.5), got {clip_quantile}")
        arr = _matrix(vectors, "int8 calibration")
        if clip_quantile:
            low = np.quantile(arr, clip_quantile, axis=0)
            high = np.quantile(arr, 1.0 - clip_quantile, axis=0)
        else:
            low, high = arr.min(axis=0), arr.max(axis=0)
        high = np.maximum(high, low + 1e-6)
        return cls(low.astype(np.float32), high.astype(np.float32))

    @property
    def dim(self) -> int:
        return int(self.low.shape[0])

    @property
    def scale(self) -> NDArray[np.float32]:
        return ((self.high - self.low) / 255.0).astype(np.float32)

    @property
    def bytes_per_vector(self) -> int:
        return self.dim

    def encode(self, vectors: NDArray[Any]) -> NDArray[np.int8]:
        arr = _matrix(vectors, "int8 encode")
        codes = np.rint((arr - self.low) / self.scale) - 128.0
        out: NDArray[np.int8] = np.clip(codes, -128, 127).astype(np.int8)
        return out

    def decode(self, codes: NDArray[np.int8]) -> NDArray[np.float32]:
        return ((codes.astype(np.float32) + 128.0) * self.scale + self.low).astype(np.float32)

    def scores(self, query: NDArray[np.float32], codes: NDArray[np.int8]) -> NDArray[np.float32]:
        """Inner products of a float32 query with int8-coded vectors (rows of ``codes``)."""
        q = np.asarray(query, dtype=np.float32)
        weights = q * self.scale
        offset = float(q @ (self.low + 128.0 * self.scale))
        return (codes.astype(np.float32) @ weights + offset).astype(np.float32)

    def to_dict(self) -> dict[str, Any]:
        return {"low": self.low.tolist(), "high": self.high.tolist()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Int8Quantizer:
        return cls(np.asarray(data["low"], np.float32), np.asarray(data["high"], np.float32))


@dataclass(frozen=True, slots=True, eq=False)
class BinaryQuantizer:
    """One bit per dimension, set when the value is above that dimension's corpus median."""

    threshold: NDArray[np.float32]

    @classmethod
    def calibrate(cls, vectors: NDArray[Any]) -> BinaryQuantizer:
        arr = _matrix(vectors, "binary calibration")
        return cls(np.median(arr, axis=0).astype(np.float32))

    @property
    def dim(self) -> int:
        return int(self.threshold.shape[0])

    @property
    def bytes_per_vector(self) -> int:
        return math.ceil(self.dim / 8)

    def encode(self, vectors: NDArray[Any]) -> NDArray[np.uint8]:
        arr = _matrix(vectors, "binary encode")
        return np.packbits(arr > self.threshold, axis=1)

    def to_dict(self) -> dict[str, Any]:
        return {"threshold": self.threshold.tolist()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BinaryQuantizer:
        return cls(np.asarray(data["threshold"], np.float32))


def hamming_distances(query_code: NDArray[np.uint8], codes: NDArray[np.uint8]) -> NDArray[Any]:
    """Bit differences between one packed code and each row of ``codes``."""
    out: NDArray[Any] = np.bitwise_count(np.bitwise_xor(codes, query_code)).sum(
        axis=1, dtype=np.int32
    )
    return out


@dataclass(frozen=True, slots=True, eq=False)
class Projection:
    """A linear map onto the top principal directions of the corpus's second-moment matrix.

    Uncentred on purpose: inner products of projected vectors approximate the original inner
    products (least squares over the corpus), which is what a first-stage index ranks by.
    """

    components: NDArray[np.float32]  # (out_dim, in_dim)

    @classmethod
    def calibrate(cls, vectors: NDArray[Any], dim: int) -> Projection:
        arr = _matrix(vectors, "projection calibration")
        if not 1 <= dim <= arr.shape[1]:
            raise ConfigurationError(f"projection dim must be in [1, {arr.shape[1]}], got {dim}")
        second_moment = (arr.T @ arr).astype(np.float64)
        _, eigvecs = np.linalg.eigh(second_moment)  # ascending eigenvalues
        top = eigvecs[:, ::-1][:, :dim].T
        return cls(np.ascontiguousarray(top, dtype=np.float32))

    @property
    def dim(self) -> int:
        return int(self.components.shape[0])

    def apply(self, vectors: NDArray[Any]) -> NDArray[np.float32]:
        arr = np.asarray(vectors, dtype=np.float32)
        return np.ascontiguousarray(arr @ self.components.T, dtype=np.float32)

    def to_dict(self) -> dict[str, Any]:
        return {"components": self.components.tolist()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Projection:
        return cls(np.asarray(data["components"], np.float32))
