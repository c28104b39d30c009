"""Cost-aware eviction (GDSF) and LRU on the embedded and Redis backends, real SQLite and Redis.

Entries carry token usage in their metadata, as ``@cached`` stores it; "costly" saves 2,000
tokens per hit, "cheap" 10. Vectors are random unit vectors (nothing here searches).
"""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from semcache import (
    CachePolicy,
    ConfigurationError,
    EmbeddedBackend,
    MemoryBackend,
    ModelFingerprint,
    SemanticCache,
)
from semcache.backends.eviction import (
    CHARS_PER_TOKEN,
    GDSF,
    LRU,
    Eviction,
    check_eviction,
    entry_cost,
    metadata_cost,
)
from semcache.models import NewEntry
from semcache.testing import HashingEmbedder

DIM = 16
FP = ModelFingerprint(model="evict-model", dim=DIM)
KINDS = ["embedded", pytest.param("redis", marks=pytest.mark.redis)]


def vec(i: int) -> np.ndarray:
    v = np.random.default_rng(i).standard_normal(DIM).astype(np.float32)
    return v / np.linalg.norm(v)


def entry(name: str, tokens: int, at: float, scope: str = "s") -> NewEntry:
    return NewEntry(
        scope_key=scope,
        text_key=name,
        prompt=f"question {name}",
        response=f"answer {name}",
        created_at=at,
        metadata={"prompt_tokens": tokens // 2, "completion_tokens": tokens - tokens // 2},
    )


class Stores:
    """Backends of one kind on one store, reopened with any policy."""

    def __init__(self, kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
        self.kind, self.path = kind, tmp_path / "store"
        self.url = request.getfixturevalue("redis_url") if kind == "redis" else ""
        self.name = f"ev{uuid.uuid4().hex[:10]}"
        self.opened: list[Any] = []

    def open(self, eviction: Eviction | None = None) -> Any:
        backend: Any
        if self.kind == "embedded":
            backend = EmbeddedBackend(self.path, eviction=eviction)
        else:
            from semcache.backends.redis import RedisBackend

            backend = RedisBackend(self.url, name=self.name, eviction=eviction)
        backend.bind(FP)
        self.opened.append(backend)
        return backend

    def priorities(self, backend: Any) -> dict[str, float]:
        """Entry id -> priority, as the store holds it."""
        if self.kind == "embedded":
            rows = backend._db.execute("SELECT id, priority FROM entries").fetchall()
            return {str(r[0]): float(r[1]) for r in rows}
        pairs = backend.client.zrange(backend.keys.lru, 0, -1, withscores=True)
        return {m.decode(): float(s) for m, s in pairs}

    def clock(self, backend: Any) -> float:
        if self.kind == "embedded":
            return float(backend._meta("eviction_clock"))
        score = backend.client.zscore(backend.keys.clock, "clock")
        return 0.0 if score is None else float(score)

    def close(self) -> None:
        for backend in reversed(self.opened):
            if self.kind == "redis" and not backend._closed:
                backend.drop()
            backend.close()


@pytest.fixture(params=KINDS)
def stores(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Stores]:
    s = Stores(request.param, tmp_path, request)
    yield s
    s.close()


def live(backend: Any, ids: dict[str, str]) -> set[str]:
    return {name for name, i in ids.items() if backend.get(i) is not None}


# -- the arithmetic ----------------------------------------------------------------------------


def test_gdsf_priority_and_clock() -> None:
    assert GDSF().priority(5.0, 3, 100.0, 50, now=1e9) == pytest.approx(5.0 + 3 * 100 / 50)
    assert GDSF(per_byte=False).priority(5.0, 3, 100.0, 50, now=1e9) == pytest.approx(305.0)
    assert GDSF().clock_after(2.0, [1.0, 7.5, 3.0]) == 7.5
    assert GDSF().clock_after(9.0, []) == 9.0
    assert LRU().priority(5.0, 3, 100.0, 50, now=42.0) == 42.0
    assert LRU().clock_after(0.0, [1e9]) == 0.0


def test_cost_is_the_recorded_usage_else_an_estimate_from_text() -> None:
    assert entry_cost("q", '"a"', {"prompt_tokens": 30, "completion_tokens": 200}) == 230.0
    text, response = "x" * 40, '"' + "y" * 78 + '"'
    estimate = (40 + 80) / CHARS_PER_TOKEN
    assert entry_cost(text, response, {}) == estimate
    for junk in ({"prompt_tokens": "9", "completion_tokens": None}, {"prompt_tokens": True}):
        assert entry_cost(text, response, junk) == estimate
    assert entry_cost("", '""', {}) == 1.0  # never 0: every entry is worth something
    assert metadata_cost(text, response, "{not json") == estimate
    assert metadata_cost(text, response, '{"completion_tokens": 12}') == 12.0


@pytest.mark.parametrize("bad", ["gdsf", GDSF, None, 3])
def test_a_policy_that_is_not_one_fails_loudly(bad: object, tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="LRU\\(\\) or GDSF\\(\\)"):
        check_eviction(bad)
    if bad is not None:
        with pytest.raises(ConfigurationError, match="eviction must be"):
            EmbeddedBackend(tmp_path / "x", eviction=bad)  # type: ignore[arg-type]
        with pytest.raises(ConfigurationError, match="eviction must be"):
            MemoryBackend(eviction=bad)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="per_byte"):
        GDSF(per_byte="yes")  # type: ignore[arg-type]


# -- both backends -----------------------------------------------------------------------------


def test_gdsf_evicts_the_cheap_and_cold_before_the_costly_and_hot(stores: Stores) -> None:
    b = stores.open(GDSF())
    ids = {
        "costly_old": b.put(entry("costly_old", 2000, at=1.0), vec(1)).id,
        "costly_hot": b.put(entry("costly_hot", 2000, at=2.0), vec(2)).id,
        "cheap_new": b.put(entry("cheap_new", 10, at=3.0), vec(3)).id,
        "cheap_hot": b.put(entry("cheap_hot", 10, at=4.0), vec(4)).id,
    }
    for _ in range(3):
        b.touch(ids["costly_hot"], now=5.0)
        b.touch(ids["cheap_hot"], now=5.0)
    assert b.evict(3) == 1
    assert live(b, ids) == {"costly_old", "costly_hot", "cheap_hot"}  # LRU would drop costly_old
    assert b.evict(2) == 1
    assert live(b, ids) == {"costly_old", "costly_hot"}  # 4 uses of 10 tokens < 1 of 2,000
    assert b.evict(2) == 0


def test_a_use_is_ranked_by_the_shared_arithmetic(stores: Stores) -> None:
    b = stores.open(GDSF())
    stored = b.put(entry("a", 300, at=1.0), vec(1)).id
    if stores.kind == "embedded":
        size = b.stats().stored_bytes  # the one entry's bytes, as max_bytes counts them
    else:
        size = int(b.client.hget(b.keys.entry_key(stored), "size"))
    assert stores.priorities(b)[stored] == pytest.approx(GDSF().priority(0.0, 1, 300.0, size, 1))
    b.touch(stored, now=2.0)
    b.touch(stored, now=3.0)
    assert stores.priorities(b)[stored] == pytest.approx(GDSF().priority(0.0, 3, 300.0, size, 3))


def test_lru_when_selected_ignores_cost(stores: Stores) -> None:
    b = stores.open(LRU())
    ids = {
        "costly_old": b.put(entry("costly_old", 2000, at=1.0), vec(1)).id,
        "cheap_mid": b.put(entry("cheap_mid", 10, at=2.0), vec(2)).id,
        "cheap_new": b.put(entry("cheap_new", 10, at=3.0), vec(3)).id,
    }
    b.touch(ids["cheap_mid"], now=4.0)
    assert b.evict(2) == 1
    assert live(b, ids) == {"cheap_mid", "cheap_new"}
    assert stores.priorities(b)[ids["cheap_mid"]] == 4.0  # the priority is the last use


def test_the_clock_ages_entries_nobody_uses(stores: Stores) -> None:
    """An entry once worth a lot but never used again falls below the newcomers."""
    b = stores.open(GDSF(per_byte=False))
    old = b.put(entry("old", 50, at=0.0), vec(0)).id
    for _ in range(3):
        b.touch(old, now=1.0)  # priority 4 * 50 = 200
    for i in range(10):  # each newcomer is worth clock + 60: the clock climbs past 200
        b.put(entry(f"n{i}", 60, at=float(i + 2)), vec(i + 10))
        b.evict(2)
    assert b.get(old) is None
    assert stores.clock(b) >= 200.0
    newest = stores.priorities(b)
    assert all(p > 200.0 for p in newest.values())
    assert b.count() == 2


def test_priorities_and_clock_survive_a_restart(stores: Stores) -> None:
    b = stores.open(GDSF())
    ids = {
        n: b.put(entry(n, t, at=float(i)), vec(i)).id
        for i, (n, t) in enumerate([("a", 100), ("b", 500), ("c", 900)])
    }
    b.touch(ids["b"], now=9.0)
    assert b.evict(2) == 1  # "a" goes; the clock becomes its priority
    before, clock = stores.priorities(b), stores.clock(b)
    assert clock > 0
    b.close()
    b = stores.open(GDSF())
    assert stores.priorities(b) == pytest.approx(before)
    assert stores.clock(b) == pytest.approx(clock)
    d = b.put(entry("d", 100, at=10.0), vec(9)).id
    assert stores.priorities(b)[d] > clock  # newcomers start from the saved clock
    assert b.evict(2) == 1
    assert live(b, {**ids, "d": d}) == {"b", "c"}


def test_reopening_with_another_policy_reranks_every_entry(stores: Stores) -> None:
    b = stores.open(LRU())
    ids = {
        "costly": b.put(entry("costly", 3000, at=1000.0), vec(1)).id,
        "cheap": b.put(entry("cheap", 10, at=2000.0), vec(2)).id,
    }
    b.touch(ids["cheap"], now=3000.0)
    b.close()
    b = stores.open(GDSF())
    ranks = stores.priorities(b)
    assert ranks[ids["costly"]] > ranks[ids["cheap"]] > 0
    assert ranks[ids["costly"]] < 100  # tokens per byte, not timestamps
    b.close()
    b = stores.open(LRU())
    assert stores.priorities(b) == {ids["costly"]: 1000.0, ids["cheap"]: 3000.0}  # last use again
    assert b.evict(1) == 1
    assert live(b, ids) == {"cheap"}


def test_touching_an_entry_that_is_gone_creates_nothing(stores: Stores) -> None:
    b = stores.open(GDSF())
    gone = b.put(entry("gone", 100, at=1.0), vec(1)).id
    assert b.delete([gone]) == 1
    b.touch(gone, now=2.0)
    assert b.count() == 0
    assert stores.priorities(b) == {}
    if stores.kind == "redis":
        assert not b.client.exists(b.keys.entry_key(gone))


def test_evict_counts_what_it_deleted(stores: Stores) -> None:
    b = stores.open(GDSF())
    for i in range(7):
        b.put(entry(f"e{i}", 10 * (i + 1), at=float(i)), vec(i))
    assert b.evict(10) == 0
    assert b.evict(4) == 3
    assert b.count() == 4
    assert b.evict(0) == 4
    assert b.count() == 0


# -- embedded only -----------------------------------------------------------------------------

#: The entries table as semcache wrote it before cost-aware eviction.
_OLD_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE entries (
    id INTEGER PRIMARY KEY AUTOINCREMENT, scope_key TEXT NOT NULL, text_key TEXT NOT NULL,
    prompt TEXT NOT NULL, response TEXT NOT NULL, metadata TEXT NOT NULL,
    created_at REAL NOT NULL, expires_at REAL, last_access REAL NOT NULL,
    vector BLOB NOT NULL, UNIQUE (scope_key, text_key)
);
CREATE INDEX entries_lru ON entries (last_access);
"""


def _old_store(path: Path) -> None:
    path.mkdir()
    db = sqlite3.connect(path / "entries.sqlite3")
    db.executescript(_OLD_SCHEMA)
    rows = [
        ("costly", '{"prompt_tokens": 1000, "completion_tokens": 1000}', 1.0),
        ("cheap", '{"prompt_tokens": 5, "completion_tokens": 5}', 5.0),
        ("unknown", "{}", 3.0),
    ]
    for i, (name, meta, used) in enumerate(rows):
        db.execute(
            "INSERT INTO entries (scope_key, text_key, prompt, response, metadata, created_at,"
            " expires_at, last_access, vector) VALUES ('s', ?, ?, '\"answer\"', ?, ?, NULL, ?, ?)",
            (name, f"question {name}", meta, used, used, vec(i).tobytes()),
        )
    db.commit()
    db.close()


@pytest.mark.parametrize("eviction", [LRU(), GDSF()])
def test_an_old_sqlite_store_is_migrated_in_place(tmp_path: Path, eviction: Eviction) -> None:
    _old_store(tmp_path / "old")
    for _ in range(2):  # the second open finds the columns there: nothing to add
        with EmbeddedBackend(tmp_path / "old", eviction=eviction) as b:
            b.bind(FP)
            cols = {r[1] for r in b._db.execute("PRAGMA table_info(entries)")}
            assert {"hits", "cost", "priority"} <= cols
            costs = dict(b._db.execute("SELECT text_key, cost FROM entries").fetchall())
            assert (costs["costly"], costs["cheap"]) == (2000.0, 10.0)
            assert costs["unknown"] == (len("question unknown") + len('"answer"')) / 4
    with EmbeddedBackend(tmp_path / "old", eviction=eviction) as b:
        b.bind(FP)
        assert b.evict(2) == 1
        left = {r[0] for r in b._db.execute("SELECT text_key FROM entries")}
    # LRU drops the least recently used ("costly", used at 1.0); GDSF the cheapest ("unknown",
    # 6 tokens estimated from its text, against 10 and 2,000 recorded)
    assert left == ({"cheap", "unknown"} if isinstance(eviction, LRU) else {"costly", "cheap"})


def test_the_byte_cap_evicts_in_the_policy_order(tmp_path: Path) -> None:
    with EmbeddedBackend(tmp_path / "b", eviction=GDSF(), max_bytes=10**6) as b:
        b.bind(FP)
        costly = b.put(entry("costly", 2000, at=1.0), vec(1)).id
        cheap = b.put(entry("cheap", 10, at=2.0), vec(2)).id
        b.max_bytes = b.stats().stored_bytes + 10  # room for nothing more
        b.put(entry("third", 500, at=3.0), vec(3))
        assert b.get(cheap) is None
        assert b.get(costly) is not None
        assert b.evict(10) == 1  # the cap's eviction, reported once


def test_the_cache_passes_usage_through_to_the_ranking() -> None:
    """Through SemanticCache: the metadata ``@cached`` writes decides what survives."""
    backend = MemoryBackend(eviction=GDSF())
    with SemanticCache(
        embedder=HashingEmbedder(DIM), backend=backend, policy=CachePolicy(max_entries=2)
    ) as cache:
        cache.store("alpha beta", "long answer", metadata={"completion_tokens": 3000})
        cache.store("gamma delta", "short", metadata={"completion_tokens": 3})
        cache.store("epsilon zeta", "short", metadata={"completion_tokens": 4})
        assert cache.lookup("alpha beta").hit
        assert not cache.lookup("gamma delta").hit
        assert cache.info().evictions == 1


async def test_async_methods_rank_as_the_sync_ones(
    request: pytest.FixtureRequest, tmp_path: Path, stores: Stores
) -> None:
    """The same puts, uses and evictions, sync on one store and async on another."""
    from semcache.backends.base import as_async

    twin = Stores(stores.kind, tmp_path / "twin", request)
    try:
        sync_b, async_b = stores.open(GDSF()), twin.open(GDSF())
        ab = as_async(async_b)
        plan = [("a", 100), ("b", 2000), ("c", 10), ("d", 700), ("e", 50)]
        sync_ids, async_ids = {}, {}
        for i, (name, tokens) in enumerate(plan):
            sync_ids[name] = sync_b.put(entry(name, tokens, at=float(i)), vec(i)).id
            async_ids[name] = (await ab.aput(entry(name, tokens, at=float(i)), vec(i))).id
            if name in ("a", "c"):
                sync_b.touch(sync_ids[name], now=float(i))
                await ab.atouch(async_ids[name], now=float(i))
            assert sync_b.evict(3) == await ab.aevict(3)
        assert live(sync_b, sync_ids) == live(async_b, async_ids) == {"b", "d", "a"}
        names = {v: k for k, v in sync_ids.items()} | {v: k for k, v in async_ids.items()}
        ranked = [
            {names[i]: p for i, p in s.priorities(b).items()}
            for s, b in ((stores, sync_b), (twin, async_b))
        ]
        assert ranked[0] == pytest.approx(ranked[1])
        assert stores.clock(sync_b) > 0
        assert stores.clock(sync_b) == pytest.approx(twin.clock(async_b))
        if stores.kind == "redis":
            await async_b.aclose()
    finally:
        twin.close()


@pytest.mark.redis
def test_an_old_redis_cache_is_reranked_and_its_counts_filled_in(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    stores = Stores("redis", tmp_path, request)
    try:
        b = stores.open(LRU())
        ids = {
            "costly": b.put(entry("costly", 2000, at=1.0), vec(1)).id,
            "cheap": b.put(entry("cheap", 10, at=2.0), vec(2)).id,
        }
        for entry_id in ids.values():  # as an older semcache wrote them
            b.client.hdel(b.keys.entry_key(entry_id), "hits", "cost", "size", "atime")
        assert b.client.get(b.keys.eviction) is None
        b.close()
        b = stores.open(GDSF())
        assert b.client.get(b.keys.eviction) == b"gdsf"
        for name, tokens in (("costly", 2000), ("cheap", 10)):
            fields = b.client.hgetall(b.keys.entry_key(ids[name]))
            assert float(fields[b"cost"]) == tokens
            size = int(fields[b"size"])
            assert stores.priorities(b)[ids[name]] == pytest.approx(tokens / size)
        b.touch(ids["cheap"], now=3.0)  # counted from 1, as if stored once
        assert b.client.hget(b.keys.entry_key(ids["cheap"]), "hits") == b"2"
        assert b.evict(1) == 1
        assert live(b, ids) == {"costly"}
    finally:
        stores.close()
