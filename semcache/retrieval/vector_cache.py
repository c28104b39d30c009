"""An on-disk cache of embedding matrices, keyed by model fingerprint and the exact texts."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from semcache.models import ModelFingerprint

if TYPE_CHECKING:
    from numpy.typing import NDArray

__all__ = ["VectorCache"]


class VectorCache:
    """``<directory>/<key>.npy`` files (numpy format, loaded without pickle).

    The key hashes the model fingerprint and every text, so a different model, corpus or
    chunking gives a different file. Benchmarks use it to embed a corpus once.
    """

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)

    @staticmethod
    def key(fingerprint: ModelFingerprint, texts: Sequence[str]) -> str:
        h = hashlib.sha256(fingerprint.key().encode("utf-8"))
        for text in texts:
            data = text.encode("utf-8")
            h.update(len(data).to_bytes(8, "big"))
            h.update(data)
        return h.hexdigest()[:32]

    def load(self, key: str, rows: int) -> NDArray[np.float32] | None:
        """The cached matrix, or ``None`` if absent or of the wrong length."""
        path = self.directory / f"{key}.npy"
        if not path.is_file():
            return None
        try:
            arr = np.load(path, allow_pickle=False)
        except (OSError, ValueError):
            return None
        if arr.ndim != 2 or arr.shape[0] != rows or arr.dtype != np.float32:
            return None
        return np.ascontiguousarray(arr)

    def save(self, key: str, vectors: NDArray[np.float32]) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / f"{key}.npy"
        tmp = self.directory / f"{key}.tmp.npy"
        np.save(tmp, np.asarray(vectors, dtype=np.float32), allow_pickle=False)
        os.replace(tmp, path)
