"""The async half of :class:`~semcache.backends.redis.RedisBackend`: I/O shells only.

Each method mirrors its sync twin in :mod:`.backend`, awaiting the running event loop's
``redis.asyncio`` client (from the :class:`~.core.RedisCore`) instead of calling ``redis.Redis``;
query building, parsing, plan choice and queued commands are the pure functions of
:mod:`.codec`, :mod:`.queries` and :mod:`.ranking`, and the breaker and error mapping are the
core's. Schema setup stays sync (at
``bind``; a vanished index is recreated in a worker thread).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any, TypeVar

from semcache.backends.base import EntryPage, check_limit, check_vector
from semcache.backends.redis import codec, labels, queries, ranking
from semcache.backends.redis import schema as rs

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray

    from semcache.backends.eviction import Eviction
    from semcache.backends.redis.core import RedisCore
    from semcache.backends.vector_index import HnswParams
    from semcache.models import Candidate, Entry, NewEntry
    from semcache.selector import Selector

__all__ = ["AsyncRedisOps"]

T = TypeVar("T")


class AsyncRedisOps:
    """The :class:`~semcache.backends.base.AsyncBackend` methods of one bound Redis cache.

    Args:
        core: the connection, breaker and error mapping (shared with the sync methods).
        keys: the cache's key names.
        schema: the redisvl ``IndexSchema`` of its search index.
        dim: the vectors' dimension.
        hnsw: the graph settings (EF_RUNTIME from ``hnsw.ef_for`` the index size).
        sizes: scope sizes remembered for the query plan (shared with the sync methods).
        ensure_schema: the sync index setup, run in a worker thread when the index vanished.
        eviction: the eviction policy (as the sync methods').
    """

    def __init__(
        self,
        core: RedisCore,
        keys: rs.RedisKeys,
        *,
        schema: Any,
        dim: int,
        hnsw: HnswParams,
        sizes: queries.ScopeSizes,
        ensure_schema: Callable[[], None],
        eviction: Eviction,
    ) -> None:
        self.core, self.keys, self.schema, self.eviction = core, keys, schema, eviction
        self.dim, self.hnsw, self.sizes = dim, hnsw, sizes
        self._ensure_schema = ensure_schema

    # -- plumbing ------------------------------------------------------------------------------

    def _index(self) -> Any:
        """A redisvl async index over this event loop's client (about 2 us to build)."""
        from redisvl.index import AsyncSearchIndex

        return AsyncSearchIndex(self.schema, redis_client=self.core.aclient(), owns_client=False)

    async def _recreate(self) -> None:
        await asyncio.to_thread(self._ensure_schema)

    async def _arun(self, what: str, call: Callable[[], Awaitable[T]], *, timed: bool = True) -> T:
        """Await Redis through the core; recreate a vanished index once."""
        return await self.core.arun(what, call, recreate=self._recreate, timed=timed)

    # -- reads ---------------------------------------------------------------------------------

    async def aget_exact(self, scope_key: str, text_key: str, now: float) -> Entry | None:
        entry = await self.aget(self.keys.entry_id(scope_key, text_key))
        return queries.live_match(entry, scope_key, text_key, now)

    async def asearch(
        self, scope_key: str, vector: NDArray[np.float32], k: int, now: float
    ) -> list[Candidate]:
        vec = check_vector(vector, self.dim)
        if k <= 0:
            return []
        sizes = await self._asizes(scope_key)
        query = queries.knn_query(scope_key, vec, k, self.hnsw, sizes)
        index = self._index()
        docs = await self._arun("search", lambda: index.query(query))
        return queries.candidates(self.keys, docs, scope_key, now)

    async def _asizes(self, scope_key: str) -> tuple[int, int]:
        if (known := self.sizes.get(scope_key)) is not None:
            return known
        client, index = self.core.aclient(), self._index()
        query = queries.count_query(scope_key)
        scope_size = int(await self._arun("count", lambda: index.query(query)))
        total = int(await self._arun("count", lambda: client.zcard(self.keys.lru)))
        return self.sizes.remember(scope_key, scope_size, total)

    async def aget(self, entry_id: str) -> Entry | None:
        client = self.core.aclient()
        key = self.keys.entry_key(entry_id)
        fields = await self._arun("read", lambda: client.hgetall(key))
        return codec.parse_entry(entry_id, fields) if fields else None

    async def acount(self) -> int:
        index = self._index()
        return int(await self._arun("count", lambda: index.query(queries.count_query())))

    # -- writes --------------------------------------------------------------------------------

    async def aput(self, entry: NewEntry, vector: NDArray[np.float32]) -> Entry:
        rows = codec.entry_rows(self.keys, [entry], [vector], self.dim)
        await self._arun("store", lambda: self._awrite(rows))
        return codec.stored_entries(rows)[0]

    async def _awrite(self, rows: list[codec.Row]) -> None:
        client = self.core.aclient()
        clock = await self._aeviction_clock()
        for attempt in (0, 1):
            pipe = client.pipeline(transaction=False)
            pipe = codec.queue_writes(self.keys, pipe, rows, self.eviction, clock)
            results = await pipe.execute(raise_on_error=False)
            if not codec.reload_script(results, may_retry=attempt == 0):
                return
            await client.script_load(codec.PUT_LUA)  # not loaded yet, or Redis restarted

    async def _aeviction_clock(self) -> float:
        if not self.eviction.uses_clock:
            return 0.0
        return ranking.clock_value(await self.core.aclient().zscore(self.keys.clock, ranking.CLOCK))

    async def atouch(self, entry_id: str, now: float) -> None:
        client, keys = self.core.aclient(), self.keys

        async def run() -> None:
            for attempt in (0, 1):
                pipe = ranking.queue_touch(
                    keys, client.pipeline(transaction=False), entry_id, self.eviction, now
                )
                results = await pipe.execute(raise_on_error=False)
                if not codec.reload_script(results, may_retry=attempt == 0):
                    break
                await client.script_load(ranking.TOUCH_LUA)  # not loaded yet, or Redis restarted
            if (score := ranking.touch_score(self.eviction, results, now)) is not None:
                await client.zadd(keys.lru, {entry_id: score}, xx=True)

        await self._arun("touch", run)

    async def adelete(self, entry_ids: Iterable[str]) -> int:
        return await self._adelete_ids(list(dict.fromkeys(entry_ids)), timed=True)

    async def _adelete_ids(self, ids: list[str], *, timed: bool) -> int:
        step = ranking.DELETE_BATCH
        batches = [ids[i : i + step] for i in range(0, len(ids), step)]
        return sum([await self._adelete_batch(batch, timed) for batch in batches])

    async def _adelete_batch(self, ids: list[str], timed: bool = True) -> int:
        if not ids:
            return 0
        client = self.core.aclient()

        async def run() -> int:
            pipe = ranking.queue_deletes(self.keys, client.pipeline(transaction=False), ids)
            return int(sum((await pipe.execute())[:-1]))

        return await self._arun("delete", run, timed=timed)

    async def aevict(self, max_entries: int) -> int:
        ranking.check_max_entries(max_entries)
        client, lru = self.core.aclient(), self.keys.lru
        deleted = 0
        while True:
            size = int(await self._arun("evict", lambda: client.zcard(lru)))
            if (n := ranking.evict_batch(size, max_entries, ranking.BATCH)) == 0:
                return deleted
            popped = await self._arun("evict", lambda: client.zpopmin(lru, n))
            if not popped:
                return deleted
            if (clock := ranking.raised_clock(self.eviction, popped)) is not None:
                await self._arun("evict", lambda: client.zadd(self.keys.clock, clock, gt=True))
            victims = [codec.as_text(member) for member, _ in popped]
            deleted += await self._adelete_ids(victims, timed=True)

    async def _amatching_ids(self, filter_expression: Any) -> list[str]:
        index = self._index()
        query = queries.ids_query(filter_expression, ranking.BATCH)
        result = await self._arun(
            "scan", lambda: index.search(query.query, query_params=query.params)
        )
        return queries.result_ids(self.keys, result)

    async def _adelete_matching(self, filter_expression: Any) -> int:
        total = 0
        while ids := await self._amatching_ids(filter_expression):
            removed = await self._adelete_ids(ids, timed=False)
            total += removed
            if removed == 0:
                break  # the index lags behind deletions; do not spin
        return total

    async def apurge_expired(self, now: float) -> int:
        total = await self._adelete_matching(queries.expired_filter(now))
        await self._asweep_lru()
        return total

    async def _asweep_lru(self) -> None:
        client, keys = self.core.aclient(), self.keys

        async def run() -> None:
            cursor = 0
            while True:
                cursor, members = await client.zscan(keys.lru, cursor, count=ranking.BATCH)
                if members:
                    ids = [codec.as_text(m) for m, _ in members]
                    pipe = client.pipeline(transaction=False)
                    for entry_id in ids:
                        pipe.exists(keys.entry_key(entry_id))
                    exists = await pipe.execute()
                    if gone := [i for i, e in zip(ids, exists, strict=True) if not e]:
                        await client.zrem(keys.lru, *gone)
                if cursor == 0:
                    return

        await self._arun("sweep", run, timed=False)

    async def aclear(self, scope_key: str | None = None) -> int:
        client = self.core.aclient()
        total = await self._adelete_matching(queries.scope_filter(scope_key))
        if scope_key is None:
            await self._arun("clear", lambda: client.delete(self.keys.lru))
        return total

    async def adelete_where(self, selector: Selector) -> int:
        return await self._adelete_matching(labels.selector_filter(selector))

    async def aentries(
        self, selector: Selector, cursor: str | None, limit: int, vectors: bool
    ) -> EntryPage:
        check_limit(limit)
        start = queries.scan_cursor(cursor)
        client, match = self.core.aclient(), self.keys.entry_prefix + "*"

        async def run() -> tuple[int, list[Any], list[Any]]:
            after, names = await client.scan(start, match=match, count=limit)
            pipe = client.pipeline(transaction=False)
            for name in names:
                pipe.hgetall(name)
            return int(after), names, (await pipe.execute()) if names else []

        after, names, hashes = await self._arun("list", run, timed=False)
        found, vecs = queries.listed(self.keys, names, hashes, selector, vectors)
        return EntryPage(tuple(found), tuple(vecs), None if after == 0 else str(after))
