"""The Redis backend's decisions as pure functions: key names, index schema, encoding, parsing.

Nothing here does I/O, so the sync backend (and any async twin) share every decision.

Key layout for a cache named ``N`` (no hash tags, so entries spread over a cluster's shards and a
sharded query engine searches them all; every multi-command step touches one key)::

    semcache:N:meta                  JSON: format, embedding fingerprint, HNSW settings
    semcache:N:lru                   sorted set: entry id -> eviction priority (lowest first)
    semcache:N:clock                 sorted set, one member: GDSF's clock (raised with ZADD GT)
    semcache:N:eviction              the policy the priorities were computed by ("lru", "gdsf")
    semcache:N:e:<scope>:<text_key>  hash: one entry (vector, prompt, JSON response, and for
                                     eviction its uses, cost, size and last use)
    semcache:N:idx:v1                the search index over semcache:N:e:*

The ``lru`` name is kept from when the score was the last access time, so old caches keep
working; with :class:`~semcache.backends.eviction.LRU` it still is.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from semcache.backends.base import check_vector, encode_json
from semcache.backends.eviction import LRU, Eviction, entry_cost, metadata_cost
from semcache.backends.redis import labels
from semcache.backends.vector_index import HnswParams
from semcache.errors import (
    ConfigurationError,
    CorruptEntryError,
    FingerprintMismatchError,
    InvalidInputError,
)
from semcache.models import Candidate, Entry, ModelFingerprint, NewEntry, check_fingerprint

if TYPE_CHECKING:
    from numpy.typing import NDArray

    from semcache.selector import Selector

__all__ = [
    "BATCH",
    "CLOCK",
    "DELETE_BATCH",
    "FILL_LUA",
    "FORMAT",
    "PUT_LUA",
    "PUT_SHA",
    "RANK_READ",
    "RESERVED_NAMES",
    "TOUCH_LUA",
    "TOUCH_SHA",
    "RedisKeys",
    "ScopeSizes",
    "as_text",
    "candidates",
    "check_index_dim",
    "check_max_entries",
    "check_meta",
    "check_name",
    "clock_value",
    "count_query",
    "entry_fields",
    "entry_rows",
    "evict_batch",
    "expired_filter",
    "hybrid_policy",
    "ids_query",
    "knn_query",
    "listed",
    "live_match",
    "meta_record",
    "parse_entry",
    "queue_deletes",
    "queue_touch",
    "queue_writes",
    "raised_clock",
    "rank_fields",
    "rank_of",
    "read_rank",
    "recorded_eviction",
    "reload_script",
    "result_ids",
    "scan_cursor",
    "schema_dict",
    "scope_filter",
    "similarity",
    "stored_entries",
    "stored_fingerprint",
    "touch_score",
    "ttl_ms",
    "vector_query",
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
_RANKING_ORDER = (HITS, COST, SIZE, ATIME)
_RANKING = frozenset(_RANKING_ORDER)
#: The one member of ``semcache:N:clock``.
CLOCK = "clock"
DISTANCE = "vector_distance"
RETURN_FIELDS = [
    SCOPE,
    TEXT_KEY,
    PROMPT,
    RESPONSE,
    METADATA,
    CREATED_AT,
    EXPIRES_AT,
    *labels.LABEL_FIELDS,
]

#: How many ids one eviction step or id scan handles.
BATCH = 500
#: How many entries one pipelined delete removes. Deleting an indexed hash also removes its
#: vector from the HNSW graph: 500 in one pipeline outlasted the default 0.5 s socket timeout
#: on a loaded 2-core host (bench/bench_ops.py), 50 keep each round trip well inside it.
DELETE_BATCH = 50

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

#: Count a use of an entry still stored (one key, so cluster-safe): ``{hits, cost, size}``, or
#: nil for an entry gone (nothing is created). The priority is computed by the caller.
TOUCH_LUA = """
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
local hits = redis.call('HINCRBY', KEYS[1], 'hits', 1)
redis.call('HSET', KEYS[1], 'atime', ARGV[1])
local f = redis.call('HMGET', KEYS[1], 'cost', 'size')
return {hits, f[1], f[2]}
"""
TOUCH_SHA = hashlib.sha1(TOUCH_LUA.encode("utf-8"), usedforsecurity=False).hexdigest()

#: Set fields of an entry still stored (re-ranking must not create a hash for an expired one).
FILL_LUA = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
return redis.call('HSET', KEYS[1], unpack(ARGV))
"""


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


