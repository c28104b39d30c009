"""Deleting by label: a tenant cleared from a cache leaves nothing behind, on either backend.

After ``clear(tenant="acme")`` and ``close()``, the SQLite file (every table and column, and its
raw bytes), the HNSW snapshots' labels and the whole Redis keyspace are scanned for any trace
of acme; every other tenant's entry is still served. Sync and async paths, both backends.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from semcache import EmbeddedBackend, HnswParams, InvalidInputError, Scope, SemanticCache
from semcache.backends.embedded import LocalBackend
from semcache.selector import Selector, check_tags
from semcache.testing import HashingEmbedder

MARK = b"acme"
# A graph past 8 entries and at most one graph in memory: some graphs are on disk at clear time.
HNSW = HnswParams(exact_up_to=8, max_resident=1)


@dataclass(frozen=True)
class Stored:
    id: str
    prompt: str
    response: str
    scope: Scope
    tenant: str
    tags: tuple[str, ...]


def _population() -> list[tuple[str, str, Scope, tuple[str, ...]]]:
    """(prompt, response, scope, tags): acme and globex over several models, params and tags."""
    rows = []
    for tenant in ("acme", "globex"):
        for model, count in (("gpt-a", 14), ("gpt-b", 11), ("gpt-c", 3)):
            for i in range(count):
                scope = Scope(tenant=tenant, model=model, params={"max_tokens": 10 * count})
                tags = ("faq",) if i % 3 == 0 else ()
                word = "acme" if tenant == "acme" else "globex"
                rows.append(
                    (f"{word} question {model} {i}", f"{word} answer {model} {i}", scope, tags)
                )
    return rows


def _fill(cache: SemanticCache, use_async: bool) -> list[Stored]:
    rows = _population()

    async def astore_all() -> list[Any]:
        out = [await cache.astore(p, r, s, tags=t) for p, r, s, t in rows]
        if (core := getattr(cache.backend, "core", None)) is not None:
            await core.aclose()  # this event loop's Redis connections
        return out

    if use_async:
        entries = asyncio.run(astore_all())
    else:
        entries = [cache.store(p, r, s, tags=t) for p, r, s, t in rows]
    return [
        Stored(e.id, p, r, s, s.tenant, t) for e, (p, r, s, t) in zip(entries, rows, strict=True)
    ]


def _clear(cache: SemanticCache, use_async: bool, **labels: str) -> int:
    if use_async:

        async def run() -> int:
            n = await cache.aclear(**labels)
            await cache.aclose()
            return n

        return asyncio.run(run())
    n = cache.clear(**labels)
    cache.close()
    return n


def _served(cache: SemanticCache, stored: list[Stored]) -> None:
    """Every entry is served by the exact tier, and its vector is found by the vector index."""
    embedder = cache.embedder
    for s in stored:
        result = cache.lookup(s.prompt, s.scope)
        assert result.hit
        assert result.entry is not None
        assert result.entry.response == s.response
        vector = embedder.embed([s.prompt])[0]
        nearest = cache.backend.search(s.scope.key(), vector, 1, cache.clock.now())
        assert nearest
        assert nearest[0].similarity > 0.999


# -- embedded -----------------------------------------------------------------------------------


def _sqlite_traces(db: Path) -> list[str]:
    """Every cell of every table, and the raw bytes of the file and its journal, holding acme."""
    found = []
    conn = sqlite3.connect(db)
    try:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        for table in tables:
            for row in conn.execute(f"SELECT * FROM {table}"):
                for cell in row:
                    raw = cell if isinstance(cell, bytes) else str(cell).encode()
                    if MARK in raw.lower():
                        found.append(f"{table}: {cell!r:.80}")
    finally:
        conn.close()
    for path in db.parent.glob(db.name + "*"):
        if MARK in path.read_bytes().lower():
            found.append(f"raw bytes of {path.name}")
    return found


def _snapshot_labels(directory: Path, dim: int) -> set[int]:
    import hnswlib

    labels: set[int] = set()
    for path in (directory / "hnsw").glob("*.bin"):
        index = hnswlib.Index(space="ip", dim=dim)
        index.load_index(str(path))
        labels.update(int(x) for x in index.get_ids_list())
    return labels


@pytest.mark.parametrize("use_async", [False, True], ids=["sync", "async"])
def test_offboarded_tenant_leaves_nothing_in_the_embedded_store(
    tmp_path: Path, use_async: bool
) -> None:
    embedder = HashingEmbedder()
    cache = SemanticCache(embedder=embedder, backend=EmbeddedBackend(tmp_path, hnsw=HNSW))
    stored = _fill(cache, use_async)
    assert isinstance(cache.backend, LocalBackend)
    cache.backend.flush()  # acme's vectors are in the snapshots now
    acme = {int(s.id) for s in stored if s.tenant == "acme"}
    assert len(acme & _snapshot_labels(tmp_path, embedder.fingerprint.dim)) == 14 + 11
    assert _sqlite_traces(tmp_path / "entries.sqlite3")

    assert _clear(cache, use_async, tenant="acme") == len(acme)

    assert _sqlite_traces(tmp_path / "entries.sqlite3") == []
    left = _snapshot_labels(tmp_path, embedder.fingerprint.dim)
    assert left
    assert not left & acme
    others = [s for s in stored if s.tenant != "acme"]
    with SemanticCache(embedder=embedder, backend=EmbeddedBackend(tmp_path, hnsw=HNSW)) as again:
        assert again.backend.count() == len(others)
        _served(again, others)
        assert not again.lookup(stored[0].prompt, stored[0].scope).hit


@pytest.mark.parametrize("use_async", [False, True], ids=["sync", "async"])
def test_clear_by_tag_inside_a_graph_rewrites_its_snapshot(tmp_path: Path, use_async: bool) -> None:
    embedder = HashingEmbedder()
    cache = SemanticCache(embedder=embedder, backend=EmbeddedBackend(tmp_path, hnsw=HNSW))
    stored = _fill(cache, use_async)
    tagged = {int(s.id) for s in stored if s.tenant == "globex" and "faq" in s.tags}
    assert _clear(cache, use_async, tenant="globex", tag="faq") == len(tagged)
    assert not _snapshot_labels(tmp_path, embedder.fingerprint.dim) & tagged
    kept = [s for s in stored if int(s.id) not in tagged]
    with SemanticCache(embedder=embedder, backend=EmbeddedBackend(tmp_path, hnsw=HNSW)) as again:
        _served(again, kept)


def test_selectors_combine_labels_and_scope(tmp_path: Path) -> None:
    cache = SemanticCache(embedder=HashingEmbedder(), backend=EmbeddedBackend(tmp_path))
    stored = _fill(cache, use_async=False)
    by_model = sum(1 for s in stored if s.scope.model == "gpt-b")
    assert cache.clear(model="gpt-b") == by_model
    one = next(s for s in stored if s.scope.model == "gpt-a")
    in_scope = sum(1 for s in stored if s.scope == one.scope)
    assert cache.clear(one.scope) == in_scope
    assert cache.clear(namespace="nothing-here") == 0
    assert cache.backend.count() == len(stored) - by_model - in_scope
    cache.close()


def test_labels_are_validated() -> None:
    assert check_tags(["b", "a", "a"]) == ("a", "b")
    for bad in (["a,b"], [""], [" a"], ["x\n"], "faq", ["x" * 129], [str(i) for i in range(17)]):
        with pytest.raises(InvalidInputError):
            check_tags(bad)
    with pytest.raises(InvalidInputError):
        Selector(tenant="")
    assert Selector().empty
    assert Selector().describe() == "every entry"
    assert Selector(tenant="a", tag="t").describe() == "tenant='a', tag='t'"


def test_an_older_store_gains_label_columns_in_place(tmp_path: Path) -> None:
    """A store written before labels existed opens, keeps its entries, and is labelled from now."""
    embedder = HashingEmbedder()
    vector = embedder.embed(["old question"])[0]
    conn = sqlite3.connect(tmp_path / "entries.sqlite3")
    conn.executescript(
        """
        CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
        CREATE TABLE entries (id INTEGER PRIMARY KEY AUTOINCREMENT, scope_key TEXT NOT NULL,
            text_key TEXT NOT NULL, prompt TEXT NOT NULL, response TEXT NOT NULL,
            metadata TEXT NOT NULL, created_at REAL NOT NULL, expires_at REAL,
            last_access REAL NOT NULL, vector BLOB NOT NULL, UNIQUE (scope_key, text_key));
        """
    )
    from semcache.keys import text_key

    conn.execute(
        "INSERT INTO meta VALUES ('fingerprint', ?), ('format', '1')",
        (json.dumps(embedder.fingerprint.to_dict()),),
    )
    conn.execute(
        "INSERT INTO entries (scope_key, text_key, prompt, response, metadata, created_at, "
        "last_access, vector) VALUES (?, ?, 'old question', '\"old\"', '{}', 1.0, 1.0, ?)",
        (Scope().key(), text_key("old question"), np.asarray(vector, np.float32).tobytes()),
    )
    conn.commit()
    conn.close()
    for _ in range(2):  # migrating twice is harmless
        with SemanticCache(embedder=embedder, backend=EmbeddedBackend(tmp_path)) as cache:
            old = cache.lookup("old question")
            assert old.entry is not None
            assert old.entry.tenant == ""
            assert old.entry.tags == ()
            cache.store("new", "n", Scope(tenant="t"), tags=["x"])
            assert cache.clear(tag="x") == 1
            assert cache.backend.count() == 1


# -- Redis --------------------------------------------------------------------------------------


def _redis_traces(client: Any, acme_ids: set[str]) -> list[str]:
    """Every key of the server, and every hash field, set member and string, mentioning acme."""
    found = []
    for key in client.scan_iter(count=1000):
        kind = client.type(key)
        if MARK in key.lower():
            found.append(f"key {key!r}")
        if kind == b"hash":
            for field, value in client.hgetall(key).items():
                if MARK in field.lower() or MARK in value.lower():
                    found.append(f"{key!r} {field!r}")
        elif kind == b"zset":
            members = {m.decode() for m in client.zrange(key, 0, -1)}
            found += [f"{key!r} member {m}" for m in members & acme_ids]
        elif kind == b"string" and MARK in client.get(key).lower():
            found.append(f"string {key!r}")
    return found


@pytest.mark.parametrize("use_async", [False, True], ids=["sync", "async"])
def test_offboarded_tenant_leaves_nothing_in_redis(redis_url: str, use_async: bool) -> None:
    from semcache.backends.redis import RedisBackend

    name = f"off{uuid.uuid4().hex[:10]}"
    embedder = HashingEmbedder()
    cache = SemanticCache(embedder=embedder, backend=RedisBackend(redis_url, name=name))
    stored = _fill(cache, use_async)
    acme = {s.id for s in stored if s.tenant == "acme"}
    client = cache.backend.client  # type: ignore[attr-defined]
    assert _redis_traces(client, acme)

    assert _clear(cache, use_async, tenant="acme") == len(acme)

    inspect = RedisBackend(redis_url, name=name)
    try:
        assert _redis_traces(inspect.client, acme) == []
        others = [s for s in stored if s.tenant != "acme"]
        with SemanticCache(embedder=embedder, backend=inspect) as again:
            assert again.backend.count() == len(others)
            _served(again, others)
            assert again.clear(tag="faq") == sum(1 for s in others if "faq" in s.tags)
    finally:
        inspect.drop()


def test_an_older_redis_index_gains_label_fields(redis_url: str) -> None:
    """An index created without the label fields is altered in place on bind."""
    from redisvl.index import SearchIndex
    from redisvl.schema import IndexSchema

    from semcache.backends.redis import RedisBackend
    from semcache.backends.redis import schema as rs

    name = f"old{uuid.uuid4().hex[:10]}"
    embedder = HashingEmbedder()
    backend = RedisBackend(redis_url, name=name)
    old = rs.schema_dict(backend.keys, embedder.fingerprint.dim, backend.hnsw)
    old["fields"] = [f for f in old["fields"] if not f["name"].startswith("l_")]
    SearchIndex(IndexSchema.from_dict(old), redis_client=backend.client).create()
    try:
        with SemanticCache(embedder=embedder, backend=backend) as cache:
            cache.store("q", "a", Scope(tenant="acme"), tags=["t"])
            cache.store("q", "a", Scope(tenant="other"))
            assert cache.clear(tag="t") == 1
            assert cache.clear(tenant="other") == 1
    finally:
        RedisBackend(redis_url, name=name).drop()
