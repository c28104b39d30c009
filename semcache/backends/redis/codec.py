"""How an entry becomes the fields of its Redis hash and back, and how a write is queued.

Pure functions (no I/O): payloads are JSON text, never pickle; the write replaces an entry
atomically on its own key with one Lua script, called by hash.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from semcache.backends.base import check_vector, encode_json
from semcache.backends.eviction import Eviction, entry_cost
from semcache.backends.redis import labels
from semcache.backends.redis.schema import (
    COST,
    CREATED_AT,
    EXPIRES_AT,
    HITS,
    METADATA,
    PROMPT,
    RANKING_FIELDS,
    RESPONSE,
    SCOPE,
    SIZE,
    TEXT_KEY,
    VECTOR,
    RedisKeys,
)
from semcache.errors import ConfigurationError, CorruptEntryError
from semcache.models import Entry, NewEntry

if TYPE_CHECKING:
    from numpy.typing import NDArray

__all__ = [
    "PUT_LUA",
    "PUT_SHA",
    "Row",
    "as_text",
    "entry_fields",
    "entry_rows",
    "hash_size",
    "parse_entry",
    "queue_writes",
    "reload_script",
    "stored_entries",
    "ttl_ms",
]

#: Replace an entry atomically on its own key: drop stale fields and TTL, write, set the TTL.
PUT_LUA = """
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], unpack(ARGV, 2))
local ttl = tonumber(ARGV[1])
if ttl > 0 then redis.call('PEXPIRE', KEYS[1], ttl) end
return 1
"""
#: What ``SCRIPT LOAD`` returns for :data:`PUT_LUA`: writes call it by hash, loading it on NOSCRIPT.
PUT_SHA = hashlib.sha1(PUT_LUA.encode("utf-8"), usedforsecurity=False).hexdigest()
#: The ranking bookkeeping, not counted in an entry's size.
_RANKING = frozenset(RANKING_FIELDS)


def ttl_ms(entry: NewEntry) -> int:
    """The key's time to live in milliseconds (0: none). Relative, so it holds for any clock."""
    if entry.expires_at is None:
        return 0
    return max(1, math.ceil((entry.expires_at - entry.created_at) * 1000))


def entry_fields(entry: NewEntry, vector: NDArray[np.float32]) -> dict[str, bytes | str]:
    """The hash fields of an entry. Payloads are JSON text, never pickle."""
    fields: dict[str, bytes | str] = {
        SCOPE: entry.scope_key,
        TEXT_KEY: entry.text_key,
        VECTOR: np.ascontiguousarray(vector, dtype=np.float32).tobytes(),
        PROMPT: entry.prompt,
        RESPONSE: encode_json(entry.response, "the response"),
        METADATA: encode_json(dict(entry.metadata), "the metadata"),
        CREATED_AT: repr(float(entry.created_at)),
    }
    if entry.expires_at is not None:
        fields[EXPIRES_AT] = repr(float(entry.expires_at))
    fields.update(labels.fields_of(entry))
    return fields


def as_text(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def parse_entry(entry_id: str, fields: Mapping[Any, Any]) -> Entry:
    """An :class:`Entry` from hash fields (bytes or str). Raises :class:`CorruptEntryError`."""
    try:
        f = {as_text(k): v for k, v in fields.items()}
        expires = f.get(EXPIRES_AT)
        metadata = json.loads(f[METADATA])
        if not isinstance(metadata, dict):
            raise TypeError(f"metadata is a {type(metadata).__name__}, not an object")
        return Entry(
            id=entry_id,
            scope_key=as_text(f[SCOPE]),
            text_key=as_text(f[TEXT_KEY]),
            prompt=as_text(f[PROMPT]),
            response=json.loads(f[RESPONSE]),
            metadata=metadata,
            created_at=float(f[CREATED_AT]),
            expires_at=None if expires in (None, b"", "") else float(expires),
            **labels.labels_of(f, as_text),
        )
    except (KeyError, ValueError, TypeError, UnicodeDecodeError) as e:
        raise CorruptEntryError(
            f"entry {entry_id} cannot be decoded: {type(e).__name__}: {e}", entry_id=entry_id
        ) from e


#: One entry to write: the entry, its id, its hash fields flattened for ``HSET``, its cost
#: (tokens a hit saves) and its size (bytes of its fields).
Row = tuple[NewEntry, str, list[Any], float, int]


def _field_bytes(value: Any) -> int:
    return len(value) if isinstance(value, bytes) else len(str(value).encode("utf-8"))


def hash_size(fields: Mapping[str, Any]) -> int:
    """The bytes of an entry's fields (the ranking bookkeeping not counted)."""
    return sum(_field_bytes(v) for k, v in fields.items() if k not in _RANKING)


def entry_rows(
    keys: RedisKeys,
    entries: Sequence[NewEntry],
    vectors: Sequence[NDArray[np.float32]],
    dim: int,
) -> list[Row]:
    """Validate and encode entries for a pipelined write."""
    if len(entries) != len(vectors):
        raise ConfigurationError(f"{len(entries)} entries but {len(vectors)} vectors")
    rows: list[Row] = []
    for entry, vector in zip(entries, vectors, strict=True):
        fields: dict[str, Any] = entry_fields(entry, check_vector(vector, dim))
        size = hash_size(fields)
        cost = entry_cost(entry.prompt, as_text(fields[RESPONSE]), entry.metadata)
        fields.update({HITS: "1", COST: repr(cost), SIZE: str(size)})
        flat = [x for kv in fields.items() for x in kv]
        rows.append((entry, keys.entry_id(entry.scope_key, entry.text_key), flat, cost, size))
    return rows


def stored_entries(rows: Sequence[Row]) -> list[Entry]:
    """The entries as stored by a successful write of ``rows``."""
    return [row[0].stored_as(row[1]) for row in rows]


def queue_writes(
    keys: RedisKeys, pipe: Any, rows: Sequence[Row], eviction: Eviction, clock: float
) -> Any:
    """Queue (no I/O) the atomic replacement of each row and its priority on ``pipe``."""
    for entry, entry_id, flat, cost, size in rows:
        pipe.evalsha(PUT_SHA, 1, keys.entry_key(entry_id), ttl_ms(entry), *flat)
        score = eviction.priority(clock, 1, cost, size, entry.created_at)
        pipe.zadd(keys.lru, {entry_id: score})
    return pipe


def reload_script(results: Sequence[Any], *, may_retry: bool) -> bool:
    """After a pipelined write: ``False`` if it succeeded, ``True`` if only the script was
    missing (never loaded, or Redis restarted: load it and write again); raises the first error
    otherwise."""
    from redis.exceptions import NoScriptError

    errors = [r for r in results if isinstance(r, Exception)]
    if not errors:
        return False
    if may_retry and all(isinstance(r, NoScriptError) for r in errors):
        return True
    raise errors[0]