def similarity(distance: Any) -> float:
    """Redis COSINE distance (0..2) to the project's unit: cosine similarity = 1 - distance."""
    return 1.0 - float(distance)


# Relative costs measured on RediSearch 2.10 (Redis Stack 7.4), 384-d float32, M=16: brute force
# over the filtered documents (ADHOC_BF) ~1.6 us per document; filtered HNSW (BATCHES) ~3 us per
# unit of search width. The engine's own choice picks brute force for a scope holding all of a
# 10k-entry index (16 ms instead of 0.5 ms), so the backend chooses.
_BRUTE_COST, _HNSW_COST = 1.6, 3.0


def hybrid_policy(scope_size: int, total: int, k: int, ef_runtime: int) -> str:
    """``"ADHOC_BF"`` (exact over the scope) or ``"BATCHES"`` (filtered HNSW), the cheaper one.

    BATCHES needs about ``k / (scope_size / total)`` graph candidates to find ``k`` in the scope.
    """
    if scope_size <= 0:
        return "ADHOC_BF"
    ratio = scope_size / max(total, scope_size)
    brute = _BRUTE_COST * scope_size
    batches = _HNSW_COST * max(ef_runtime, k / ratio)
    return "ADHOC_BF" if brute <= batches else "BATCHES"


def vector_query(
    scope_key: str,
    vector: NDArray[np.float32],
    k: int,
    ef_runtime: int,
    policy: str | None = None,
) -> Any:
    """A redisvl KNN query pre-filtered to one scope (the TAG filter runs inside the search)."""
    from redisvl.query import VectorQuery
    from redisvl.query.filter import Tag

    return VectorQuery(
        vector=vector.tobytes(),
        vector_field_name=VECTOR,
        return_fields=RETURN_FIELDS,
        filter_expression=Tag(SCOPE) == scope_key,
        num_results=k,
        ef_runtime=None if policy == "ADHOC_BF" else max(ef_runtime, k),  # HNSW only
        hybrid_policy=policy,
        return_score=True,
        dtype="float32",
    )


def knn_query(
    scope_key: str,
    vector: NDArray[np.float32],
    k: int,
    hnsw: HnswParams,
    sizes: tuple[int, int],
) -> Any:
    """The KNN query of a lookup, with the cheaper plan for a scope of ``sizes`` (scope, total).

    The graph holds every scope's entries, so its search width follows the total.
    """
    ef_runtime = hnsw.ef_for(sizes[1])
    policy = hybrid_policy(sizes[0], sizes[1], k, ef_runtime)
    return vector_query(scope_key, vector, k, ef_runtime, policy)


