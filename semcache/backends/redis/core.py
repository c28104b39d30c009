"""The one way semcache talks to Redis: a client, its circuit breaker, and error mapping.

The cache backend and the retrieval store both run every command through :meth:`RedisCore.run`
(or :meth:`RedisCore.arun`): a call is refused at once while the circuit is open, and a foreign
error leaves as :class:`BackendUnavailableError` (Redis unreachable or too slow: the breaker
counts it) or :class:`BackendError` (Redis answered with an error). Each call is timed: one that
answers after the breaker's ``slow_call_seconds`` counts as a failure too, so a slow Redis opens
the circuit like a dead one. Whether an error means "this index does not exist" is decided here
only, by :func:`classify_error`.

``redis.asyncio`` connections belong to the event loop that opened them, so each running loop
gets its own async client, opened on first use and closed by :meth:`RedisCore.aclose`.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Awaitable, Callable
from typing import Any, Literal, TypeVar

from semcache.backends.breaker import BreakerParams, CircuitBreaker
from semcache.backends.redis.connection import (
    RedisConnection,
    check_url,
    make_async_client,
    make_client,
    redact,
)
from semcache.errors import (
    BackendError,
    BackendUnavailableError,
    ConfigurationError,
    MissingDependencyError,
)

__all__ = [
    "ErrorKind",
    "RedisCore",
    "classify_error",
    "is_existing_index",
    "is_missing_index",
    "mapped_error",
]

T = TypeVar("T")

ErrorKind = Literal["unavailable", "missing_index", "error"]

# Every wording of "no such index" across query engine versions (and redisvl's wrappers).
_MISSING_INDEX = ("unknown index name", "no such index", "index not found")

#: How many keys one pipelined delete of :meth:`RedisCore.drop` handles.
_BATCH = 500


def classify_error(error: BaseException) -> ErrorKind:
    """What a redis / redisvl exception means for the caller (walks the ``__cause__`` chain)."""
    import redis.exceptions as rex

    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, rex.ConnectionError | rex.TimeoutError | OSError):
            return "unavailable"
        if isinstance(seen, rex.ResponseError) and any(
            s in str(seen).lower() for s in _MISSING_INDEX
        ):
            return "missing_index"
        seen = seen.__cause__
    return "error"


def is_missing_index(error: BaseException) -> bool:
    """Whether ``error`` says the search index does not exist (and nothing else)."""
    return classify_error(error) == "missing_index"


def is_existing_index(error: BaseException) -> bool:
    """Whether ``error`` refused to create an index because one of that name exists already."""
    seen: BaseException | None = error
    while seen is not None:
        if "index already exists" in str(seen).lower():
            return True
        seen = seen.__cause__
    return False


def mapped_error(where: str, what: str, error: BaseException, kind: ErrorKind) -> BackendError:
    """The semcache error raised for a foreign ``error`` of ``kind``."""
    if kind == "unavailable":
        return BackendUnavailableError(f"{where}: {what} failed: {error}")
    return BackendError(f"{where}: {what} failed: {type(error).__name__}: {error}")


class RedisCore:
    """A Redis client behind a circuit breaker, with per-event-loop async clients. Thread-safe.

    Args:
        url: ``redis://[[user]:password@]host:port/db``, ``rediss://`` for TLS, or ``unix://``;
            the clients are built with ``connection``'s timeouts.
        client: a ready ``redis.Redis`` (bytes responses) instead of ``url``; not closed by us.
        async_client: with ``client``, a ready ``redis.asyncio.Redis`` for async calls.
        connection: timeouts and pool size (with ``url``).
        breaker: when to stop calling an unreachable Redis, and for how long.
        label: what is stored there, for messages (``"Redis cache 'x'"``).
        errors: foreign exception types to map besides redis's own and ``OSError``.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        client: Any = None,
        async_client: Any = None,
        connection: RedisConnection | None = None,
        breaker: BreakerParams | None = None,
        label: str = "Redis",
        errors: tuple[type[BaseException], ...] = (),
    ) -> None:
        try:
            import redis
        except ImportError:
            raise MissingDependencyError("redis", "redis") from None
        if (url is None) == (client is None):
            raise ConfigurationError(f"give {label} exactly one of url= or client=")
        if url is not None:
            check_url(url)
        self.connection = connection or RedisConnection()
        self.where = f"{label} at {redact(url) if url else 'the given client'}"
        self.breaker = CircuitBreaker(breaker, name=self.where)
        self._errors: tuple[type[BaseException], ...] = (
            redis.exceptions.RedisError,
            OSError,
            *errors,
        )
        self._url = url
        self._owns_client = client is None
        self._client = make_client(url, self.connection) if url is not None else client
        self._given_async = async_client
        self._aclients: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()

    @property
    def client(self) -> Any:
        """The ``redis.Redis`` client."""
        return self._client

    def run(
        self,
        what: str,
        fn: Callable[[], T],
        *,
        recreate: Callable[[], None] | None = None,
        timed: bool = True,
    ) -> T:
        """``fn()`` through the breaker, with errors mapped; ``what`` names it in messages.

        With ``recreate``, an "index missing" error calls it once and retries ``fn``. Bulk work
        (ingest, sweeps, drops) passes ``timed=False``: its duration says nothing of health.
        """
        for attempt in (0, 1):
            admitted = self.breaker.before_call()
            started = admitted if timed else None
            try:
                result = fn()
            except self._errors as e:
                kind = self._settle(e, started)
                if kind == "missing_index" and recreate is not None and attempt == 0:
                    recreate()
                    continue
                raise mapped_error(self.where, what, e, kind) from e
            self.breaker.record_success(started)
            return result
        raise AssertionError("unreachable")

    async def arun(
        self,
        what: str,
        call: Callable[[], Awaitable[T]],
        *,
        recreate: Callable[[], Awaitable[None]] | None = None,
        timed: bool = True,
    ) -> T:
        """:meth:`run`, awaiting ``call()``: the same breaker and error mapping.

        A call cancelled (e.g. by a lookup's budget) after ``slow_call_seconds`` counts as slow.
        """
        for attempt in (0, 1):
            admitted = self.breaker.before_call()
            started = admitted if timed else None
            try:
                result = await call()
            except self._errors as e:
                kind = self._settle(e, started)
                if kind == "missing_index" and recreate is not None and attempt == 0:
                    await recreate()
                    continue
                raise mapped_error(self.where, what, e, kind) from e
            except asyncio.CancelledError:
                if started is not None:
                    self.breaker.record_abandoned(started)
                raise
            self.breaker.record_success(started)
            return result
        raise AssertionError("unreachable")

    def _settle(self, error: BaseException, started: float | None) -> ErrorKind:
        """Tell the breaker whether Redis answered (and how fast), and say what ``error`` means."""
        kind = classify_error(error)
        if kind == "unavailable":
            self.breaker.record_failure()
        else:
            self.breaker.record_success(started)
        return kind

    # -- async clients -------------------------------------------------------------------------

    def aclient(self) -> Any:
        """The running event loop's ``redis.asyncio`` client, opened on first use."""
        loop = asyncio.get_running_loop()
        client = self._aclients.get(loop)
        if client is None:
            if self._given_async is not None:
                client = self._given_async
            elif self._url is not None:
                client = make_async_client(self._url, self.connection)
            else:
                raise ConfigurationError(
                    f"{self.where}: a ready client= needs async_client= for async calls"
                )
            client = self._aclients.setdefault(loop, client)
        return client

    def has_aclient(self) -> bool:
        """Whether the running event loop has opened its async client."""
        return asyncio.get_running_loop() in self._aclients

    # -- administration ------------------------------------------------------------------------

    def drop(self, index: str, match: str) -> int:
        """Drop a search index (if it exists) and delete the keys matching a SCAN pattern."""
        client = self._client

        def run() -> int:
            try:
                client.execute_command("FT.DROPINDEX", index)
            except self._errors as e:
                if not is_missing_index(e):
                    raise
            keys = list(client.scan_iter(match=match, count=1000))
            for start in range(0, len(keys), _BATCH):
                pipe = client.pipeline(transaction=False)
                for key in keys[start : start + _BATCH]:
                    pipe.delete(key)  # one key per command: cluster-safe
                pipe.execute()
            return len(keys)

        return self.run("drop", run, timed=False)

    async def adrop(self, index: str, match: str) -> int:
        """:meth:`drop`, awaiting this event loop's client."""
        client = self.aclient()

        async def run() -> int:
            try:
                await client.execute_command("FT.DROPINDEX", index)
            except self._errors as e:
                if not is_missing_index(e):
                    raise
            keys = [key async for key in client.scan_iter(match=match, count=1000)]
            for start in range(0, len(keys), _BATCH):
                pipe = client.pipeline(transaction=False)
                for key in keys[start : start + _BATCH]:
                    pipe.delete(key)
                await pipe.execute()
            return len(keys)

        return await self.arun("drop", run, timed=False)

    async def aclose(self) -> None:
        """Close the running event loop's async client (if ours)."""
        client = self._aclients.pop(asyncio.get_running_loop(), None)
        if client is not None and self._given_async is None:
            await client.aclose()

    def close(self) -> None:
        """Close the sync client (if ours); other loops' async clients are forgotten."""
        self._aclients.clear()
        if self._owns_client:
            self._client.close()

    def __repr__(self) -> str:
        return f"RedisCore({self.where})"
