"""Talking to the Redis query engine: capability probes, command arguments, reply parsing.

Replies come in RESP2 (flat lists) or RESP3 (maps) shape depending on the client's protocol;
both are handled here so the store sees one shape. Everything but :func:`detect_capabilities`
is a pure function; the store runs every command through its :class:`~semcache.backends.redis.
core.RedisCore`.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from semcache.backends.vector_index import HnswParams
from semcache.errors import BackendError, ConfigurationError
from semcache.models import ModelFingerprint
from semcache.retrieval.base import MemoryUse
from semcache.retrieval.documents import Chunk

__all__ = [
    "CHUNK_FIELDS",
    "VECTOR_TYPES",
    "RedisCapabilities",
    "SearchRow",
    "bm25_args",
    "chunk_fields",
    "create_index_args",
    "detect_capabilities",
    "index_memory",
    "info_dict",
    "knn_args",
    "parse_chunk",
    "querytext",
    "search_rows",
    "stored_fingerprint",
    "text",
]

#: The HNSW field types the store writes, and the numpy type of their bytes.
VECTOR_TYPES: dict[str, type[np.floating[Any]]] = {
    "FLOAT32": np.float32,
    "FLOAT16": np.float16,
    "FLOAT64": np.float64,
}
#: The hash fields of a chunk that :func:`parse_chunk` reads, in its order.
CHUNK_FIELDS = ("doc_id", "idx", "text", "title", "doc_hash", "metadata")
_WORD = re.compile(r"\w+", re.UNICODE)

SearchRow = tuple[str, Mapping[Any, Any], float | None]
"""One ``FT.SEARCH`` result: the key, its returned fields, its score (with WITHSCORES)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class RedisCapabilities:
    """What the connected query engine supports."""

    search_version: int
    vector_types: frozenset[str]
    bm25_scorer: str  # "BM25STD" where available, else "BM25"

    @property
    def int8_vectors(self) -> bool:
        return "INT8" in self.vector_types


def _probe(client: Any, args: Sequence[Any]) -> bool:
    import redis

    name = f"semcache:probe:{uuid.uuid4().hex}"
    try:
        client.execute_command(
            "FT.CREATE", name, "ON", "HASH", "PREFIX", "1", name + ":", "SCHEMA", *args
        )
    except redis.ResponseError:
        return False
    client.execute_command("FT.DROPINDEX", name)
    return True


def detect_capabilities(client: Any) -> RedisCapabilities:
    """Probe the server: query engine version, vector types it accepts, best BM25 scorer."""
    import redis

    version = 0
    for module in client.execute_command("MODULE", "LIST"):
        fields = (
            module
            if isinstance(module, dict)
            else dict(zip(module[::2], module[1::2], strict=False))
        )
        if text(fields.get(b"name", fields.get("name", ""))) in ("search", "searchlight"):
            version = int(fields.get(b"ver", fields.get("ver")) or 0)
    types = frozenset(
        t
        for t in ("FLOAT32", "FLOAT64", "FLOAT16", "BFLOAT16", "INT8", "UINT8")
        if _probe(
            client, ["v", "VECTOR", "FLAT", "6", "TYPE", t, "DIM", "4", "DISTANCE_METRIC", "COSINE"]
        )
    )
    scorer = "BM25"
    try:
        client.execute_command("FT._LIST")
        name = f"semcache:probe:{uuid.uuid4().hex}"
        client.execute_command(
            "FT.CREATE", name, "ON", "HASH", "PREFIX", "1", name + ":", "SCHEMA", "t", "TEXT"
        )
        try:
            client.execute_command("FT.SEARCH", name, "x", "SCORER", "BM25STD", "LIMIT", "0", "0")
            scorer = "BM25STD"
        except redis.ResponseError:
            scorer = "BM25"
        finally:
            client.execute_command("FT.DROPINDEX", name)
    except redis.ResponseError as e:
        raise BackendError(f"the Redis server has no query engine: {e}") from e
    return RedisCapabilities(search_version=version, vector_types=types, bm25_scorer=scorer)


