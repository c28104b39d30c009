"""The Redis retrieval store: HNSW and BM25 in the Redis Query Engine, int8 codes in the hashes.

One hash per chunk under ``semcache:rag:<name>:c:<chunk id>`` holds the text and title (TEXT
fields: BM25 via ``FT.SEARCH ... SCORER BM25STD``, or ``BM25`` on older engines), the document id
(TAG), the first-stage vector (an HNSW field of ``vector_type``) and the int8 code (plain bytes,
not indexed) used for rescoring. Redis Stack 7.4 (search 2.10) has no INT8 vector type, so the
compact layout there is a FLOAT16 HNSW field plus int8 rescoring; :func:`detect_capabilities`
reports what the server offers. Documents map to their chunk keys in per-document sets.
"""

from __future__ import annotations

import contextlib
import json
import re
import threading
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from semcache.backends.base import check_vector
from semcache.backends.vector_index import HnswParams
from semcache.errors import (
    BackendError,
    ConfigurationError,
    FingerprintMismatchError,
    InvalidInputError,
)
from semcache.models import ModelFingerprint
from semcache.retrieval.base import (
    BinaryRescored,
    DenseMode,
    Float32Search,
    MemoryUse,
    candidates,
)
from semcache.retrieval.documents import Chunk, Document
from semcache.retrieval.quantization import Int8Quantizer
from semcache.retrieval.redis_protocol import SearchRow, detect_capabilities, search_rows, text

if TYPE_CHECKING:
    from numpy.typing import NDArray

__all__ = ["RedisRetrievalStore"]

_TYPES = {"FLOAT32": np.float32, "FLOAT16": np.float16, "FLOAT64": np.float64}
_WORD = re.compile(r"\w+", re.UNICODE)
_BATCH = 500


def _querytext(query: str) -> str:
    """An OR query over the words of ``query`` (the engine stems and drops stopwords)."""
    words = list(dict.fromkeys(w.lower() for w in _WORD.findall(query)))
    return "|".join(words)


