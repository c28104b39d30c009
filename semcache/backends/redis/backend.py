"""The Redis backend: HNSW on the Redis Query Engine (through redisvl), shared by many replicas.

Each entry is one hash (JSON payload, float32 vector) under ``semcache:<name>:e:``; one search
index per cache holds an HNSW vector field (cosine distance, converted to cosine similarity here),
the scope and the normalised-text key as TAG fields, and the expiry time. A KNN query is
pre-filtered to one scope inside the engine. TTL is the key's own expiry; LRU order lives in a
sorted set. Every call has a socket timeout, and a circuit breaker turns an outage into an
immediate :class:`BackendUnavailableError`. Key names and decisions: :mod:`.redis_schema`.

The async methods (:mod:`.redis_async`, a ``redis.asyncio`` client per event loop) share every
decision with these sync ones, and the circuit breaker too.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from semcache.backends.base import check_vector
from semcache.backends.breaker import BreakerParams, CircuitBreaker
from semcache.backends.redis import schema as rs
from semcache.backends.redis.async_methods import AsyncRedisMethods
from semcache.backends.redis.connection import RedisConnection, check_url, make_client, redact
from semcache.backends.vector_index import HnswParams
from semcache.errors import (
    BackendError,
    BackendUnavailableError,
    ConfigurationError,
    FingerprintMismatchError,
    MissingDependencyError,
)
from semcache.models import Candidate, Entry, NewEntry

if TYPE_CHECKING:
    from numpy.typing import NDArray

    from semcache.models import ModelFingerprint

__all__ = ["BreakerParams", "RedisBackend", "RedisConnection"]

T = TypeVar("T")

_SIZES_SECONDS = 10.0  # how long a scope's entry count steers the query plan


class RedisBackend(AsyncRedisMethods):
    """Entries in Redis, searched with HNSW by the Redis Query Engine. Thread-safe.

    Implements :class:`Backend` and :class:`AsyncBackend` (``aget_exact``, ``asearch``...).
    Close with :meth:`aclose` in the event loop that used the async methods, else :meth:`close`.

    Args:
        url: ``redis://[[user]:password@]host:port/db``, ``rediss://`` for TLS, or ``unix://``.
        name: the cache's namespace; its keys all start with ``semcache:<name>:``.
        hnsw: graph settings (``m``, ``ef_construction``, ``ef_search`` = EF_RUNTIME).
        connection: timeouts and pool size.
        breaker: when to stop calling an unreachable Redis, and for how long.
        client: a ready ``redis.Redis`` (bytes responses) instead of ``url``; not closed by us.
        async_client: with ``client``, a ready ``redis.asyncio.Redis`` for the async methods.
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
    ) -> None:
        try:
            import redis
            import redisvl.exceptions
        except ImportError:
            raise MissingDependencyError("redisvl", "redis") from None
        self.keys = rs.RedisKeys(name)
        self.hnsw = hnsw or HnswParams()
        self.connection = connection or RedisConnection()
        if (url is None) == (client is None):
            raise ConfigurationError("give RedisBackend exactly one of url= or client=")
        if url is not None:
            check_url(url)
        self._where = f"Redis cache {name!r} at {redact(url) if url else 'the given client'}"
        self._breaker = CircuitBreaker(breaker, name=self._where)
        self._errors: tuple[type[BaseException], ...] = (
            redis.exceptions.RedisError,
            redisvl.exceptions.RedisVLError,
            OSError,
        )
        self._owns_client = client is None
        if client is None:
            assert url is not None
            client = make_client(url, self.connection)
        self._client = client
        self._url = url
        self._async_client = async_client
        self._async: weakref.WeakKeyDictionary[Any, tuple[Any, Any]] = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()
        self._fingerprint: ModelFingerprint | None = None
        self._index: Any = None
        self._put_sha: str | None = None
        self._size_cache: dict[str, tuple[int, int, float]] = {}
        self._closed = False

    # -- plumbing ------------------------------------------------------------------------------

    @property
    def client(self) -> Any:
        """The ``redis.Redis`` client (for inspection and administration)."""
        return self._client

    @property
    def breaker(self) -> CircuitBreaker:
        return self._breaker

    def _run(self, what: str, fn: Callable[[], T], *, recreate: bool = True) -> T:
        """Call Redis through the breaker; map errors; recreate a vanished index once."""
        for attempt in (0, 1):
            self._breaker.before_call()
            try:
                result = fn()
            except self._errors as e:
                self._on_error(what, e, may_recreate=recreate and attempt == 0)
                self._ensure_schema()  # Redis restarted empty or the index was dropped
                continue
            self._breaker.record_success()
            return result
        raise AssertionError("unreachable")

    def _on_error(self, what: str, error: BaseException, *, may_recreate: bool) -> None:
        """Tell the breaker, then raise the semcache error for ``error``.

        Returns (without raising) only when the index vanished and may be recreated once.
        """
        kind = rs.classify_error(error)
        if kind == "unavailable":
            self._breaker.record_failure()
            raise BackendUnavailableError(f"{self._where}: {what} failed: {error}") from error
        self._breaker.record_success()
        if kind == "missing_index" and may_recreate:
            return
        raise BackendError(
            f"{self._where}: {what} failed: {type(error).__name__}: {error}"
        ) from error

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

    def _known_sizes(self, scope_key: str) -> tuple[int, int] | None:
        """The scope's and the cache's entry counts, if counted in the last few seconds."""
        cached = self._size_cache.get(scope_key)
        if cached is not None and time.monotonic() - cached[2] < _SIZES_SECONDS:
            return cached[0], cached[1]
        return None

    def _remember_sizes(self, scope_key: str, scope_size: int, total: int) -> tuple[int, int]:
        if len(self._size_cache) >= 10_000:
            self._size_cache.clear()
        self._size_cache[scope_key] = (scope_size, total, time.monotonic())
        return scope_size, total

    # -- binding -------------------------------------------------------------------------------

    @property
    def fingerprint(self) -> ModelFingerprint | None:
        return self._fingerprint

    def bind(self, fingerprint: ModelFingerprint) -> None:
        from redisvl.index import SearchIndex
        from redisvl.schema import IndexSchema

        with self._lock:
            if self._fingerprint is not None:
                if self._fingerprint.key() != fingerprint.key():
                    raise FingerprintMismatchError(
                        f"{self._where} is bound to {self._fingerprint.key()!r}, "
                        f"not {fingerprint.key()!r}"
                    )
                return
            schema = IndexSchema.from_dict(rs.schema_dict(self.keys, fingerprint.dim, self.hnsw))
            index = SearchIndex(schema, redis_client=self._client, owns_client=False)
            self._fingerprint, self._index = fingerprint, index
            try:
                self._ensure_schema()
            except BaseException:
                self._fingerprint, self._index = None, None
                raise

    def _ensure_schema(self) -> None:
        """Check (or write) the fingerprint record, then check (or create) the index."""
        from redisvl.exceptions import RedisSearchError
        from redisvl.index import SearchIndex

        fp, index, client = self._fingerprint, self._index, self._client
        assert fp is not None
        assert index is not None

        def check_or_create() -> None:
            stored = client.get(self.keys.meta)
            if stored is not None:
                rs.check_meta(stored, fp, self._where)
            if index.exists():
                existing = SearchIndex.from_existing(index.name, redis_client=client)
                rs.check_index_dim(existing.schema.to_dict(), fp.dim, self._where)
            else:
                try:
                    index.create(overwrite=False)
                except RedisSearchError as e:  # created by another replica just now
                    if "already exists" not in str(e).lower():
                        raise
            if stored is None and not client.set(self.keys.meta, rs.meta_record(fp), nx=True):
                rs.check_meta(client.get(self.keys.meta), fp, self._where)

        self._run("index setup", check_or_create, recreate=False)

    # -- reads ---------------------------------------------------------------------------------

    def get_exact(self, scope_key: str, text_key: str, now: float) -> Entry | None:
        self._require_index()
        entry = self.get(self.keys.entry_id(scope_key, text_key))
        return rs.live_match(entry, scope_key, text_key, now)

    def search(
        self, scope_key: str, vector: NDArray[np.float32], k: int, now: float
    ) -> list[Candidate]:
        index = self._require_index()
        vec = check_vector(vector, self._dim())
        if k <= 0:
            return []
        query = rs.knn_query(scope_key, vec, k, self.hnsw.ef_search, self._sizes(scope_key))
        docs = self._run("search", lambda: index.query(query))
        return rs.candidates(self.keys, docs, scope_key, now)

    def _sizes(self, scope_key: str) -> tuple[int, int]:
        """Entries in the scope and in the cache, re-counted at most every few seconds."""
        if (known := self._known_sizes(scope_key)) is not None:
            return known
        index = self._require_index()
        query = rs.count_query(scope_key)
        scope_size = int(self._run("count", lambda: index.query(query)))
        total = int(self._run("count", lambda: self._client.zcard(self.keys.lru)))
        return self._remember_sizes(scope_key, scope_size, total)

    def get(self, entry_id: str) -> Entry | None:
        key = self.keys.entry_key(entry_id)
        fields = self._run("read", lambda: self._client.hgetall(key))
        return rs.parse_entry(entry_id, fields) if fields else None

    def count(self) -> int:
        index = self._require_index()
        return int(self._run("count", lambda: index.query(rs.count_query())))

    # -- writes --------------------------------------------------------------------------------

    def put(self, entry: NewEntry, vector: NDArray[np.float32]) -> Entry:
        return self.put_many([entry], [vector])[0]

    def put_many(
        self, entries: Sequence[NewEntry], vectors: Sequence[NDArray[np.float32]]
    ) -> list[Entry]:
        """Store several entries in one pipelined round trip (each replaced atomically)."""
        rows = rs.entry_rows(self.keys, entries, vectors, self._dim())
        self._run("store", lambda: self._write(rows))
        return rs.stored_entries(rows)

    def _write(self, rows: list[rs.Row]) -> None:
        if self._put_sha is None:
            self._put_sha = self._client.script_load(rs.PUT_LUA)
        for attempt in (0, 1):
            pipe = self._queue_writes(self._client.pipeline(transaction=False), rows)
            if not rs.reload_script(pipe.execute(raise_on_error=False), may_retry=attempt == 0):
                return
            self._put_sha = self._client.script_load(rs.PUT_LUA)  # Redis restarted

    def _queue_writes(self, pipe: Any, rows: list[rs.Row]) -> Any:
        """Queue (no I/O) the atomic replacement of each row and its LRU time on ``pipe``."""
        for entry, entry_id, flat in rows:
            key = self.keys.entry_key(entry_id)
            pipe.evalsha(self._put_sha, 1, key, rs.ttl_ms(entry), *flat)
            pipe.zadd(self.keys.lru, {entry_id: entry.created_at})
        return pipe

    def _queue_deletes(self, pipe: Any, ids: list[str]) -> Any:
        """Queue (no I/O) the deletion of entries and of their LRU ids on ``pipe``."""
        for entry_id in ids:
            pipe.delete(self.keys.entry_key(entry_id))  # one key per command: cluster-safe
        pipe.zrem(self.keys.lru, *ids)
        return pipe

    def touch(self, entry_id: str, now: float) -> None:
        # XX: only entries still listed; a touched entry that was deleted is not resurrected.
        self._run("touch", lambda: self._client.zadd(self.keys.lru, {entry_id: now}, xx=True))

    def delete(self, entry_ids: Iterable[str]) -> int:
        ids = list(dict.fromkeys(entry_ids))
        return sum(self._delete_batch(ids[i : i + rs.BATCH]) for i in range(0, len(ids), rs.BATCH))

    def _delete_batch(self, ids: list[str]) -> int:
        if not ids:
            return 0

        def run() -> int:
            pipe = self._queue_deletes(self._client.pipeline(transaction=False), ids)
            return int(sum(pipe.execute()[:-1]))

        return self._run("delete", run)

    def evict(self, max_entries: int) -> int:
        """Delete least-recently-used entries until the LRU list holds at most ``max_entries``.

        The LRU list is an upper bound on the live entries (expired keys leave stale ids there,
        which are popped first, being the oldest), so the live count ends at most ``max_entries``.
        """
        rs.check_max_entries(max_entries)
        lru = self.keys.lru
        deleted = 0
        while True:
            size = self._run("evict", lambda: int(self._client.zcard(lru)))
            if (n := rs.evict_batch(size, max_entries, rs.BATCH)) == 0:
                return deleted
            popped = self._run("evict", lambda: self._client.zpopmin(lru, n))
            if not popped:
                return deleted
            deleted += self._delete_batch([rs.as_text(member) for member, _ in popped])

    def _matching_ids(self, filter_expression: Any) -> list[str]:
        """Up to ``rs.BATCH`` ids of entries matching a redisvl filter (ids only, no payload)."""
        index = self._require_index()
        query = rs.ids_query(filter_expression, rs.BATCH)
        result = self._run("scan", lambda: index.search(query.query, query_params=query.params))
        return rs.result_ids(self.keys, result)

    def _delete_matching(self, filter_expression: Any) -> int:
        total = 0
        while ids := self._matching_ids(filter_expression):
            removed = self._delete_batch(ids)
            total += removed
            if removed == 0:
                break  # the index lags behind deletions; do not spin
        return total

    def purge_expired(self, now: float) -> int:
        """Delete entries expired at ``now`` and drop LRU ids whose keys Redis already expired."""
        total = self._delete_matching(rs.expired_filter(now))
        self._sweep_lru()
        return total

    def _sweep_lru(self) -> None:
        def run() -> None:
            cursor = 0
            while True:
                cursor, members = self._client.zscan(self.keys.lru, cursor, count=rs.BATCH)
                if members:
                    ids = [rs.as_text(m) for m, _ in members]
                    pipe = self._client.pipeline(transaction=False)
                    for entry_id in ids:
                        pipe.exists(self.keys.entry_key(entry_id))
                    gone = [i for i, e in zip(ids, pipe.execute(), strict=True) if not e]
                    if gone:
                        self._client.zrem(self.keys.lru, *gone)
                if cursor == 0:
                    return

        self._run("sweep", run)

    def clear(self, scope_key: str | None = None) -> int:
        self._require_index()
        total = self._delete_matching(rs.scope_filter(scope_key))
        if scope_key is None:
            self._run("clear", lambda: self._client.delete(self.keys.lru))
        return total

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._async.clear()  # another loop's connections: aclose() there to close them
            if self._owns_client:
                self._client.close()

    def __enter__(self) -> RedisBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"RedisBackend({self._where})"
