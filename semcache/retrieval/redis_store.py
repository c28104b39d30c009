"""The Redis retrieval store: HNSW and BM25 in the Redis Query Engine, int8 codes in the hashes.

One hash per chunk under ``semcache:rag:<name>:c:<chunk id>`` holds the text and title (TEXT
fields: BM25 via ``FT.SEARCH ... SCORER BM25STD``, or ``BM25`` on older engines), the document id
(TAG), the first-stage vector (an HNSW field of ``vector_type``) and the int8 code (plain bytes,
not indexed) used for rescoring, returned with the search reply (one round trip). Redis
Stack 7.4 (search 2.10) has no INT8 vector type, so the compact layout there is a FLOAT16 HNSW
field plus int8 rescoring; :func:`detect_capabilities` reports what the server offers.
Documents map to their chunk keys in per-document sets.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from semcache.backends.base import check_vector
from semcache.backends.redis.core import RedisCore, is_existing_index, is_missing_index
from semcache.backends.redis.schema import check_name
from semcache.backends.vector_index import HnswParams
from semcache.errors import BackendError, ConfigurationError, InvalidInputError
from semcache.models import ModelFingerprint, check_fingerprint
from semcache.retrieval.base import (
    BinaryRescored,
    DenseMode,
    Float32Search,
    MemoryUse,
    candidates,
)
from semcache.retrieval.documents import Chunk, Document
from semcache.retrieval.quantization import Int8Quantizer
from semcache.retrieval.redis_protocol import (
    CHUNK_FIELDS,
    VECTOR_TYPES,
    SearchRow,
    bm25_args,
    chunk_fields,
    create_index_args,
    detect_capabilities,
    index_memory,
    info_dict,
    knn_args,
    parse_chunk,
    querytext,
    search_rows,
    stored_fingerprint,
    text,
)

if TYPE_CHECKING:
    from numpy.typing import NDArray

    from semcache.backends.breaker import BreakerParams
    from semcache.backends.redis.connection import RedisConnection

__all__ = ["RedisRetrievalStore"]

T = TypeVar("T")

_BATCH = 500


class RedisRetrievalStore:
    """A retrieval store shared by many processes, on a Redis server with the query engine.

    Every command runs through a :class:`~semcache.backends.redis.core.RedisCore`: with Redis
    unreachable each method raises :class:`BackendUnavailableError` (at once while the circuit
    is open), and any other Redis error :class:`BackendError`.

    Args:
        client: a ready ``redis.Redis`` client (not closed by us); or give ``url``.
        url: ``redis://...`` to build a client with ``connection``'s timeouts.
        name: namespaces keys and the index (``semcache:rag:<name>:...``).
        hnsw: HNSW settings of the vector field (default ``ef_search=128``; ``None`` takes
            the size-aware width for the chunk count last seen by ``bind`` or ``add``).
        vector_type: the HNSW field's type: ``"FLOAT32"`` (exact first stage, 4 B/dim) or
            ``"FLOAT16"`` (compact, 2 B/dim; rescored with int8). Must be one the server has.
        recalibrate_growth: as :class:`~semcache.retrieval.store.EmbeddedStoreConfig`.
        max_oversample: caps the mode's oversampling for int8 rescoring: at most
            ``ceil(k * max_oversample)`` HNSW candidates are fetched and rescored. The first
            stage here is FLOAT32 or FLOAT16, whose distances are already as close to exact as
            the int8 codes, so more candidates cost time without changing the ranking: on
            SciFact, 4x took p50 13.4 ms and 1x 2.75 ms at the same nDCG@10 (docs/BENCHMARKS.md,
            "Redis int8 rescoring in one round trip"). Raise it for a lossy first stage.
        connection: timeouts and pool size (with ``url``).
        breaker: when to stop calling an unreachable Redis, and for how long.
    """

    def __init__(
        self,
        client: Any = None,
        *,
        url: str | None = None,
        name: str = "docs",
        hnsw: HnswParams | None = None,
        vector_type: str = "FLOAT32",
        recalibrate_growth: float = 2.0,
        max_oversample: float = 1.0,
        connection: RedisConnection | None = None,
        breaker: BreakerParams | None = None,
    ) -> None:
        check_name(name, "retrieval store")
        if vector_type not in VECTOR_TYPES:
            raise ConfigurationError(
                f"vector_type must be one of {sorted(VECTOR_TYPES)}, got {vector_type!r}"
            )
        if not (isinstance(max_oversample, int | float) and 1.0 <= max_oversample <= 1000):
            raise ConfigurationError(f"max_oversample must be in [1, 1000], got {max_oversample!r}")
        self.max_oversample = float(max_oversample)
        self.core = RedisCore(
            url,
            client=client,
            connection=connection,
            breaker=breaker,
            label=f"Redis retrieval store {name!r}",
        )
        self.hnsw = hnsw or HnswParams(ef_search=128)
        self.vector_type = vector_type
        self.recalibrate_growth = recalibrate_growth
        self.capabilities = self._bulk(
            "capability probe", lambda: detect_capabilities(self.core.client)
        )
        if vector_type not in self.capabilities.vector_types:
            raise ConfigurationError(f"this Redis server has no {vector_type} vector type")
        base = f"semcache:rag:{name}"
        self.name = name
        self._base = base
        self._prefix = f"{base}:c:"
        self._index = f"{base}:idx"
        self._meta = f"{base}:meta"
        self._docs = f"{base}:docs"
        self._doc_set = f"{base}:d:"
        self._lock = threading.RLock()
        self._size = 0  # chunks at the last bind or add: steers a size-aware ef_search
        self._fingerprint: ModelFingerprint | None = None
        self._int8: Int8Quantizer | None = None

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        connection: RedisConnection | None = None,
        breaker: BreakerParams | None = None,
        **kwargs: Any,
    ) -> RedisRetrievalStore:
        """A store with its own client, built with ``connection``'s timeouts."""
        return cls(url=url, connection=connection, breaker=breaker, **kwargs)

    @property
    def client(self) -> Any:
        """The ``redis.Redis`` client."""
        return self.core.client

    def _run(self, what: str, fn: Callable[[], T]) -> T:
        """A command on the query path: timed, so a slow Redis opens the circuit."""
        return self.core.run(what, fn)

    def _bulk(self, what: str, fn: Callable[[], T]) -> T:
        """Ingest and administration: not timed (their duration grows with the work)."""
        return self.core.run(what, fn, timed=False)

    def _pipe(self) -> Any:
        """A pipeline to queue commands on (no I/O); run it with ``self._run(what, p.execute)``."""
        return self.client.pipeline(transaction=False)

    # -- setup ---------------------------------------------------------------------------------

    def bind(self, fingerprint: ModelFingerprint) -> None:
        client, where = self.client, self.core.where
        with self._lock:
            stored = self._bulk("bind", lambda: client.hget(self._meta, "fingerprint"))
            check_fingerprint(
                stored_fingerprint(stored, where),
                fingerprint,
                where,
                "use the same embedder, or another store name",
            )
            if stored is None:
                record = json.dumps(fingerprint.to_dict())
                self._bulk("bind", lambda: client.hset(self._meta, "fingerprint", record))
            self._ensure_index(fingerprint.dim)
            raw = self._bulk("bind", lambda: client.hget(self._meta, "int8"))
            self._int8 = Int8Quantizer.from_dict(json.loads(raw)) if raw else None
            self._fingerprint = fingerprint
            if self.hnsw.ef_search is None:
                self._size = self.count()

    def _ensure_index(self, dim: int) -> None:
        """Create the index unless it exists; any error but "no such index" is raised."""
        import redis.exceptions

        client = self.client

        def exists() -> bool:
            try:
                client.execute_command("FT.INFO", self._index)
            except redis.exceptions.ResponseError as e:
                if is_missing_index(e):
                    return False
                raise
            return True

        def create() -> None:
            args = create_index_args(self._index, self._prefix, self.vector_type, dim, self.hnsw)
            try:
                client.execute_command(*args)
            except redis.exceptions.ResponseError as e:
                if not is_existing_index(e):  # else another process created it just now
                    raise

        if not self._bulk("index check", exists):
            self._bulk("index setup", create)

    def _require(self) -> int:
        if self._fingerprint is None:
            raise ConfigurationError("retrieval store is not bound to an embedder; call bind()")
        return self._fingerprint.dim

    # -- reads ---------------------------------------------------------------------------------

    def doc_hashes(self, doc_ids: Iterable[str] | None = None) -> dict[str, str]:
        client = self.client
        if doc_ids is None:
            raw = self._run("read documents", lambda: client.hgetall(self._docs))
            return {text(k): text(v) for k, v in raw.items()}
        ids = list(dict.fromkeys(doc_ids))
        if not ids:
            return {}
        values = self._run("read documents", lambda: client.hmget(self._docs, ids))
        return {i: text(v) for i, v in zip(ids, values, strict=True) if v is not None}

    def chunks(self, chunk_ids: Iterable[str]) -> dict[str, Chunk]:
        ids = list(dict.fromkeys(chunk_ids))
        pipe = self._pipe()
        for cid in ids:
            pipe.hmget(self._prefix + cid, CHUNK_FIELDS)
        rows = self._run("read chunks", pipe.execute)
        return {
            cid: parse_chunk(cid, row)
            for cid, row in zip(ids, rows, strict=True)
            if row[0] is not None
        }

    def count(self) -> int:
        return int(self._info().get("num_docs", 0))

    def _info(self) -> dict[str, Any]:
        return info_dict(
            self._run("info", lambda: self.client.execute_command("FT.INFO", self._index))
        )

    def _search(self, *args: Any) -> list[SearchRow]:
        reply = self._run(
            "search", lambda: self.client.execute_command("FT.SEARCH", self._index, *args)
        )
        return search_rows(reply, with_scores="WITHSCORES" in args, no_content="NOCONTENT" in args)

    def dense(
        self, vector: NDArray[np.float32], k: int, mode: DenseMode
    ) -> list[tuple[str, float]]:
        query = check_vector(vector, self._require())
        if k <= 0:
            return []
        if isinstance(mode, BinaryRescored):
            raise ConfigurationError("BinaryRescored is not available on the Redis store")
        n = (
            k
            if isinstance(mode, Float32Search)
            else candidates(k, min(mode.oversample, self.max_oversample))
        )
        if isinstance(mode, Float32Search) and self.vector_type != "FLOAT32":
            raise ConfigurationError(
                f"Float32Search needs a FLOAT32 field; this is {self.vector_type}"
            )
        blob = query.astype(VECTOR_TYPES[self.vector_type]).tobytes()
        quantizer = None if isinstance(mode, Float32Search) else self._int8
        rescore = not isinstance(mode, Float32Search)
        if rescore and quantizer is None:
            raise BackendError("int8 codes are not calibrated yet")
        # Rescoring reads each candidate's int8 code from the same reply (RETURN i8): one
        # round trip, where a pipelined HGET per candidate cost a second one and n commands.
        ef = self.hnsw.ef_for(self._size)
        rows = self._search(*knn_args(blob, n, ef, ("i8",) if rescore else ()))
        hits = [
            (key[len(self._prefix) :], 1.0 - float(attrs.get(b"dist", attrs.get("dist"))))
            for key, attrs, _ in rows
        ]
        if quantizer is None or not hits:
            return hits[:k]
        return self._rescore(
            quantizer, query, [(key[len(self._prefix) :], attrs) for key, attrs, _ in rows], k
        )

    @staticmethod
    def _rescore(
        quantizer: Int8Quantizer,
        query: NDArray[np.float32],
        rows: list[tuple[str, Mapping[Any, Any]]],
        k: int,
    ) -> list[tuple[str, float]]:
        """The best ``k`` of ``rows`` (chunk id, returned fields) by int8 score."""
        keep = [
            (cid, code)
            for cid, attrs in rows
            if isinstance(code := attrs.get(b"i8", attrs.get("i8")), bytes)
            and len(code) == len(query)
        ]
        if not keep:
            return []
        codes = np.frombuffer(b"".join(c for _, c in keep), dtype=np.int8).reshape(len(keep), -1)
        scores = quantizer.scores(query, codes)
        order = np.lexsort((np.arange(len(keep)), -scores))[:k]
        return [(keep[i][0], float(scores[i])) for i in order]

    def sparse(self, query: str, k: int) -> list[tuple[str, float]]:
        self._require()
        words = querytext(query)
        if not words or k <= 0:
            return []
        rows = self._search(*bm25_args(words, self.capabilities.bm25_scorer, k))
        return [(key[len(self._prefix) :], float(score or 0.0)) for key, _, score in rows]

    # -- writes --------------------------------------------------------------------------------

    def replace(
        self, docs: Sequence[Document], chunks: Sequence[Chunk], vectors: NDArray[np.float32]
    ) -> None:
        dim = self._require()
        vecs = np.asarray(vectors, dtype=np.float32)
        if vecs.shape != (len(chunks), dim) or not np.isfinite(vecs).all():
            raise InvalidInputError(
                f"{len(chunks)} chunks need a finite ({len(chunks)}, {dim}) array"
            )
        stray = {c.doc_id for c in chunks} - {d.id for d in docs}
        if stray:
            raise InvalidInputError(f"chunks of documents not being stored: {sorted(stray)[:5]}")
        dtype = VECTOR_TYPES[self.vector_type]
        with self._lock:
            self._remove([d.id for d in docs])
            calibrate = self._int8 is None
            quantizer = self._int8 or Int8Quantizer.calibrate(
                vecs if len(vecs) else np.zeros((1, dim))
            )
            codes = quantizer.encode(vecs) if len(vecs) else np.empty((0, dim), np.int8)
            pipe = self._pipe()
            for c, v, code in zip(chunks, vecs, codes, strict=True):
                pipe.hset(self._prefix + c.id, mapping=chunk_fields(c, v.astype(dtype), code))
                pipe.sadd(self._doc_set + c.doc_id, c.id)
            for d in docs:
                pipe.hset(self._docs, d.id, d.hash)
            self._bulk("store", pipe.execute)
            if calibrate:
                self._set_quantizer(quantizer, len(chunks))
                self._size = max(self._size, len(chunks))
            else:
                live = self._size = self.count()
                raw = self._bulk("store", lambda: self.client.hget(self._meta, "calibrated_on"))
                if live >= self.recalibrate_growth * max(1, int(raw or 0)):
                    self.recalibrate()

    def _set_quantizer(self, quantizer: Int8Quantizer, n: int) -> None:
        mapping = {"int8": json.dumps(quantizer.to_dict()), "calibrated_on": n}
        self._bulk("store", lambda: self.client.hset(self._meta, mapping=mapping))
        self._int8 = quantizer

    def _chunk_keys(self, limit: int | None = None) -> list[Any]:
        """The keys of the stored chunks (the first ``limit`` found by SCAN, if given)."""
        found = self.client.scan_iter(match=self._prefix + "*", count=min(limit or 1000, 1000))
        if limit is None:
            return self._bulk("scan", lambda: list(found))
        return self._bulk("scan", lambda: [k for _, k in zip(range(limit), found, strict=False)])

    def recalibrate(self) -> None:
        """Fit int8 ranges on every stored vector and rewrite every code."""
        with self._lock:
            keys = self._chunk_keys()
            if not keys:
                return
            pipe = self._pipe()
            for key in keys:
                pipe.hget(key, "vec")
            blobs = self._bulk("recalibrate", pipe.execute)
            dtype = VECTOR_TYPES[self.vector_type]
            vecs = np.stack([np.frombuffer(b, dtype=dtype).astype(np.float32) for b in blobs])
            quantizer = Int8Quantizer.calibrate(vecs)
            codes = quantizer.encode(vecs)
            for start in range(0, len(keys), _BATCH):
                pipe = self._pipe()
                for key, code in zip(
                    keys[start : start + _BATCH], codes[start : start + _BATCH], strict=True
                ):
                    pipe.hset(key, "i8", code.tobytes())
                self._bulk("recalibrate", pipe.execute)
            self._set_quantizer(quantizer, len(keys))

    def _remove(self, doc_ids: list[str]) -> int:
        existing = self.doc_hashes(doc_ids)
        for doc_id in existing:
            key = self._doc_set + doc_id
            members = self._bulk("remove", partial(self.client.smembers, key))
            pipe = self._pipe()
            for cid in members:
                pipe.delete(self._prefix + text(cid))
            pipe.delete(key)
            pipe.hdel(self._docs, doc_id)
            self._bulk("remove", pipe.execute)
        return len(existing)

    def delete(self, doc_ids: Iterable[str]) -> int:
        self._require()
        with self._lock:
            return self._remove(list(dict.fromkeys(doc_ids)))

    # -- sizes and lifecycle -------------------------------------------------------------------

    def memory(self) -> list[MemoryUse]:
        """Index sizes from ``FT.INFO``; the hashes' own size from ``MEMORY USAGE`` (sampled)."""
        dim = self._require()
        info = self._info()
        n = int(info.get("num_docs", 0))
        out = index_memory(info, dim, self.vector_type)
        if sample := self._chunk_keys(200):
            pipe = self._pipe()
            for key in sample:
                pipe.memory_usage(key)
            sizes = self._bulk("memory", pipe.execute)
            used = sum(int(u or 0) for u in sizes)
            out.append(
                MemoryUse(
                    name="chunk_hashes",
                    resident=True,
                    vectors=n,
                    nbytes=int(used / len(sample) * n),
                )
            )
        return out

    def drop(self) -> int:
        """Delete the index and every key of this store; returns how many keys were deleted."""
        with self._lock:
            self._int8 = None
            return self.core.drop(self._index, self._base + ":*")

    def close(self) -> None:
        """Close the client if the store built it (``from_url``)."""
        self.core.close()
