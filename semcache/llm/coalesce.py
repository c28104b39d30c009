"""Request coalescing: concurrent misses for the same (or a near-identical) prompt share one
upstream call. Works across threads and event loops."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from numpy.typing import NDArray

__all__ = ["Flight", "Flights"]

_UNSET = object()


class Flight:
    """One upstream call in progress. Followers wait for its stored (JSON) result."""

    def __init__(self) -> None:
        self._done = threading.Event()
        self._value: Any = _UNSET
        self._lock = threading.Lock()
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []

    def finish(self, value: Any = _UNSET) -> None:
        """Publish the leader's result (or nothing, if it failed or was not storable)."""
        with self._lock:
            self._value = value
            self._done.set()
            waiters, self._waiters = self._waiters, []
        for loop, fut in waiters:
            loop.call_soon_threadsafe(_resolve, fut)

    def wait(self, timeout: float) -> tuple[bool, Any]:
        """Block until finished; ``(True, value)`` if the leader published a value."""
        self._done.wait(timeout)
        return self._result()

    async def await_(self, timeout: float) -> tuple[bool, Any]:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        with self._lock:
            if self._done.is_set():
                return self._result()
            self._waiters.append((loop, fut))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(fut, timeout)
        return self._result()

    def _result(self) -> tuple[bool, Any]:
        with self._lock:
            value = self._value
        return (value is not _UNSET), value


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


@dataclass(slots=True)
class _Pending:
    text_key: str
    vector: NDArray[np.float32] | None
    flight: Flight = field(default_factory=Flight)


class Flights:
    """The in-flight upstream calls of one decorated function, by scope."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_scope: dict[str, list[_Pending]] = {}

    def join(
        self,
        scope_key: str,
        text_key: str,
        vector: NDArray[np.float32] | None,
        threshold: float,
    ) -> tuple[Flight, bool]:
        """The flight to follow for this request, or a new one; ``True`` if the caller leads."""
        with self._lock:
            pending = self._by_scope.setdefault(scope_key, [])
            for p in pending:
                if p.text_key == text_key or (
                    vector is not None
                    and p.vector is not None
                    and float(np.dot(p.vector, vector)) >= threshold
                ):
                    return p.flight, False
            new = _Pending(text_key, vector)
            pending.append(new)
            return new.flight, True

    def land(self, scope_key: str, flight: Flight) -> None:
        """Forget a finished flight (call before ``flight.finish`` so no one joins it late)."""
        with self._lock:
            pending = self._by_scope.get(scope_key, [])
            pending[:] = [p for p in pending if p.flight is not flight]
            if not pending:
                self._by_scope.pop(scope_key, None)

    def __len__(self) -> int:
        with self._lock:
            return sum(len(v) for v in self._by_scope.values())
