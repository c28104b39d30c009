"""The Redis backend: HNSW on the Redis Query Engine (through redisvl), shared by many replicas.

Each entry is one hash (JSON payload, float32 vector) under ``semcache:<name>:e:``; one search
index per cache holds an HNSW vector field (cosine distance, converted to cosine similarity here),
the scope and the normalised-text key as TAG fields, and the expiry time. A KNN query is
pre-filtered to one scope inside the engine. TTL is the key's own expiry; the eviction order
lives in a sorted set (entry id -> priority, see :mod:`semcache.backends.eviction`). Key names:
:mod:`.schema`; decisions: :mod:`.codec` (entry fields), :mod:`.queries`, :mod:`.ranking`.

Eviction, and what is atomic: a use (``touch``) counts itself with one script on the entry's
own key (so nothing is created for an entry gone) and reads GDSF's clock in the same round trip,
then sets the score with ``ZADD XX`` (LRU sets it in that first round trip). Two uses of one
entry at once may leave the score of one use fewer until its next use; a use racing its
eviction never brings the id back. Eviction pops ids with ``ZPOPMIN`` (atomic: replicas evict
distinct entries) and raises the clock with ``ZADD GT`` (it never goes back). A store reads the
clock, then writes: an eviction in between leaves the new entry ranked slightly low. Costs: four
small hash fields per entry (~40 bytes) and two keys per cache; a use is two round trips with
GDSF, one with LRU. Every replica of a cache must use the same policy: binding with another one
re-ranks every entry (O(entries), once).

Every command goes through a :class:`~.core.RedisCore` (socket timeouts, a circuit breaker that
turns an outage into an immediate :class:`BackendUnavailableError`, error mapping); the async
methods (:mod:`.async_methods`, a ``redis.asyncio`` client per event loop) share it, and every
decision, with these sync ones.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from semcache.backends.base import EntryPage, check_limit, check_vector
from semcache.backends.breaker import BreakerParams, CircuitBreaker
from semcache.backends.eviction import GDSF, Eviction, check_eviction
from semcache.backends.redis import codec, labels, queries, ranking
from semcache.backends.redis import schema as rs
from semcache.backends.redis.async_methods import AsyncRedisOps
from semcache.backends.redis.connection import RedisConnection
from semcache.backends.redis.core import RedisCore, is_existing_index
from semcache.backends.vector_index import HnswParams
from semcache.errors import BackendError, ConfigurationError, MissingDependencyError
from semcache.models import Candidate, Entry, ModelFingerprint, NewEntry, check_fingerprint

if TYPE_CHECKING:
    from numpy.typing import NDArray

    from semcache.selector import Selector

__all__ = ["BreakerParams", "RedisBackend", "RedisConnection"]

T = TypeVar("T")


class RedisBackend:
    """Entries in Redis, searched with HNSW by the Redis Query Engine. Thread-safe.

    Implements :class:`Backend` and :class:`AsyncBackend` (``aget_exact``, ``asearch``...).
    Close with :meth:`aclose` in the event loop that used the async methods, else :meth:`close`.

    Args:
        url: ``redis://[[user]:password@]host:port/db``, ``rediss://`` for TLS, or ``unix://``.
        name: the cache's namespace; its keys all start with ``semcache:<name>:``.
        hnsw: graph settings (``m``, ``ef_construction``; ``ef_search`` = EF_RUNTIME, by
            default from the number of entries in the cache, which share one graph).
        connection: timeouts and pool size.
        breaker: when to stop calling an unreachable Redis, and for how long.
        client: a ready ``redis.Redis`` (bytes responses) instead of ``url``; not closed by us.
        async_client: with ``client``, a ready ``redis.asyncio.Redis`` for the async methods.
        eviction: which entries :meth:`evict` deletes first: ``GDSF()`` (default) or ``LRU()``
            (:mod:`semcache.backends.eviction`); a cache ranked by another policy (or written
            before semcache had this choice) is re-ranked once at :meth:`bind`.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        name: str = "default",
        hnsw: HnswParams | None = None,
        connection: RedisConnection | None = None,
        breaker: BreakerParams | None = None,
        client: Any = None,
        async_client: Any = None,
        eviction: Eviction | None = None,
    ) -> None:
        self.eviction: Eviction = GDSF() if eviction is None else check_eviction(eviction)
        try:
            import redisvl.exceptions
        except ImportError:
            raise MissingDependencyError("redisvl", "redis") from None
        self.keys = rs.RedisKeys(name)
        self.hnsw = hnsw or HnswParams()
        self._core = RedisCore(
            url,
            client=client,
            async_client=async_client,
            connection=connection,
            breaker=breaker,
            label=f"Redis cache {name!r}",
            errors=(redisvl.exceptions.RedisVLError,),
        )
        self.connection = self._core.connection
        self._lock = threading.Lock()
        self._fingerprint: ModelFingerprint | None = None
        self._index: Any = None  # the redisvl SearchIndex, once bound
        self._aops: AsyncRedisOps | None = None
        self._sizes = queries.ScopeSizes()
        self._closed = False

    # -- plumbing ------------------------------------------------------------------------------

    @property
    def client(self) -> Any:
        """The ``redis.Redis`` client (for inspection and administration)."""
        return self._core.client

    @property
    def core(self) -> RedisCore:
        """The client, circuit breaker and error mapping this backend runs every command through."""
        return self._core

    @property
    def breaker(self) -> CircuitBreaker:
        return self._core.breaker

    def _run(self, what: str, fn: Callable[[], T], *, timed: bool = True) -> T:
        """Call Redis through the core; recreate a vanished index once."""
        return self._core.run(what, fn, recreate=self._ensure_schema, timed=timed)

    def _require_index(self) -> Any:
        if self._closed:
            raise BackendError("backend is closed")
        if self._index is None:
            raise ConfigurationError("backend is not bound to an embedder; call bind() first")
        return self._index

    def _dim(self) -> int:
        self._require_index()
        assert self._fingerprint is not None
        return self._fingerprint.dim

    def _async_ops(self) -> AsyncRedisOps:
        self._require_index()
        assert self._aops is not None
        return self._aops

    # -- binding -------------------------------------------------------------------------------

    @property
    def fingerprint(self) -> ModelFingerprint | None:
        return self._fingerprint

    def bind(self, fingerprint: ModelFingerprint) -> None:
        from redisvl.index import SearchIndex
        from redisvl.schema import IndexSchema

        with self._lock:
            if self._fingerprint is not None:
                check_fingerprint(
                    self._fingerprint, fingerprint, self._core.where, "open another backend for it"
                )
                return
            schema = IndexSchema.from_dict(rs.schema_dict(self.keys, fingerprint.dim, self.hnsw))
            index = SearchIndex(schema, redis_client=self.client, owns_client=False)
            self._fingerprint, self._index = fingerprint, index
            try:
                self._ensure_schema()
                self._rerank()
            except BaseException:
                self._fingerprint, self._index = None, None
                raise
            self._aops = AsyncRedisOps(
                self._core,
                self.keys,
                schema=schema,
                dim=fingerprint.dim,
                hnsw=self.hnsw,
                sizes=self._sizes,
                ensure_schema=self._ensure_schema,
                eviction=self.eviction,
            )

    def _ensure_schema(self) -> None:
        """Check (or write) the fingerprint record, then check (or create) the index."""
        from redis.exceptions import RedisError
        from redisvl.exceptions import RedisSearchError
        from redisvl.index import SearchIndex

        fp, index, client, where = self._fingerprint, self._index, self.client, self._core.where
        assert fp is not None
        assert index is not None

        def check_or_create() -> None:
            stored = client.get(self.keys.meta)
            if stored is not None:
                rs.check_meta(stored, fp, where)
            if index.exists():
                existing = SearchIndex.from_existing(index.name, redis_client=client).schema
                rs.check_index_dim(existing.to_dict(), fp.dim, where)
                for field in labels.missing_fields(existing.to_dict()):  # an older index
                    try:
                        client.execute_command(*labels.alter_args(index.name, field))
                    except RedisError as e:
                        if "duplicate" not in str(e).lower():  # else another replica added it
                            raise
            else:
                try:
                    index.create(overwrite=False)
                except RedisSearchError as e:
                    if not is_existing_index(e):  # else another replica created it just now
                        raise
            if stored is None and not client.set(self.keys.meta, rs.meta_record(fp), nx=True):
                rs.check_meta(client.get(self.keys.meta), fp, where)

        self._core.run("index setup", check_or_create, timed=False)

    def _rerank(self) -> None:
        """If the cache's priorities were computed by another policy (an old cache: by LRU),
        recompute every entry's (and fill in the counts an older semcache did not keep)."""
        client, keys, eviction, dim = self.client, self.keys, self.eviction, self._dim()

        def run() -> None:
            if ranking.recorded_eviction(client.get(keys.eviction)) == eviction.name:
                return
            client.delete(keys.clock)
            cursor = 0
            while True:
                cursor, members = client.zscan(keys.lru, cursor, count=ranking.BATCH)
                ids = [codec.as_text(m) for m, _ in members]
                pipe = client.pipeline(transaction=False)
                for entry_id in ids:
                    pipe.hmget(keys.entry_key(entry_id), ranking.RANK_READ)
                writes = client.pipeline(transaction=False)
                for entry_id, values in zip(ids, pipe.execute(), strict=True):
                    if (fields := ranking.read_rank(values)) is None:
                        continue  # expired: purge_expired drops the id
                    if missing := ranking.rank_fields(fields, dim):
                        flat = [x for kv in missing.items() for x in kv]
                        writes.eval(ranking.FILL_LUA, 1, keys.entry_key(entry_id), *flat)
                    score = ranking.rank_of(eviction, fields, dim, 0.0)
                    writes.zadd(keys.lru, {entry_id: score}, xx=True)
                writes.execute()
                if cursor == 0:
                    break
            client.set(keys.eviction, eviction.name)

        self._core.run("re-rank for eviction", run, timed=False)

    # -- reads ---------------------------------------------------------------------------------

    def get_exact(self, scope_key: str, text_key: str, now: float) -> Entry | None:
        self._require_index()
        entry = self.get(self.keys.entry_id(scope_key, text_key))
        return queries.live_match(entry, scope_key, text_key, now)

    def search(
        self, scope_key: str, vector: NDArray[np.float32], k: int, now: float
    ) -> list[Candidate]:
        index = self._require_index()
        vec = check_vector(vector, self._dim())
        if k <= 0:
            return []
        query = queries.knn_query(scope_key, vec, k, self.hnsw, self._scope_sizes(scope_key))
        docs = self._run("search", lambda: index.query(query))
        return queries.candidates(self.keys, docs, scope_key, now)

    def plan(self, scope_key: str, k: int) -> str:
        """The plan a search for ``k`` in this scope uses now: ``"ADHOC_BF"`` or ``"BATCHES"``."""
        scope_size, total = self._scope_sizes(scope_key)
        return queries.hybrid_policy(scope_size, total, k, self.hnsw.ef_for(total))

    def _scope_sizes(self, scope_key: str) -> tuple[int, int]:
        """Entries in the scope and in the cache, re-counted at most every few seconds."""
        if (known := self._sizes.get(scope_key)) is not None:
            return known
        index = self._require_index()
        query = queries.count_query(scope_key)
        scope_size = int(self._run("count", lambda: index.query(query)))
        total = int(self._run("count", lambda: self.client.zcard(self.keys.lru)))
        return self._sizes.remember(scope_key, scope_size, total)

    def get(self, entry_id: str) -> Entry | None:
        key = self.keys.entry_key(entry_id)
        fields = self._run("read", lambda: self.client.hgetall(key))
        return codec.parse_entry(entry_id, fields) if fields else None

    def count(self) -> int:
        index = self._require_index()
        return int(self._run("count", lambda: index.query(queries.count_query())))

    # -- writes --------------------------------------------------------------------------------

    def put(self, entry: NewEntry, vector: NDArray[np.float32]) -> Entry:
        return self.put_many([entry], [vector])[0]

    def put_many(
        self, entries: Sequence[NewEntry], vectors: Sequence[NDArray[np.float32]]
    ) -> list[Entry]:
        """Store several entries in one pipelined round trip (each replaced atomically)."""
        rows = codec.entry_rows(self.keys, entries, vectors, self._dim())
        self._run("store", lambda: self._write(rows), timed=len(rows) == 1)  # bulk: untimed
        return codec.stored_entries(rows)

    def _write(self, rows: list[codec.Row]) -> None:
        client = self.client
        clock = self._eviction_clock()
        for attempt in (0, 1):
            pipe = client.pipeline(transaction=False)
            pipe = codec.queue_writes(self.keys, pipe, rows, self.eviction, clock)
            if not codec.reload_script(pipe.execute(raise_on_error=False), may_retry=attempt == 0):
                return
            client.script_load(codec.PUT_LUA)  # not loaded yet, or Redis restarted

    def _eviction_clock(self) -> float:
        """GDSF's clock (LRU has none: no round trip)."""
        if not self.eviction.uses_clock:
            return 0.0
        return ranking.clock_value(self.client.zscore(self.keys.clock, ranking.CLOCK))

    def touch(self, entry_id: str, now: float) -> None:
        """Count a use and re-rank the entry (see the module notes for what is atomic)."""
        client, keys = self.client, self.keys

        def run() -> None:
            for attempt in (0, 1):
                pipe = ranking.queue_touch(
                    keys, client.pipeline(transaction=False), entry_id, self.eviction, now
                )
                results = pipe.execute(raise_on_error=False)
                if not codec.reload_script(results, may_retry=attempt == 0):
                    break
                client.script_load(ranking.TOUCH_LUA)  # not loaded yet, or Redis restarted
            if (score := ranking.touch_score(self.eviction, results, now)) is not None:
                client.zadd(keys.lru, {entry_id: score}, xx=True)

        self._run("touch", run)

    def delete(self, entry_ids: Iterable[str]) -> int:
        return self._delete_ids(list(dict.fromkeys(entry_ids)), timed=True)

    def _delete_ids(self, ids: list[str], *, timed: bool) -> int:
        """Delete in pipelines of ``ranking.DELETE_BATCH``; bulk work (``timed=False``) is not held
        to the breaker's slow-call limit."""
        step = ranking.DELETE_BATCH
        return sum(self._delete_batch(ids[i : i + step], timed) for i in range(0, len(ids), step))

    def _delete_batch(self, ids: list[str], timed: bool = True) -> int:
        if not ids:
            return 0

        def run() -> int:
            pipe = ranking.queue_deletes(self.keys, self.client.pipeline(transaction=False), ids)
            return int(sum(pipe.execute()[:-1]))

        return self._run("delete", run, timed=timed)

    def evict(self, max_entries: int) -> int:
        """Delete the lowest-priority entries until the list holds at most ``max_entries``.

        The list is an upper bound on the live entries (expired keys leave stale ids there, and
        popping one counts as nothing deleted), so the live count ends at most ``max_entries``.
        """
        ranking.check_max_entries(max_entries)
        client, lru = self.client, self.keys.lru
        deleted = 0
        while True:
            size = self._run("evict", lambda: int(client.zcard(lru)))
            if (n := ranking.evict_batch(size, max_entries, ranking.BATCH)) == 0:
                return deleted
            popped = self._run("evict", lambda: client.zpopmin(lru, n))
            if not popped:
                return deleted
            if (clock := ranking.raised_clock(self.eviction, popped)) is not None:
                self._run("evict", lambda: client.zadd(self.keys.clock, clock, gt=True))
            victims = [codec.as_text(member) for member, _ in popped]
            deleted += self._delete_ids(victims, timed=True)

    def _matching_ids(self, filter_expression: Any) -> list[str]:
        """Up to ``ranking.BATCH`` ids of entries matching a redisvl filter (no payload)."""
        index = self._require_index()
        query = queries.ids_query(filter_expression, ranking.BATCH)
        result = self._run("scan", lambda: index.search(query.query, query_params=query.params))
        return queries.result_ids(self.keys, result)

    def _delete_matching(self, filter_expression: Any) -> int:
        total = 0
        while ids := self._matching_ids(filter_expression):
            removed = self._delete_ids(ids, timed=False)
            total += removed
            if removed == 0:
                break  # the index lags behind deletions; do not spin
        return total

    def purge_expired(self, now: float) -> int:
        """Delete entries expired at ``now`` and drop LRU ids whose keys Redis already expired."""
        total = self._delete_matching(queries.expired_filter(now))
        self._sweep_lru()
        return total

    def _sweep_lru(self) -> None:
        client, keys = self.client, self.keys

        def run() -> None:
            cursor = 0
            while True:
                cursor, members = client.zscan(keys.lru, cursor, count=ranking.BATCH)
                if members:
                    ids = [codec.as_text(m) for m, _ in members]
                    pipe = client.pipeline(transaction=False)
                    for entry_id in ids:
                        pipe.exists(keys.entry_key(entry_id))
                    gone = [i for i, e in zip(ids, pipe.execute(), strict=True) if not e]
                    if gone:
                        client.zrem(keys.lru, *gone)
                if cursor == 0:
                    return

        self._run("sweep", run, timed=False)

    def delete_where(self, selector: Selector) -> int:
        """Delete the selected entries: their hashes (so their index records) and LRU ids."""
        self._require_index()
        return self._delete_matching(labels.selector_filter(selector))

    def entries(
        self, selector: Selector, cursor: str | None = None, limit: int = 100, vectors: bool = False
    ) -> EntryPage:
        """A page of the selected entries, from a ``SCAN`` of the entry keys (``limit`` is the
        scan's ``COUNT``: a page may hold fewer, or a few more)."""
        self._require_index()
        check_limit(limit)
        start = queries.scan_cursor(cursor)
        client, match = self.client, self.keys.entry_prefix + "*"

        def run() -> tuple[int, list[Any], list[Any]]:
            after, names = client.scan(start, match=match, count=limit)
            pipe = client.pipeline(transaction=False)
            for name in names:
                pipe.hgetall(name)
            return int(after), names, pipe.execute() if names else []

        after, names, hashes = self._run("list", run, timed=False)
        found, vecs = queries.listed(self.keys, names, hashes, selector, vectors)
        return EntryPage(tuple(found), tuple(vecs), None if after == 0 else str(after))

    def stored_fingerprint(self) -> ModelFingerprint | None:
        """The embedding model recorded in Redis for this cache, or ``None`` if none is."""
        stored = self._run("read", lambda: self.client.get(self.keys.meta), timed=False)
        return None if stored is None else rs.stored_fingerprint(stored, self._core.where)

    def clear(self, scope_key: str | None = None) -> int:
        self._require_index()
        total = self._delete_matching(queries.scope_filter(scope_key))
        if scope_key is None:
            self._run("clear", lambda: self.client.delete(self.keys.lru))
        return total

    def drop(self) -> int:
        """Delete the cache from Redis: its search index and every ``semcache:<name>:*`` key.

        Returns how many keys were deleted. A bound backend stays usable: its next search
        recreates the index and the fingerprint record.
        """
        self._sizes.clear()
        return self._core.drop(self.keys.index, self.keys.base + "*")

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._core.close()  # another loop's connections: aclose() there to close them

    def __enter__(self) -> RedisBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"RedisBackend({self._core.where})"

    # -- async methods: the same decisions over this event loop's client ----------------------

    async def aget_exact(self, scope_key: str, text_key: str, now: float) -> Entry | None:
        return await self._async_ops().aget_exact(scope_key, text_key, now)

    async def asearch(
        self, scope_key: str, vector: NDArray[np.float32], k: int, now: float
    ) -> list[Candidate]:
        return await self._async_ops().asearch(scope_key, vector, k, now)

    async def aget(self, entry_id: str) -> Entry | None:
        return await self._async_ops().aget(entry_id)

    async def acount(self) -> int:
        return await self._async_ops().acount()

    async def aput(self, entry: NewEntry, vector: NDArray[np.float32]) -> Entry:
        return await self._async_ops().aput(entry, vector)

    async def atouch(self, entry_id: str, now: float) -> None:
        await self._async_ops().atouch(entry_id, now)

    async def adelete(self, entry_ids: Iterable[str]) -> int:
        return await self._async_ops().adelete(entry_ids)

    async def aevict(self, max_entries: int) -> int:
        return await self._async_ops().aevict(max_entries)

    async def apurge_expired(self, now: float) -> int:
        return await self._async_ops().apurge_expired(now)

    async def aclear(self, scope_key: str | None = None) -> int:
        return await self._async_ops().aclear(scope_key)

    async def adelete_where(self, selector: Selector) -> int:
        return await self._async_ops().adelete_where(selector)

    async def aentries(
        self, selector: Selector, cursor: str | None = None, limit: int = 100, vectors: bool = False
    ) -> EntryPage:
        return await self._async_ops().aentries(selector, cursor, limit, vectors)

    async def adrop(self) -> int:
        """:meth:`drop`, awaiting this event loop's client."""
        self._sizes.clear()
        return await self._core.adrop(self.keys.index, self.keys.base + "*")

    async def aclose(self) -> None:
        """Close this event loop's async connections (if ours), then the backend."""
        await self._core.aclose()
        self.close()