class RedisRetrievalStore:
    """A retrieval store shared by many processes, on a Redis server with the query engine.

    Args:
        client: a ready ``redis.Redis`` client.
        name: namespaces keys and the index (``semcache:rag:<name>:...``).
        hnsw: HNSW settings of the vector field.
        vector_type: the HNSW field's type: ``"FLOAT32"`` (exact first stage, 4 B/dim) or
            ``"FLOAT16"`` (compact, 2 B/dim; rescored with int8). Must be one the server has.
        recalibrate_growth: as :class:`~semcache.retrieval.store.EmbeddedStoreConfig`.
    """

    def __init__(
        self,
        client: Any,
        *,
        name: str = "docs",
        hnsw: HnswParams | None = None,
        vector_type: str = "FLOAT32",
        recalibrate_growth: float = 2.0,
    ) -> None:
        if not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", name):
            raise ConfigurationError(f"name must be 1-64 of [A-Za-z0-9_.-], got {name!r}")
        if vector_type not in _TYPES:
            raise ConfigurationError(
                f"vector_type must be one of {sorted(_TYPES)}, got {vector_type!r}"
            )
        self.client = client
        self.hnsw = hnsw or HnswParams(ef_search=128)
        self.vector_type = vector_type
        self.recalibrate_growth = recalibrate_growth
        self.capabilities = detect_capabilities(client)
        if vector_type not in self.capabilities.vector_types:
            raise ConfigurationError(f"this Redis server has no {vector_type} vector type")
        base = f"semcache:rag:{name}"
        self._prefix = f"{base}:c:"
        self._index = f"{base}:idx"
        self._meta = f"{base}:meta"
        self._docs = f"{base}:docs"
        self._doc_set = f"{base}:d:"
        self._lock = threading.RLock()
        self._fingerprint: ModelFingerprint | None = None
        self._int8: Int8Quantizer | None = None

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> RedisRetrievalStore:
        import redis

        return cls(redis.Redis.from_url(url), **kwargs)

    # -- setup ---------------------------------------------------------------------------------

    def bind(self, fingerprint: ModelFingerprint) -> None:
        with self._lock:
            stored = self.client.hget(self._meta, "fingerprint")
            if stored is not None:
                other = ModelFingerprint.from_dict(json.loads(stored))
                if other.key() != fingerprint.key():
                    raise FingerprintMismatchError(
                        f"{self._index} was built with {other.key()!r}, not {fingerprint.key()!r}"
                    )
            else:
                self.client.hset(self._meta, "fingerprint", json.dumps(fingerprint.to_dict()))
            self._fingerprint = fingerprint
            self._ensure_index(fingerprint.dim)
            raw = self.client.hget(self._meta, "int8")
            self._int8 = Int8Quantizer.from_dict(json.loads(raw)) if raw else None

    def _ensure_index(self, dim: int) -> None:
        import redis

        try:
            self.client.execute_command("FT.INFO", self._index)
            return
        except redis.ResponseError:
            pass
        self.client.execute_command(
            "FT.CREATE",
            self._index,
            "ON",
            "HASH",
            "PREFIX",
            "1",
            self._prefix,
            "SCHEMA",
            "title",
            "TEXT",
            "text",
            "TEXT",
            "doc_id",
            "TAG",
            "vec",
            "VECTOR",
            "HNSW",
            "10",
            "TYPE",
            self.vector_type,
            "DIM",
            str(dim),
            "DISTANCE_METRIC",
            "COSINE",
            "M",
            str(self.hnsw.m),
            "EF_CONSTRUCTION",
            str(self.hnsw.ef_construction),
        )

    def _require(self) -> int:
        if self._fingerprint is None:
            raise ConfigurationError("retrieval store is not bound to an embedder; call bind()")
        return self._fingerprint.dim

    # -- reads ---------------------------------------------------------------------------------

    def doc_hashes(self, doc_ids: Iterable[str] | None = None) -> dict[str, str]:
        if doc_ids is None:
            return {text(k): text(v) for k, v in self.client.hgetall(self._docs).items()}
        ids = list(dict.fromkeys(doc_ids))
        if not ids:
            return {}
        values = self.client.hmget(self._docs, ids)
        return {i: text(v) for i, v in zip(ids, values, strict=True) if v is not None}

    def chunks(self, chunk_ids: Iterable[str]) -> dict[str, Chunk]:
        ids = list(dict.fromkeys(chunk_ids))
        pipe = self.client.pipeline(transaction=False)
        fields = ("doc_id", "idx", "text", "title", "doc_hash", "metadata")
        for cid in ids:
            pipe.hmget(self._prefix + cid, fields)
        out: dict[str, Chunk] = {}
        for cid, row in zip(ids, pipe.execute(), strict=True):
            if row[0] is None:
                continue
            out[cid] = Chunk(
                id=cid,
                doc_id=text(row[0]),
                index=int(row[1]),
                text=text(row[2]),
                title=text(row[3]),
                doc_hash=text(row[4]),
                metadata=json.loads(row[5]),
            )
        return out

    def count(self) -> int:
        return int(self._info().get("num_docs", 0))

    def _info(self) -> dict[str, Any]:
        info = self.client.execute_command("FT.INFO", self._index)
        pairs = info.items() if isinstance(info, dict) else zip(info[::2], info[1::2], strict=False)
        return {text(k): v for k, v in pairs}

    def _search(self, *args: Any) -> list[SearchRow]:
        reply = self.client.execute_command("FT.SEARCH", self._index, *args)
        return search_rows(reply, with_scores="WITHSCORES" in args, no_content="NOCONTENT" in args)

    def dense(
        self, vector: NDArray[np.float32], k: int, mode: DenseMode
    ) -> list[tuple[str, float]]:
        query = check_vector(vector, self._require())
        if k <= 0:
            return []
        if isinstance(mode, BinaryRescored):
            raise ConfigurationError("BinaryRescored is not available on the Redis store")
        n = k if isinstance(mode, Float32Search) else candidates(k, mode.oversample)
        if isinstance(mode, Float32Search) and self.vector_type != "FLOAT32":
            raise ConfigurationError(
                f"Float32Search needs a FLOAT32 field; this is {self.vector_type}"
            )
        rows = self._search(
            "*=>[KNN $K @vec $B EF_RUNTIME $EF AS dist]",
            "PARAMS",
            "6",
            "K",
            str(n),
            "B",
            query.astype(_TYPES[self.vector_type]).tobytes(),
            "EF",
            str(max(self.hnsw.ef_search, n)),
            "SORTBY",
            "dist",
            "RETURN",
            "1",
            "dist",
            "LIMIT",
            "0",
            str(n),
            "DIALECT",
            "2",
        )
        hits = [
            (key[len(self._prefix) :], 1.0 - float(attrs.get(b"dist", attrs.get("dist"))))
            for key, attrs, _ in rows
        ]
        if isinstance(mode, Float32Search) or not hits:
            return hits[:k]
        return self._rescore(query, [cid for cid, _ in hits], k)

    def _rescore(
        self, query: NDArray[np.float32], ids: list[str], k: int
    ) -> list[tuple[str, float]]:
        if self._int8 is None:
            raise BackendError("int8 codes are not calibrated yet")
        pipe = self.client.pipeline(transaction=False)
        for cid in ids:
            pipe.hget(self._prefix + cid, "i8")
        raw = pipe.execute()
        keep = [(cid, r) for cid, r in zip(ids, raw, strict=True) if r is not None]
        codes = np.frombuffer(b"".join(r for _, r in keep), dtype=np.int8).reshape(len(keep), -1)
        scores = self._int8.scores(query, codes)
        order = np.lexsort((np.arange(len(keep)), -scores))[:k]
        return [(keep[i][0], float(scores[i])) for i in order]

    def sparse(self, query: str, k: int) -> list[tuple[str, float]]:
        self._require()
        text = _querytext(query)
        if not text or k <= 0:
            return []
        rows = self._search(
            text,
            "SCORER",
            self.capabilities.bm25_scorer,
            "WITHSCORES",
            "NOCONTENT",
            "LIMIT",
            "0",
            str(k),
            "DIALECT",
            "2",
        )
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
        with self._lock:
            self._remove([d.id for d in docs])
            calibrate = self._int8 is None
            quantizer = self._int8 or Int8Quantizer.calibrate(
                vecs if len(vecs) else np.zeros((1, dim))
            )
            codes = quantizer.encode(vecs) if len(vecs) else np.empty((0, dim), np.int8)
            pipe = self.client.pipeline(transaction=False)
            for c, v, code in zip(chunks, vecs, codes, strict=True):
                pipe.hset(
                    self._prefix + c.id,
                    mapping={
                        "doc_id": c.doc_id,
                        "idx": c.index,
                        "text": c.text,
                        "title": c.title,
                        "doc_hash": c.doc_hash,
                        "metadata": json.dumps(dict(c.metadata)),
                        "vec": v.astype(_TYPES[self.vector_type]).tobytes(),
                        "i8": code.tobytes(),
                    },
                )
                pipe.sadd(self._doc_set + c.doc_id, c.id)
            for d in docs:
                pipe.hset(self._docs, d.id, d.hash)
            pipe.execute()
            if calibrate:
                self._set_quantizer(quantizer, len(chunks))
            else:
                live = self.count()
                calibrated_on = int(self.client.hget(self._meta, "calibrated_on") or 0)
                if live >= self.recalibrate_growth * max(1, calibrated_on):
                    self.recalibrate()

    def _set_quantizer(self, quantizer: Int8Quantizer, n: int) -> None:
        self._int8 = quantizer
        self.client.hset(
            self._meta, mapping={"int8": json.dumps(quantizer.to_dict()), "calibrated_on": n}
        )

    def recalibrate(self) -> None:
        """Fit int8 ranges on every stored vector and rewrite every code."""
        with self._lock:
            keys = list(self.client.scan_iter(match=self._prefix + "*", count=1000))
            if not keys:
                return
            pipe = self.client.pipeline(transaction=False)
            for key in keys:
                pipe.hget(key, "vec")
            blobs = pipe.execute()
            dtype = _TYPES[self.vector_type]
            vecs = np.stack([np.frombuffer(b, dtype=dtype).astype(np.float32) for b in blobs])
            quantizer = Int8Quantizer.calibrate(vecs)
            codes = quantizer.encode(vecs)
            for start in range(0, len(keys), _BATCH):
                pipe = self.client.pipeline(transaction=False)
                for key, code in zip(
                    keys[start : start + _BATCH], codes[start : start + _BATCH], strict=True
                ):
                    pipe.hset(key, "i8", code.tobytes())
                pipe.execute()
            self._set_quantizer(quantizer, len(keys))

    def _remove(self, doc_ids: list[str]) -> int:
        existing = self.doc_hashes(doc_ids)
        for doc_id in existing:
            members = [text(m) for m in self.client.smembers(self._doc_set + doc_id)]
            pipe = self.client.pipeline(transaction=False)
            for cid in members:
                pipe.delete(self._prefix + cid)
            pipe.delete(self._doc_set + doc_id)
            pipe.hdel(self._docs, doc_id)
            pipe.execute()
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
        out = [
            MemoryUse(
                name=f"hnsw_{self.vector_type.lower()}",
                resident=True,
                vectors=n,
                nbytes=int(float(info.get("vector_index_sz_mb", 0)) * 1024 * 1024),
            ),
            MemoryUse(
                name="bm25",
                resident=True,
                nbytes=int(float(info.get("inverted_sz_mb", 0)) * 1024 * 1024),
            ),
            MemoryUse(name="int8_codes", nbytes=n * dim, resident=True, vectors=n),
            MemoryUse(
                name=f"hash_{self.vector_type.lower()}_field",
                resident=True,
                vectors=n,
                nbytes=n * dim * np.dtype(_TYPES[self.vector_type]).itemsize,
            ),
        ]
        sample = [
            k
            for _, k in zip(
                range(200), self.client.scan_iter(match=self._prefix + "*", count=200), strict=False
            )
        ]
        if sample:
            used = sum(int(self.client.memory_usage(k) or 0) for k in sample)
            out.append(
                MemoryUse(
                    name="chunk_hashes",
                    resident=True,
                    vectors=n,
                    nbytes=int(used / len(sample) * n),
                )
            )
        return out

    def drop(self) -> None:
        """Delete the index and every key of this store."""
        import redis

        with self._lock:
            with contextlib.suppress(redis.ResponseError):
                self.client.execute_command("FT.DROPINDEX", self._index)
            base = self._meta.rsplit(":", 1)[0]
            keys = list(self.client.scan_iter(match=base + ":*", count=1000))
            for start in range(0, len(keys), _BATCH):
                self.client.delete(*keys[start : start + _BATCH])
            self._int8 = None

    def close(self) -> None:
        self.client.close()