class ScopeSizes:
    """Entry counts per scope, remembered for a few seconds: they only steer the query plan."""

    def __init__(
        self,
        seconds: float = 10.0,
        *,
        limit: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.seconds, self.limit, self._clock = seconds, limit, clock
        self._known: dict[str, tuple[int, int, float]] = {}

    def get(self, scope_key: str) -> tuple[int, int] | None:
        """The scope's and the cache's entry counts, if counted recently."""
        known = self._known.get(scope_key)
        if known is not None and self._clock() - known[2] < self.seconds:
            return known[0], known[1]
        return None

    def remember(self, scope_key: str, scope_size: int, total: int) -> tuple[int, int]:
        if len(self._known) >= self.limit:
            self._known.clear()
        self._known[scope_key] = (scope_size, total, self._clock())
        return scope_size, total

    def clear(self) -> None:
        self._known.clear()


def count_query(scope_key: str | None = None) -> Any:
    """A redisvl query counting the entries of one scope, or of the whole cache."""
    from redisvl.query import CountQuery
    from redisvl.query.filter import Tag

    return CountQuery() if scope_key is None else CountQuery(Tag(SCOPE) == scope_key)


def ids_query(filter_expression: Any, limit: int) -> Any:
    """A redisvl query for up to ``limit`` ids (no payload) of entries matching a filter."""
    from redisvl.query import FilterQuery

    query = FilterQuery(filter_expression=filter_expression, num_results=limit)
    query.no_content()
    return query


def scope_filter(scope_key: str | None) -> Any:
    """A redisvl filter matching one scope's entries, or every entry."""
    from redisvl.query.filter import FilterExpression, Tag

    return FilterExpression("*") if scope_key is None else Tag(SCOPE) == scope_key


def expired_filter(now: float) -> Any:
    """A redisvl filter matching the entries expired at ``now``."""
    from redisvl.query.filter import Num

    return Num(EXPIRES_AT) <= now


def result_ids(keys: RedisKeys, result: Any) -> list[str]:
    """The entry ids of a raw ``FT.SEARCH`` result."""
    return [keys.id_of(as_text(doc.id)) for doc in result.docs]


def live_match(entry: Entry | None, scope_key: str, text_key: str, now: float) -> Entry | None:
    """The exact tier's answer: ``entry`` if it is live and really of this scope and text."""
    if entry is None or entry.expired(now):
        return None
    if entry.scope_key != scope_key or entry.text_key != text_key:
        return None
    return entry


def candidates(
    keys: RedisKeys, docs: Iterable[Mapping[str, Any]], scope_key: str, now: float
) -> list[Candidate]:
    """Processed KNN results as live candidates of ``scope_key``, most similar first."""
    out: list[Candidate] = []
    for doc in docs:
        if PROMPT not in doc and SCOPE not in doc:
            continue  # expired while the search ran: the engine returned its id only
        entry = parse_entry(keys.id_of(doc["id"]), doc)
        if entry.scope_key == scope_key and not entry.expired(now):
            out.append(Candidate(entry, similarity(doc[DISTANCE])))
    out.sort(key=lambda c: -c.similarity)
    return out


#: One entry to write: the entry, its id, its hash fields flattened for ``HSET``, its cost
#: (tokens a hit saves) and its size (bytes of its fields).
Row = tuple[NewEntry, str, list[Any], float, int]


def _field_bytes(value: Any) -> int:
    return len(value) if isinstance(value, bytes) else len(str(value).encode("utf-8"))


def _hash_size(fields: Mapping[str, Any]) -> int:
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
        size = _hash_size(fields)
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


def clock_value(score: Any) -> float:
    """GDSF's clock from ``ZSCORE semcache:N:clock clock`` (none yet: 0)."""
    return 0.0 if score is None else float(score)


def queue_touch(keys: RedisKeys, pipe: Any, entry_id: str, eviction: Eviction, now: float) -> Any:
    """Queue (no I/O) a use of an entry: count it; LRU also sets its score, GDSF reads the clock.

    GDSF's score needs the count, so :func:`touch_score` computes it for a second command.
    """
    pipe.evalsha(TOUCH_SHA, 1, keys.entry_key(entry_id), repr(float(now)))
    if eviction.uses_clock:
        pipe.zscore(keys.clock, CLOCK)
    else:  # XX: an id no longer listed (deleted, evicted) is not resurrected
        pipe.zadd(keys.lru, {entry_id: now}, xx=True)
    return pipe


def touch_score(eviction: Eviction, results: Sequence[Any], now: float) -> float | None:
    """After :func:`queue_touch`, GDSF's new score for the entry; ``None`` when there is none to
    set (LRU set it already, or the entry is gone). Counts missing from an entry written by an
    older semcache rank it as worth nothing until it is rewritten."""
    if not eviction.uses_clock or results[0] is None:
        return None
    hits, cost, size = results[0]
    return eviction.priority(
        clock_value(results[1]),
        int(hits),
        0.0 if cost is None else float(cost),
        1 if size is None else int(size),
        now,
    )


#: What re-ranking reads of an entry with ``HMGET`` (not the vector: its size is ``4 * dim``).
RANK_READ = (SCOPE, TEXT_KEY, PROMPT, RESPONSE, METADATA, CREATED_AT, EXPIRES_AT, *_RANKING_ORDER)


def read_rank(values: Sequence[Any]) -> dict[str, Any] | None:
    """The fields ``HMGET key *RANK_READ`` returned, or ``None`` for an entry gone."""
    f = {k: v for k, v in zip(RANK_READ, values, strict=True) if v is not None}
    return f if SCOPE in f else None


def rank_fields(f: Mapping[str, Any], dim: int) -> dict[str, str]:
    """The ranking fields an entry lacks (written by an older semcache), from its content."""
    missing: dict[str, str] = {}
    if COST not in f:
        cost = metadata_cost(
            as_text(f.get(PROMPT, "")), as_text(f.get(RESPONSE, "")), as_text(f.get(METADATA, ""))
        )
        missing[COST] = repr(cost)
    if SIZE not in f:
        missing[SIZE] = str(_hash_size(f) + 4 * dim)
    if HITS not in f:
        missing[HITS] = "1"  # stored once; its uses were not counted
    return missing


def rank_of(eviction: Eviction, f: Mapping[str, Any], dim: int, clock: float) -> float:
    """An entry's priority from :func:`read_rank`'s fields, for re-ranking a cache under another
    policy: last use for LRU, uses and cost for GDSF."""
    f = {**f, **rank_fields(f, dim)}
    used = f.get(ATIME, f.get(CREATED_AT, 0.0))
    return eviction.priority(
        clock,
        int(as_text(f[HITS])),
        float(as_text(f[COST])),
        int(as_text(f[SIZE])),
        float(as_text(used)),
    )


def raised_clock(
    eviction: Eviction, popped: Sequence[tuple[Any, float]]
) -> dict[str, float] | None:
    """After ``ZPOPMIN`` popped ``(id, score)`` pairs, the ``ZADD GT`` mapping raising GDSF's
    clock to the highest score evicted; ``None`` for LRU."""
    if not eviction.uses_clock or not popped:
        return None
    return {CLOCK: eviction.clock_after(0.0, (float(score) for _, score in popped))}


def recorded_eviction(stored: Any) -> str:
    """The policy name a cache's priorities were computed by (none recorded: LRU's)."""
    return LRU().name if stored is None else as_text(stored)


def queue_deletes(keys: RedisKeys, pipe: Any, ids: Sequence[str]) -> Any:
    """Queue (no I/O) the deletion of entries and of their LRU ids on ``pipe``."""
    for entry_id in ids:
        pipe.delete(keys.entry_key(entry_id))  # one key per command: cluster-safe
    pipe.zrem(keys.lru, *ids)
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


def check_max_entries(max_entries: int) -> None:
    if max_entries < 0:
        raise ConfigurationError(f"max_entries must be >= 0, got {max_entries}")


def evict_batch(size: int, max_entries: int, batch: int) -> int:
    """How many lowest-priority ids to pop next for a list of ``size`` (0: done)."""
    return max(0, min(size - max_entries, batch))


def listed(
    keys: RedisKeys,
    names: Sequence[Any],
    hashes: Sequence[Mapping[Any, Any]],
    selector: Selector,
    with_vectors: bool,
) -> tuple[list[Entry], list[NDArray[np.float32]]]:
    """The selected entries (and their vectors) among scanned keys and their ``HGETALL``s; keys
    gone since the scan (empty hashes) are skipped."""
    entries: list[Entry] = []
    vectors: list[NDArray[np.float32]] = []
    for name, fields in zip(names, hashes, strict=True):
        if not fields:
            continue
        entry = parse_entry(keys.id_of(as_text(name)), fields)
        if not selector.matches(entry):
            continue
        entries.append(entry)
        if with_vectors:
            raw = fields.get(VECTOR.encode(), fields.get(VECTOR, b""))
            vectors.append(np.frombuffer(raw, dtype=np.float32).copy())
    return entries, vectors


def scan_cursor(cursor: str | None) -> int:
    """The ``SCAN`` cursor of a page cursor (``None``: the start)."""
    if cursor is None:
        return 0
    if not cursor.isdigit():
        raise InvalidInputError(f"not a cursor of this store: {cursor!r}")
    return int(cursor)
