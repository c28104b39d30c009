"""The contract every backend keeps. Similarities crossing it are cosine (higher is closer)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

from semcache.errors import InvalidInputError, NotCacheableError

if TYPE_CHECKING:
    from numpy.typing import NDArray

    from semcache.models import Candidate, Entry, ModelFingerprint, NewEntry
    from semcache.selector import Selector

__all__ = [
    "AsyncBackend",
    "Backend",
    "EntryPage",
    "ThreadedBackend",
    "as_async",
    "check_limit",
    "check_vector",
    "encode_json",
]


@dataclass(frozen=True, slots=True)
class EntryPage:
    """One page of a backend's entries (:meth:`Backend.entries`).

    Attributes:
        entries: the entries of this page, expired ones not yet purged included; a page may
            hold fewer than the limit asked (even none) before the end.
        vectors: each entry's stored vector, in order, when asked for; else empty.
        cursor: what to pass for the next page; ``None`` once every entry has been returned.
    """

    entries: tuple[Entry, ...]
    vectors: tuple[NDArray[np.float32], ...] = ()
    cursor: str | None = None


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

    def put_many(
        self, entries: Sequence[NewEntry], vectors: Sequence[NDArray[np.float32]]
    ) -> list[Entry]:
        """Store many entries at once (bulk loads); each replaces as :meth:`put` does."""

    def get(self, entry_id: str) -> Entry | None:
        """An entry by id, or ``None``."""

    def touch(self, entry_id: str, now: float) -> None:
        """Count a use of an entry at ``now``: its eviction priority is recomputed."""

    def delete(self, entry_ids: Iterable[str]) -> int:
        """Delete entries by id; returns how many existed."""

    def evict(self, max_entries: int) -> int:
        """Delete the entries its eviction policy ranks lowest until at most ``max_entries``
        remain; returns how many went, including any a backend's own caps evicted since the last
        call."""

    def purge_expired(self, now: float) -> int:
        """Delete expired entries; returns how many."""

    def clear(self, scope_key: str | None = None) -> int:
        """Delete every entry (of one scope, if given)."""

    def delete_where(self, selector: Selector) -> int:
        """Delete the entries ``selector`` matches, from everywhere they are kept (rows, vector
        indexes and their snapshots, LRU records); returns how many."""

    def entries(
        self, selector: Selector, cursor: str | None = None, limit: int = 100, vectors: bool = False
    ) -> EntryPage:
        """A page of the entries ``selector`` matches, from ``cursor`` (``None``: the start).

        Entries stored or deleted while paging may or may not be seen; an entry present
        throughout is returned at least once.
        """

    def count(self) -> int:
        """How many entries are stored (expired ones not yet purged included)."""

    def close(self) -> None:
        """Persist what needs persisting and release resources."""


@runtime_checkable
class AsyncBackend(Protocol):
    """The :class:`Backend` methods as coroutines, for backends with native async I/O.

    ``bind`` stays sync (it runs once, at construction). :meth:`aclose` closes the backend and
    must run in the event loop that used the async methods.
    """

    async def aget_exact(self, scope_key: str, text_key: str, now: float) -> Entry | None: ...

    async def asearch(
        self, scope_key: str, vector: NDArray[np.float32], k: int, now: float
    ) -> list[Candidate]: ...

    async def aput(self, entry: NewEntry, vector: NDArray[np.float32]) -> Entry: ...

    async def aget(self, entry_id: str) -> Entry | None: ...

    async def atouch(self, entry_id: str, now: float) -> None: ...

    async def adelete(self, entry_ids: Iterable[str]) -> int: ...

    async def aevict(self, max_entries: int) -> int: ...

    async def apurge_expired(self, now: float) -> int: ...

    async def aclear(self, scope_key: str | None = None) -> int: ...

    async def adelete_where(self, selector: Selector) -> int: ...

    async def aentries(
        self, selector: Selector, cursor: str | None = None, limit: int = 100, vectors: bool = False
    ) -> EntryPage: ...

    async def acount(self) -> int: ...

    async def aclose(self) -> None: ...


class ThreadedBackend:
    """:class:`AsyncBackend` over a sync :class:`Backend`: each call runs in a worker thread."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend

    async def aget_exact(self, scope_key: str, text_key: str, now: float) -> Entry | None:
        return await asyncio.to_thread(self.backend.get_exact, scope_key, text_key, now)

    async def asearch(
        self, scope_key: str, vector: NDArray[np.float32], k: int, now: float
    ) -> list[Candidate]:
        return await asyncio.to_thread(self.backend.search, scope_key, vector, k, now)

    async def aput(self, entry: NewEntry, vector: NDArray[np.float32]) -> Entry:
        return await asyncio.to_thread(self.backend.put, entry, vector)

    async def aget(self, entry_id: str) -> Entry | None:
        return await asyncio.to_thread(self.backend.get, entry_id)

    async def atouch(self, entry_id: str, now: float) -> None:
        await asyncio.to_thread(self.backend.touch, entry_id, now)

    async def adelete(self, entry_ids: Iterable[str]) -> int:
        return await asyncio.to_thread(self.backend.delete, list(entry_ids))

    async def aevict(self, max_entries: int) -> int:
        return await asyncio.to_thread(self.backend.evict, max_entries)

    async def apurge_expired(self, now: float) -> int:
        return await asyncio.to_thread(self.backend.purge_expired, now)

    async def aclear(self, scope_key: str | None = None) -> int:
        return await asyncio.to_thread(self.backend.clear, scope_key)

    async def adelete_where(self, selector: Selector) -> int:
        return await asyncio.to_thread(self.backend.delete_where, selector)

    async def aentries(
        self, selector: Selector, cursor: str | None = None, limit: int = 100, vectors: bool = False
    ) -> EntryPage:
        return await asyncio.to_thread(self.backend.entries, selector, cursor, limit, vectors)

    async def acount(self) -> int:
        return await asyncio.to_thread(self.backend.count)

    async def aclose(self) -> None:
        await asyncio.to_thread(self.backend.close)


def as_async(backend: Backend) -> AsyncBackend:
    """The backend's own async methods if it has them, else its sync ones in worker threads."""
    return backend if isinstance(backend, AsyncBackend) else ThreadedBackend(backend)


def check_limit(limit: int) -> int:
    """A page size: an int from 1 to 10,000."""
    if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= 10_000:
        raise InvalidInputError(f"a page holds 1-10000 entries, got limit={limit!r}")
    return limit


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


def encode_json(value: Any, what: str) -> str:
    """``value`` as JSON text a backend can store as UTF-8, or :class:`NotCacheableError` naming
    ``what``.

    Non-ASCII text stays as is, except in text holding a lone surrogate (a split emoji from
    ``json.loads``, say), which UTF-8 cannot encode: that is written with ``\\u`` escapes,
    which decode back to the same string.
    """
    try:
        text = json.dumps(value, ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise NotCacheableError(f"{what} cannot be stored as JSON: {e}") from e
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            text = json.dumps(value, ensure_ascii=True, allow_nan=False)
    return text
