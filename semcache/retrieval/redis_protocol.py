"""Talking to the Redis query engine: capability probes and ``FT.SEARCH`` reply parsing.

Replies come in RESP2 (flat lists) or RESP3 (maps) shape depending on the client's protocol;
both are handled here so the store sees one shape.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from semcache.errors import BackendError

__all__ = ["RedisCapabilities", "SearchRow", "detect_capabilities", "search_rows", "text"]

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
