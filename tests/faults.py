"""Real components with a fault switch, and the detector of blocking calls on an event loop.

No mocks: :class:`RecordingBackend` delegates every call to a real backend, noting the calling
thread, and raises ``BackendUnavailableError`` while ``down``; :class:`RecordingEmbedder` is the
hashing embedder, noting its threads, raising while ``failing``. :class:`BlockingCalls` profiles
the event loop's thread and lists the blocking I/O calls made on it.
"""

from __future__ import annotations

import socket
import sqlite3
import sys
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from types import FrameType
from typing import TYPE_CHECKING, Any

from semcache.backends.base import Backend
from semcache.errors import BackendUnavailableError
from semcache.models import Candidate, Entry, ModelFingerprint, NewEntry
from semcache.testing import HashingEmbedder

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray


class RecordingBackend:
    """A :class:`Backend` over ``inner`` that records ``(method, thread id)`` of every call."""

    def __init__(self, inner: Backend) -> None:
        self.inner = inner
        self.calls: list[tuple[str, int]] = []
        self.down = False

    def _call(self, name: str, *args: Any) -> Any:
        self.calls.append((name, threading.get_ident()))
        if self.down and name not in ("bind", "close"):
            raise BackendUnavailableError(f"test: backend is down ({name})")
        return getattr(self.inner, name)(*args)

    def names(self, method: str) -> int:
        return sum(1 for name, _ in self.calls if name == method)

    def bind(self, fingerprint: ModelFingerprint) -> None:
        self._call("bind", fingerprint)

    def get_exact(self, scope_key: str, text_key: str, now: float) -> Entry | None:
        result: Entry | None = self._call("get_exact", scope_key, text_key, now)
        return result

    def search(
        self, scope_key: str, vector: NDArray[np.float32], k: int, now: float
    ) -> list[Candidate]:
        result: list[Candidate] = self._call("search", scope_key, vector, k, now)
        return result

    def put(self, entry: NewEntry, vector: NDArray[np.float32]) -> Entry:
        result: Entry = self._call("put", entry, vector)
        return result

    def put_many(
        self, entries: Sequence[NewEntry], vectors: Sequence[NDArray[np.float32]]
    ) -> list[Entry]:
        result: list[Entry] = self._call("put_many", entries, vectors)
        return result

    def get(self, entry_id: str) -> Entry | None:
        result: Entry | None = self._call("get", entry_id)
        return result

    def touch(self, entry_id: str, now: float) -> None:
        self._call("touch", entry_id, now)

    def delete(self, entry_ids: Iterable[str]) -> int:
        result: int = self._call("delete", list(entry_ids))
        return result

    def evict(self, max_entries: int) -> int:
        result: int = self._call("evict", max_entries)
        return result

    def purge_expired(self, now: float) -> int:
        result: int = self._call("purge_expired", now)
        return result

    def clear(self, scope_key: str | None = None) -> int:
        result: int = self._call("clear", scope_key)
        return result

    def delete_where(self, selector: Any) -> int:
        result: int = self._call("delete_where", selector)
        return result

    def entries(
        self, selector: Any, cursor: str | None = None, limit: int = 100, vectors: bool = False
    ) -> Any:
        return self._call("entries", selector, cursor, limit, vectors)

    def count(self) -> int:
        result: int = self._call("count")
        return result

    def close(self) -> None:
        self._call("close")


class RecordingEmbedder(HashingEmbedder):
    """The hashing embedder, noting the thread of each call; raises while ``failing``."""

    def __init__(self) -> None:
        super().__init__()
        self.threads: list[int] = []
        self.failing = False

    def embed(self, texts: Sequence[str]) -> NDArray[np.float32]:
        self.threads.append(threading.get_ident())
        if self.failing:
            raise RuntimeError("test: the embedding model failed")
        return super().embed(texts)


_SOCKET_IO = frozenset(
    {"accept", "connect", "recv", "recv_into", "recvfrom", "recvmsg", "send", "sendall", "sendto"}
)


def _blocking(fn: Any) -> str | None:
    """A name for ``fn`` if calling it blocks on I/O (or sleeps), else ``None``."""
    owner = getattr(fn, "__self__", None)
    name = getattr(fn, "__name__", "")
    if isinstance(owner, sqlite3.Connection | sqlite3.Cursor):
        return f"sqlite3.{type(owner).__name__}.{name}"
    if isinstance(owner, socket.socket) and name in _SOCKET_IO and owner.gettimeout() != 0.0:
        return f"blocking socket.{name}"  # the loop's own sockets are non-blocking
    if fn is time.sleep:
        return "time.sleep"
    return None


class BlockingCalls:
    """The blocking calls (SQLite, blocking sockets, sleep) made on this thread while active.

    Install inside a coroutine: the profile hook covers the event loop's thread only, so work
    handed to worker threads (``asyncio.to_thread``) is not listed, and must not be.
    """

    def __init__(self) -> None:
        self.seen: list[str] = []

    def _profile(self, frame: FrameType, event: str, arg: Any) -> None:
        if event == "c_call" and (name := _blocking(arg)) is not None:
            self.seen.append(name)

    @contextmanager
    def watching(self) -> Iterator[BlockingCalls]:
        previous = sys.getprofile()
        sys.setprofile(self._profile)
        try:
            yield self
        finally:
            sys.setprofile(previous)
