"""An append-only matrix of fixed-width rows: a memory-mapped file, or a numpy array in RAM."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from numpy.typing import NDArray

__all__ = ["Matrix"]


class Matrix:
    """Rows of ``dtype`` and ``width``, stored raw (no header) at ``path``.

    With ``path=None``, or ``resident=True``, rows are held in RAM (a file, if any, is still
    written). Otherwise reads go through a read-only memory map that is reopened after writes.
    Not thread-safe on its own: the owning store holds a lock.
    """

    def __init__(
        self, path: Path | None, dtype: type[np.generic], width: int, *, resident: bool = False
    ) -> None:
        self.path = path
        self.dtype = np.dtype(dtype)
        self.width = width
        self.resident = resident or path is None
        self._row_bytes = self.dtype.itemsize * width
        self._data: NDArray[Any] = np.empty((0, width), dtype=self.dtype)
        if path is not None and path.exists():
            rows = path.stat().st_size // self._row_bytes
            if rows * self._row_bytes != path.stat().st_size:
                # A torn append: drop the partial row (SQLite never references it).
                with open(path, "r+b") as f:
                    f.truncate(rows * self._row_bytes)
            self._reopen()

    def _reopen(self) -> None:
        assert self.path is not None
        rows = self.path.stat().st_size // self._row_bytes if self.path.exists() else 0
        if rows == 0:
            self._data = np.empty((0, self.width), dtype=self.dtype)
        elif self.resident:
            self._data = np.fromfile(self.path, dtype=self.dtype).reshape(rows, self.width)
        else:
            self._data = np.memmap(self.path, dtype=self.dtype, mode="r", shape=(rows, self.width))

    def __len__(self) -> int:
        return int(self._data.shape[0])

    def view(self) -> NDArray[Any]:
        """All rows (a read-only memory map when on disk)."""
        return self._data

    def append(self, rows: NDArray[Any]) -> None:
        block = np.ascontiguousarray(rows, dtype=self.dtype).reshape(-1, self.width)
        if self.path is None:
            self._data = np.concatenate([self._data, block])
            return
        with open(self.path, "ab") as f:
            f.write(block.tobytes())
            f.flush()
            os.fsync(f.fileno())
        if self.resident:
            self._data = np.concatenate([np.asarray(self._data), block])
        else:
            self._reopen()

    def rewrite(self, rows: NDArray[Any]) -> None:
        """Replace every row (atomically on disk: a temporary file renamed over the old one)."""
        block = np.ascontiguousarray(rows, dtype=self.dtype).reshape(-1, self.width)
        if self.path is None:
            self._data = block.copy()
            return
        tmp = self.path.with_suffix(self.path.suffix + ".tmp")
        with open(tmp, "wb") as f:
            f.write(block.tobytes())
            f.flush()
            os.fsync(f.fileno())
        self._data = np.empty((0, self.width), dtype=self.dtype)  # release the old map first
        os.replace(tmp, self.path)
        self._reopen()

    @property
    def nbytes(self) -> int:
        return len(self) * self._row_bytes