def text(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _resp3_rows(reply: Any) -> list[SearchRow]:
    """``(key, fields, score)`` rows of an ``FT.SEARCH`` reply, in RESP2 or RESP3 shape."""
    if isinstance(reply, dict):
        out: list[SearchRow] = []
        rows: list[Any] = reply.get(b"results") or reply.get("results") or []
        for row in rows:
            attrs = row.get(b"extra_attributes", row.get("extra_attributes", {})) or {}
            score = row.get(b"score", row.get("score"))
            out.append(
                (
                    text(row.get(b"id", row.get("id"))),
                    attrs,
                    None if score is None else float(score),
                )
            )
        return out
    return []  # RESP2 is parsed by the callers that request it (see _search)


def search_rows(reply: Any, *, with_scores: bool, no_content: bool) -> list[SearchRow]:
    """The rows of an ``FT.SEARCH`` reply, RESP2 or RESP3."""
    if isinstance(reply, dict):
        return _resp3_rows(reply)
    out: list[SearchRow] = []
    i = 1  # reply[0] is the total
    while i < len(reply):
        key = text(reply[i])
        i += 1
        score = None
        if with_scores:
            score = float(reply[i])
            i += 1
        attrs: dict[Any, Any] = {}
        if not no_content:
            flat = reply[i]
            attrs = dict(zip(flat[::2], flat[1::2], strict=False))
            i += 1
        out.append((key, attrs, score))
    return out


def info_dict(reply: Any) -> dict[str, Any]:
    """An ``FT.INFO`` reply (RESP2 flat list or RESP3 map) as a dict with text keys."""
    pairs = reply.items() if isinstance(reply, dict) else zip(reply[::2], reply[1::2], strict=False)
    return {text(k): v for k, v in pairs}


def index_memory(info: Mapping[str, Any], dim: int, vector_type: str) -> list[MemoryUse]:
    """What the index and the stored vectors take, from an ``FT.INFO`` dict (:func:`info_dict`)."""
    n = int(info.get("num_docs", 0))
    kind = vector_type.lower()
    itemsize = np.dtype(VECTOR_TYPES[vector_type]).itemsize
    mib = 1024 * 1024
    return [
        MemoryUse(
            name=f"hnsw_{kind}",
            resident=True,
            vectors=n,
            nbytes=int(float(info.get("vector_index_sz_mb", 0)) * mib),
        ),
        MemoryUse(
            name="bm25", resident=True, nbytes=int(float(info.get("inverted_sz_mb", 0)) * mib)
        ),
        MemoryUse(name="int8_codes", nbytes=n * dim, resident=True, vectors=n),
        MemoryUse(name=f"hash_{kind}_field", resident=True, vectors=n, nbytes=n * dim * itemsize),
    ]


def stored_fingerprint(raw: Any, where: str) -> ModelFingerprint | None:
    """The fingerprint recorded in the store's meta hash (``None`` if none yet)."""
    if raw is None:
        return None
    try:
        return ModelFingerprint.from_dict(json.loads(raw))
    except (ValueError, KeyError, TypeError) as e:
        raise ConfigurationError(f"{where} holds an unreadable fingerprint ({e}); drop it") from e


def querytext(query: str) -> str:
    """An OR query over the words of ``query`` (the engine stems and drops stopwords)."""
    words = list(dict.fromkeys(w.lower() for w in _WORD.findall(query)))
    return "|".join(words)


def create_index_args(
    index: str, prefix: str, vector_type: str, dim: int, hnsw: HnswParams
) -> list[str]:
    """``FT.CREATE`` of the store: BM25 over title and text, documents as TAG, HNSW on ``vec``."""
    return [
        *("FT.CREATE", index, "ON", "HASH", "PREFIX", "1", prefix, "SCHEMA"),
        *("title", "TEXT", "text", "TEXT", "doc_id", "TAG"),
        *("vec", "VECTOR", "HNSW", "10", "TYPE", vector_type, "DIM", str(dim)),
        *("DISTANCE_METRIC", "COSINE", "M", str(hnsw.m)),
        *("EF_CONSTRUCTION", str(hnsw.ef_construction)),
    ]


def knn_args(blob: bytes, n: int, ef_runtime: int, also_return: Sequence[str] = ()) -> list[Any]:
    """``FT.SEARCH`` arguments (after the index) for the ``n`` nearest vectors, by distance.

    Each row carries ``dist`` and the hash fields named in ``also_return`` (for example the
    int8 code ``i8``, so rescoring needs no second round trip).
    """
    fields = ["dist", *also_return]
    return [
        "*=>[KNN $K @vec $B EF_RUNTIME $EF AS dist]",
        *("PARAMS", "6", "K", str(n), "B", blob, "EF", str(max(ef_runtime, n))),
        *("SORTBY", "dist", "RETURN", str(len(fields)), *fields),
        *("LIMIT", "0", str(n), "DIALECT", "2"),
    ]


def bm25_args(query: str, scorer: str, k: int) -> list[str]:
    """``FT.SEARCH`` arguments (after the index) for the ``k`` best BM25 matches, ids only."""
    return [
        *(query, "SCORER", scorer, "WITHSCORES", "NOCONTENT"),
        *("LIMIT", "0", str(k), "DIALECT", "2"),
    ]


def chunk_fields(
    chunk: Chunk, vector: np.ndarray[Any, Any], code: np.ndarray[Any, Any]
) -> dict[str, Any]:
    """The hash of one chunk: its text and metadata, the vector field, the int8 code."""
    return {
        "doc_id": chunk.doc_id,
        "idx": chunk.index,
        "text": chunk.text,
        "title": chunk.title,
        "doc_hash": chunk.doc_hash,
        "metadata": json.dumps(dict(chunk.metadata)),
        "vec": vector.tobytes(),
        "i8": code.tobytes(),
    }


def parse_chunk(chunk_id: str, row: Sequence[Any]) -> Chunk:
    """A :class:`Chunk` from the values of :data:`CHUNK_FIELDS` (``HMGET``)."""
    return Chunk(
        id=chunk_id,
        doc_id=text(row[0]),
        index=int(row[1]),
        text=text(row[2]),
        title=text(row[3]),
        doc_hash=text(row[4]),
        metadata=json.loads(row[5]),
    )
