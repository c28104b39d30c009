"""The contract every backend keeps. Similarities crossing it are cosine (higher is closer)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np

from semcache.errors import InvalidInputError

if TYPE_CHECKING:
    from numpy.typing import NDArray

    from semcache.embeddings import ModelFingerprint
    from semcache.models import Candidate, Entry, NewEntry

__all__ = ["Backend", "check_vector"]


@runtime_checkable
class Backend(Protocol):
    """Stores entries with their vectors, partitioned by scope key.

    Every method is safe to call from several threads. Expired entries are never returned.
    """

    def bind(self, fingerprint: ModelFingerprint) -> None:
        """Record the embedding model on first use; refuse a different one afterwards."""

    def get_exact(self, scope_key: str, text_key: str, now: float) -> Entry | None:
        """The live entry stored for exactly this normalised text in this scope."""

    def search(
        self, scope_key: str, vector: NDArray[np.float32], k: int, now: float
    ) -> list[Candidate]:
        """Up to ``k`` live nearest entries in this scope, most similar first."""

    def put(self, entry: NewEntry, vector: NDArray[np.float32]) -> Entry:
        """Store an entry, replacing any entry with the same scope and text key."""

    def get(self, entry_id: str) -> Entry | None:
        """An entry by id, or ``None``."""

    def touch(self, entry_id: str, now: float) -> None:
        """Mark an entry as used now (for LRU eviction)."""

    def delete(self, entry_ids: Iterable[str]) -> int:
        """Delete entries by id; returns how many existed."""

    def evict(self, max_entries: int) -> int:
        """Delete least-recently-used entries until at most ``max_entries`` remain."""

    def purge_expired(self, now: float) -> int:
        """Delete expired entries; returns how many."""

    def clear(self, scope_key: str | None = None) -> int:
        """Delete every entry (of one scope, if given)."""

    def count(self) -> int:
        """How many entries are stored (expired ones not yet purged included)."""

    def close(self) -> None:
        """Persist what needs persisting and release resources."""


def check_vector(vector: NDArray[np.float32], dim: int) -> NDArray[np.float32]:
    """Validate a query or stored vector: 1-d, ``dim`` long, finite, unit length."""
    arr = np.asarray(vector, dtype=np.float32)
    if arr.ndim != 1 or arr.shape[0] != dim:
        raise InvalidInputError(f"vector has shape {arr.shape}; this index holds {dim}-d vectors")
    if not np.isfinite(arr).all():
        raise InvalidInputError("vector contains NaN or infinity")
    norm = float(np.linalg.norm(arr))
    if abs(norm - 1.0) > 1e-3:
        raise InvalidInputError(f"vector must be L2-normalised (norm is {norm:.4f})")
    return np.ascontiguousarray(arr)
