"""The Redis backend's names: key layout, entry field names, the index schema, the meta record.

Nothing here does I/O. Key layout for a cache named ``N`` (no hash tags, so entries spread over
a cluster's shards and a sharded query engine searches them all; every multi-command step
touches one key)::

    semcache:N:meta                  JSON: format, embedding fingerprint
    semcache:N:lru                   sorted set: entry id -> eviction priority (lowest first)
    semcache:N:clock                 sorted set, one member: GDSF's clock (raised with ZADD GT)
    semcache:N:eviction              the policy the priorities were computed by ("lru", "gdsf")
    semcache:N:e:<scope>:<text_key>  hash: one entry (vector, prompt, JSON response, and for
                                     eviction its uses, cost, size and last use)
    semcache:N:idx:v1                the search index over semcache:N:e:*

The ``lru`` name is kept from when the score was the last access time, so old caches keep
working; with :class:`~semcache.backends.eviction.LRU` it still is. An entry's hash fields and
back: :mod:`.codec`; queries: :mod:`.queries`; eviction bookkeeping: :mod:`.ranking`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from semcache.backends.redis import labels
from semcache.backends.vector_index import HnswParams
from semcache.errors import ConfigurationError, FingerprintMismatchError
from semcache.models import ModelFingerprint, check_fingerprint

__all__ = [
    "ATIME",
    "COST",
    "CREATED_AT",
    "EXPIRES_AT",
    "FORMAT",
    "HITS",
    "METADATA",
    "PROMPT",
    "RANKING_FIELDS",
    "RESERVED_NAMES",
    "RESPONSE",
    "SCOPE",
    "SIZE",
    "TEXT_KEY",
    "VECTOR",
    "RedisKeys",
    "check_index_dim",
    "check_meta",
    "check_name",
    "meta_record",
    "schema_dict",
    "stored_fingerprint",
]

FORMAT = 1
_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
#: Cache names whose keys would overlap another structure's (retrieval stores: ``semcache:rag:``).
RESERVED_NAMES = frozenset({"rag"})

# Hash fields of an entry. Indexed: scope, text_key (TAG), vector (HNSW), expires_at (NUMERIC).
SCOPE, TEXT_KEY, VECTOR = "scope", "text_key", "vector"
PROMPT, RESPONSE, METADATA = "prompt", "response", "metadata"
CREATED_AT, EXPIRES_AT = "created_at", "expires_at"
# Not indexed: what eviction ranks an entry by (uses, tokens a hit saves, bytes, last use).
HITS, COST, SIZE, ATIME = "hits", "cost", "size", "atime"
RANKING_FIELDS = (HITS, COST, SIZE, ATIME)


def check_name(name: object, kind: str) -> None:
    """Refuse a name unfit for Redis keys: 1-64 characters of ``A-Z a-z 0-9 _ . -``.

    ``kind`` says whose name it is in the message (``"cache"``, ``"retrieval store"``).
    """
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ConfigurationError(
            f"a Redis {kind} name is 1-64 characters of A-Z a-z 0-9 _ . -, got {name!r}"
        )


@dataclass(frozen=True, slots=True)
class RedisKeys:
    """Every Redis name one cache uses, derived from its ``name``."""

    name: str

    def __post_init__(self) -> None:
        check_name(self.name, "cache")
        if self.name in RESERVED_NAMES:
            raise ConfigurationError(
                f"the Redis cache name {self.name!r} is reserved (semcache:{self.name}:* holds "
                "retrieval stores); choose another"
            )

    @property
    def base(self) -> str:
        return f"semcache:{self.name}:"

    @property
    def meta(self) -> str:
        return f"{self.base}meta"

    @property
    def lru(self) -> str:
        return f"{self.base}lru"

    @property
    def clock(self) -> str:
        return f"{self.base}clock"

    @property
    def eviction(self) -> str:
        return f"{self.base}eviction"

    @property
    def entry_prefix(self) -> str:
        return f"{self.base}e:"

    @property
    def index(self) -> str:
        return f"{self.base}idx:v{FORMAT}"

    def entry_id(self, scope_key: str, text_key: str) -> str:
        return f"{scope_key}:{text_key}"

    def entry_key(self, entry_id: str) -> str:
        return self.entry_prefix + entry_id

    def id_of(self, key: str) -> str:
        return key[len(self.entry_prefix) :] if key.startswith(self.entry_prefix) else key


def schema_dict(keys: RedisKeys, dim: int, hnsw: HnswParams) -> dict[str, Any]:
    """The redisvl ``IndexSchema`` of one cache: HNSW over cosine distance, TAG partitions."""
    return {
        "index": {"name": keys.index, "prefix": keys.entry_prefix, "storage_type": "hash"},
        "fields": [
            {"name": SCOPE, "type": "tag"},
            {"name": TEXT_KEY, "type": "tag"},
            {"name": EXPIRES_AT, "type": "numeric"},
            *labels.schema_fields(),
            {
                "name": VECTOR,
                "type": "vector",
                "attrs": {
                    "algorithm": "hnsw",
                    "dims": dim,
                    "distance_metric": "cosine",
                    "datatype": "float32",
                    "m": hnsw.m,
                    "ef_construction": hnsw.ef_construction,
                    "ef_runtime": hnsw.ef_for(0),  # each query sets its own
                    "initial_cap": hnsw.initial_capacity,
                },
            },
        ],
    }


def meta_record(fingerprint: ModelFingerprint) -> str:
    """What ``semcache:N:meta`` holds: the format and the embedding model's fingerprint."""
    return json.dumps({"format": FORMAT, "fingerprint": fingerprint.to_dict()}, sort_keys=True)


def stored_fingerprint(stored: str | bytes, where: str) -> ModelFingerprint:
    """The embedding model in a ``semcache:N:meta`` record; refuses another format."""
    try:
        data = json.loads(stored)
        fmt = int(data["format"])
        theirs = ModelFingerprint.from_dict(data["fingerprint"])
    except (ValueError, KeyError, TypeError) as e:
        raise ConfigurationError(f"{where} holds unreadable metadata ({e}); clear it") from e
    if fmt != FORMAT:
        raise ConfigurationError(f"{where} has format {fmt}; this semcache reads format {FORMAT}")
    return theirs


def check_meta(stored: str | bytes, fingerprint: ModelFingerprint, where: str) -> None:
    """Refuse a cache written in another format or by another embedding model."""
    theirs = stored_fingerprint(stored, where)
    check_fingerprint(theirs, fingerprint, where, "use the same embedder, or another cache name")


def check_index_dim(schema: Mapping[str, Any], dim: int, where: str) -> None:
    """Refuse an existing index whose vector field has another size (from ``FT.INFO``)."""
    for field in schema.get("fields", []):
        if field.get("name") == VECTOR:
            theirs = int(field.get("attrs", {}).get("dims", -1))
            if theirs != dim:
                raise FingerprintMismatchError(
                    f"{where} indexes {theirs}-d vectors; this embedder makes {dim}-d vectors"
                )
            return
    raise ConfigurationError(f"{where} exists but has no {VECTOR!r} field; clear it")
