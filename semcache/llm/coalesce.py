"""Request coalescing: concurrent misses for the same (or a near-identical) prompt wait for one
upstream call. Works across threads and event loops.

A flight only says *when* the leader is done and whether it stored an answer; whether that
answer may serve a follower is the cache's decision, taken by the follower's own lookup.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from numpy.typing import NDArray

__all__ = ["Flight", "Flights"]


class Flight:
    """One upstream call in progress. Followers wait until it lands."""

    def __init__(self) -> None:
        self._done = threading.Event()
        self._stored = False
        self._lock = threading.Lock()
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []

    def finish(self, *, stored: bool) -> None:
        """Let the followers go; ``stored`` says whether the leader's answer is in the cache."""
        with self._lock:
            self._stored = stored
            self._done.set()
            waiters, self._waiters = self._waiters, []
        for loop, fut in waiters:
            loop.call_soon_threadsafe(_resolve, fut)

    def wait(self, timeout: float) -> bool:
        """Block until the flight lands (at most ``timeout`` s); ``True`` if it stored an answer."""
        self._done.wait(timeout)
        return self._result()

    async def await_(self, timeout: float) -> bool:
        """:meth:`wait` without blocking the event loop."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        with self._lock:
            if self._done.is_set():
                return self._stored
            self._waiters.append((loop, fut))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(fut, timeout)
        return self._result()

    def _result(self) -> bool:
        with self._lock:
            return self._done.is_set() and self._stored


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


@dataclass(slots=True)
class _Pending:
    text: str
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
        text: str,
        text_key: str,
        vector: NDArray[np.float32] | None,
        threshold: float,
        accept: Callable[[str, float], bool] | None = None,
    ) -> tuple[Flight, bool]:
        """The flight to follow for this request, or a new one; ``True`` if the caller leads.

        A flight is followed for the same text, or for a text at least ``threshold`` similar
        that ``accept(text, similarity)`` (if given, run under the lock: keep it cheap) does not
        turn down.
        """
        with self._lock:
            pending = self._by_scope.setdefault(scope_key, [])
            for p in pending:
                if p.text_key == text_key:
                    return p.flight, False
                if vector is None or p.vector is None:
                    continue
                similarity = float(np.dot(p.vector, vector))
                if similarity >= threshold and (accept is None or accept(p.text, similarity)):
                    return p.flight, False
            new = _Pending(text, text_key, vector)
            pending.append(new)
            return new.flight, True

    def land(self, scope_key: str, flight: Flight) -> None:
        """Forget a flight (call before ``flight.finish`` so no one joins it late)."""
        with self._lock:
            pending = self._by_scope.get(scope_key, [])
            pending[:] = [p for p in pending if p.flight is not flight]
            if not pending:
                self._by_scope.pop(scope_key, None)

    def __len__(self) -> int:
        with self._lock:
            return sum(len(v) for v in self._by_scope.values())
