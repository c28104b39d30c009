"""The Redis backend's eviction bookkeeping: priorities in ``semcache:N:lru``, GDSF's clock,
counting a use, re-ranking under another policy, popping and deleting entries.

Pure functions (no I/O): they compute priorities and queue commands on a pipeline the caller
runs. The policies themselves are :mod:`semcache.backends.eviction`'s.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

from semcache.backends.eviction import LRU, Eviction, metadata_cost
from semcache.backends.redis.codec import as_text, hash_size
from semcache.backends.redis.schema import (
    ATIME,
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
    RedisKeys,
)
from semcache.errors import ConfigurationError

__all__ = [
    "BATCH",
    "CLOCK",
    "DELETE_BATCH",
    "FILL_LUA",
    "RANK_READ",
    "TOUCH_LUA",
    "TOUCH_SHA",
    "check_max_entries",
    "clock_value",
    "evict_batch",
    "queue_deletes",
    "queue_touch",
    "raised_clock",
    "rank_fields",
    "rank_of",
    "read_rank",
    "recorded_eviction",
    "touch_score",
]

#: The one member of ``semcache:N:clock``.
CLOCK = "clock"
#: How many ids one eviction step or id scan handles.
BATCH = 500
#: How many entries one pipelined delete removes. Deleting an indexed hash also removes its
#: vector from the HNSW graph: 500 in one pipeline outlasted the default 0.5 s socket timeout
#: on a loaded 2-core host (bench/bench_ops.py), 50 keep each round trip well inside it.
DELETE_BATCH = 50

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
RANK_READ = (SCOPE, TEXT_KEY, PROMPT, RESPONSE, METADATA, CREATED_AT, EXPIRES_AT, *RANKING_FIELDS)


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
        missing[SIZE] = str(hash_size(f) + 4 * dim)
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


def check_max_entries(max_entries: int) -> None:
    if max_entries < 0:
        raise ConfigurationError(f"max_entries must be >= 0, got {max_entries}")


def evict_batch(size: int, max_entries: int, batch: int) -> int:
    """How many lowest-priority ids to pop next for a list of ``size`` (0: done)."""
    return max(0, min(size - max_entries, batch))
