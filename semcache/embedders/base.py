"""The embedder contract: text in, L2-normalised float32 vectors out.

An :class:`Embedder` is anything with a :class:`~semcache.models.ModelFingerprint` and an
``embed`` method. The fingerprint is stored with every index, so vectors from two different models
are never compared.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

from semcache.errors import ConfigurationError, InvalidInputError

if TYPE_CHECKING:
    from numpy.typing import NDArray

    from semcache.models import ModelFingerprint

__all__ = ["DEFAULT_MODEL", "Embedder", "VectorMemo", "normalize_rows"]

DEFAULT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"


@runtime_checkable
class Embedder(Protocol):
    """Turns texts into a ``(len(texts), dim)`` float32 array of unit vectors."""

    @property
    def fingerprint(self) -> ModelFingerprint: ...

    def embed(self, texts: Sequence[str]) -> NDArray[np.float32]: ...


def normalize_rows(vectors: NDArray[Any]) -> NDArray[np.float32]:
    """L2-normalise each row; raises :class:`InvalidInputError` on NaN, inf or zero rows."""
    arr = np.asarray(vectors, dtype=np.float32)
    if arr.ndim != 2:
        raise InvalidInputError(f"expected a 2-d array of vectors, got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise InvalidInputError("vector contains NaN or infinity")
    norms = np.linalg.norm(arr, axis=1, keepdims=True)
    if (norms == 0).any():
        raise InvalidInputError("cannot normalise a zero vector")
    return np.ascontiguousarray(arr / norms, dtype=np.float32)


class VectorMemo:
    """A bounded, thread-safe LRU of text -> vector that embedders put in front of their model.

    ``embed(texts, encode)`` validates the texts, answers exact repeats from memory and calls
    ``encode`` once, on the texts not seen recently. ``size=0`` disables the memo.
    """

    def __init__(self, size: int) -> None:
        if size < 0:
            raise ConfigurationError(f"memo_size must be >= 0, got {size}")
        self._size = size
        self._vectors: OrderedDict[str, NDArray[np.float32]] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._vectors)

    def embed(
        self,
        texts: Sequence[str],
        dim: int,
        encode: Callable[[list[str]], NDArray[np.float32]],
    ) -> NDArray[np.float32]:
        if isinstance(texts, str):
            raise InvalidInputError("embed() takes a sequence of strings, not one string")
        for t in texts:
            if not isinstance(t, str):
                raise InvalidInputError(f"cannot embed a {type(t).__name__}; expected str")
        out = np.empty((len(texts), dim), dtype=np.float32)
        todo: list[int] = []
        with self._lock:
            for i, t in enumerate(texts):
                hit = self._vectors.get(t)
                if hit is None:
                    todo.append(i)
                else:
                    self._vectors.move_to_end(t)
                    out[i] = hit
        if todo:
            fresh = encode([texts[i] for i in todo])
            out[todo] = fresh
            if self._size:
                with self._lock:
                    for i, vec in zip(todo, fresh, strict=True):
                        self._vectors[texts[i]] = vec
                        if len(self._vectors) > self._size:
                            self._vectors.popitem(last=False)
        return out
