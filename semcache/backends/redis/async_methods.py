"""The async half of :class:`~semcache.backends.redis.RedisBackend`: I/O shells only.

Each method mirrors its sync twin in :mod:`.redis` line for line, awaiting a ``redis.asyncio``
client instead of calling ``redis.Redis``; query building, parsing, plan choice, error
classification and the circuit breaker are the same objects and pure functions
(:mod:`.redis_schema`, :mod:`.breaker`). Schema setup stays sync (``bind`` at construction; a
vanished index is recreated in a worker thread).

``redis.asyncio`` connections belong to the event loop that opened them, so each running loop
gets its own client, opened on first use and closed by :meth:`AsyncRedisMethods.aclose`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any, TypeVar

from semcache.backends.base import check_vector
from semcache.backends.redis import schema as rs
from semcache.backends.redis.connection import make_async_client
from semcache.errors import ConfigurationError

if TYPE_CHECKING:
    import weakref

    import numpy as np
    from numpy.typing import NDArray

    from semcache.backends.breaker import CircuitBreaker
    from semcache.backends.redis.connection import RedisConnection
    from semcache.backends.vector_index import HnswParams
    from semcache.models import Candidate, Entry, NewEntry

__all__ = ["AsyncRedisMethods"]

T = TypeVar("T")


class AsyncRedisMethods:
    """The :class:`~semcache.backends.base.AsyncBackend` methods of ``RedisBackend``."""

    # State and shared (non-I/O or sync) helpers, defined by RedisBackend.
    keys: rs.RedisKeys
    hnsw: HnswParams
    connection: RedisConnection
    _breaker: CircuitBreaker
    _errors: tuple[type[BaseException], ...]
    _url: str | None
    _async_client: Any
    _async: weakref.WeakKeyDictionary[Any, tuple[Any, Any]]
    _put_sha: str | None
    _require_index: Callable[[], Any]
    _dim: Callable[[], int]
    _on_error: Callable[..., None]
    _ensure_schema: Callable[[], None]
    _known_sizes: Callable[[str], tuple[int, int] | None]
    _remember_sizes: Callable[[str, int, int], tuple[int, int]]
    _queue_writes: Callable[[Any, list[rs.Row]], Any]
    _queue_deletes: Callable[[Any, list[str]], Any]
    close: Callable[[], None]

    # -- plumbing ------------------------------------------------------------------------------

    def _aio(self) -> tuple[Any, Any]:
        """This event loop's ``redis.asyncio`` client and redisvl async index."""
        from redisvl.index import AsyncSearchIndex

        index = self._require_index()
        loop = asyncio.get_running_loop()
        pair = self._async.get(loop)
        if pair is None:
            if self._async_client is not None:
                client = self._async_client
            elif self._url is not None:
                client = make_async_client(self._url, self.connection)
            else:
                raise ConfigurationError(
                    "RedisBackend(client=...) needs async_client= for its async methods"
                )
            aindex = AsyncSearchIndex(index.schema, redis_client=client, owns_client=False)
            pair = self._async.setdefault(loop, (client, aindex))
        return pair

    async def _arun(
        self, what: str, call: Callable[[], Awaitable[T]], *, recreate: bool = True
    ) -> T:
        """:meth:`_run`, awaiting: the same breaker, error mapping and index recreation."""
        for attempt in (0, 1):
            self._breaker.before_call()
            try:
                result = await call()
            except self._errors as e:
                self._on_error(what, e, may_recreate=recreate and attempt == 0)
                await asyncio.to_thread(self._ensure_schema)
                continue
            self._breaker.record_success()
            return result
        raise AssertionError("unreachable")

    async def aclose(self) -> None:
        """Close this event loop's async connections (if ours), then the backend."""
        pair = self._async.pop(asyncio.get_running_loop(), None)
        if pair is not None and self._async_client is None:
            await pair[0].aclose()
        self.close()

    # -- reads ---------------------------------------------------------------------------------

    async def aget_exact(self, scope_key: str, text_key: str, now: float) -> Entry | None:
        self._require_index()
        entry = await self.aget(self.keys.entry_id(scope_key, text_key))
        return rs.live_match(entry, scope_key, text_key, now)

    async def asearch(
        self, scope_key: str, vector: NDArray[np.float32], k: int, now: float
    ) -> list[Candidate]:
        _, index = self._aio()
        vec = check_vector(vector, self._dim())
        if k <= 0:
            return []
        sizes = await self._asizes(scope_key)
        query = rs.knn_query(scope_key, vec, k, self.hnsw.ef_search, sizes)
        docs = await self._arun("search", lambda: index.query(query))
        return rs.candidates(self.keys, docs, scope_key, now)

    async def _asizes(self, scope_key: str) -> tuple[int, int]:
        if (known := self._known_sizes(scope_key)) is not None:
            return known
        client, index = self._aio()
        query = rs.count_query(scope_key)
        scope_size = int(await self._arun("count", lambda: index.query(query)))
        total = int(await self._arun("count", lambda: client.zcard(self.keys.lru)))
        return self._remember_sizes(scope_key, scope_size, total)

    async def aget(self, entry_id: str) -> Entry | None:
        client, _ = self._aio()
        key = self.keys.entry_key(entry_id)
        fields = await self._arun("read", lambda: client.hgetall(key))
        return rs.parse_entry(entry_id, fields) if fields else None

    async def acount(self) -> int:
        _, index = self._aio()
        return int(await self._arun("count", lambda: index.query(rs.count_query())))

    # -- writes --------------------------------------------------------------------------------

    async def aput(self, entry: NewEntry, vector: NDArray[np.float32]) -> Entry:
        rows = rs.entry_rows(self.keys, [entry], [vector], self._dim())
        await self._arun("store", lambda: self._awrite(rows))
        return rs.stored_entries(rows)[0]

    async def _awrite(self, rows: list[rs.Row]) -> None:
        client, _ = self._aio()
        if self._put_sha is None:
            self._put_sha = await client.script_load(rs.PUT_LUA)
        for attempt in (0, 1):
            pipe = self._queue_writes(client.pipeline(transaction=False), rows)
            results = await pipe.execute(raise_on_error=False)
            if not rs.reload_script(results, may_retry=attempt == 0):
                return
            self._put_sha = await client.script_load(rs.PUT_LUA)  # Redis restarted

    async def atouch(self, entry_id: str, now: float) -> None:
        client, _ = self._aio()
        await self._arun("touch", lambda: client.zadd(self.keys.lru, {entry_id: now}, xx=True))

    async def adelete(self, entry_ids: Iterable[str]) -> int:
        ids = list(dict.fromkeys(entry_ids))
        batches = [ids[i : i + rs.BATCH] for i in range(0, len(ids), rs.BATCH)]
        return sum([await self._adelete_batch(batch) for batch in batches])

    async def _adelete_batch(self, ids: list[str]) -> int:
        if not ids:
            return 0
        client, _ = self._aio()

        async def run() -> int:
            pipe = self._queue_deletes(client.pipeline(transaction=False), ids)
            return int(sum((await pipe.execute())[:-1]))

        return await self._arun("delete", run)

    async def aevict(self, max_entries: int) -> int:
        rs.check_max_entries(max_entries)
        client, _ = self._aio()
        lru = self.keys.lru
        deleted = 0
        while True:
            size = int(await self._arun("evict", lambda: client.zcard(lru)))
            if (n := rs.evict_batch(size, max_entries, rs.BATCH)) == 0:
                return deleted
            popped = await self._arun("evict", lambda: client.zpopmin(lru, n))
            if not popped:
                return deleted
            deleted += await self._adelete_batch([rs.as_text(member) for member, _ in popped])

    async def _amatching_ids(self, filter_expression: Any) -> list[str]:
        _, index = self._aio()
        query = rs.ids_query(filter_expression, rs.BATCH)
        result = await self._arun(
            "scan", lambda: index.search(query.query, query_params=query.params)
        )
        return rs.result_ids(self.keys, result)

    async def _adelete_matching(self, filter_expression: Any) -> int:
        total = 0
        while ids := await self._amatching_ids(filter_expression):
            removed = await self._adelete_batch(ids)
            total += removed
            if removed == 0:
                break  # the index lags behind deletions; do not spin
        return total

    async def apurge_expired(self, now: float) -> int:
        total = await self._adelete_matching(rs.expired_filter(now))
        await self._asweep_lru()
        return total

    async def _asweep_lru(self) -> None:
        client, _ = self._aio()

        async def run() -> None:
            cursor = 0
            while True:
                cursor, members = await client.zscan(self.keys.lru, cursor, count=rs.BATCH)
                if members:
                    ids = [rs.as_text(m) for m, _ in members]
                    pipe = client.pipeline(transaction=False)
                    for entry_id in ids:
                        pipe.exists(self.keys.entry_key(entry_id))
                    exists = await pipe.execute()
                    if gone := [i for i, e in zip(ids, exists, strict=True) if not e]:
                        await client.zrem(self.keys.lru, *gone)
                if cursor == 0:
                    return

        await self._arun("sweep", run)

    async def aclear(self, scope_key: str | None = None) -> int:
        client, _ = self._aio()
        total = await self._adelete_matching(rs.scope_filter(scope_key))
        if scope_key is None:
            await self._arun("clear", lambda: client.delete(self.keys.lru))
        return total
