"""The Backend contract, run against every backend: embedded (hnswlib), memory (exact), redis.

Each test gets a fresh store: a new directory, a new in-memory store, or a Redis cache under a
unique name on the session's Redis server.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from semcache import (
    CachePolicy,
    ConfigurationError,
    CorruptEntryError,
    EmbeddedBackend,
    FingerprintMismatchError,
    InvalidInputError,
    MemoryBackend,
    ModelFingerprint,
    Scope,
    SemanticCache,
)
from semcache.backends.base import Backend
from semcache.models import NewEntry
from semcache.testing import HashingEmbedder, ManualClock

DIM = 32
FP = ModelFingerprint(model="contract-model", dim=DIM)
KINDS = ["embedded", "memory", pytest.param("redis", marks=pytest.mark.redis)]


class Store:
    """Opens backends of one kind on one underlying store, and reaches into it for corruption."""

    def __init__(self, kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
        self.kind = kind
        self.path = tmp_path / "store"
        self.name = f"t{uuid.uuid4().hex[:12]}"
        self.url = request.getfixturevalue("redis_url") if kind == "redis" else ""
        self.opened: list[Any] = []
        self._memory: MemoryBackend | None = None

    def open(self) -> Any:
        """A backend on this store (the same data for embedded and redis; memory is shared)."""
        backend: Any
        if self.kind == "embedded":
            backend = EmbeddedBackend(self.path)
        elif self.kind == "memory":
            self._memory = self._memory or MemoryBackend()
            return self._memory
        else:
            from semcache.backends.redis import RedisBackend

            backend = RedisBackend(self.url, name=self.name)
        self.opened.append(backend)
        return backend

    def corrupt(self, backend: Any, entry_id: str) -> None:
        """Overwrite an entry's JSON response with bytes that are not JSON."""
        if self.kind == "redis":
            backend.client.hset(backend.keys.entry_key(entry_id), "response", b"{not json")
        else:
            backend._db.execute(
                "UPDATE entries SET response = '{not json' WHERE id = ?", (int(entry_id),)
            )

    def close(self) -> None:
        bound = [b for b in self.opened if b.fingerprint is not None]
        if self.kind == "redis" and bound:  # leave nothing behind on a shared server
            bound[0].drop()
        for backend in self.opened:
            backend.close()
        if self._memory is not None:
            self._memory.close()


@pytest.fixture(params=KINDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    s = Store(request.param, tmp_path, request)
    yield s
    s.close()


@pytest.fixture
def backend(store: Store) -> Backend:
    b = store.open()
    b.bind(FP)
    return b  # type: ignore[no-any-return]


def unit(rng: np.random.Generator, n: int, dim: int = DIM) -> np.ndarray:
    x = rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def entry(
    i: int, scope: str = "scope-a", *, expires_at: float | None = None, **kw: Any
) -> NewEntry:
    return NewEntry(
        scope_key=scope,
        text_key=kw.pop("text_key", f"text-{i}"),
        prompt=kw.pop("prompt", f"prompt {i}"),
        response=kw.pop("response", {"answer": i, "nested": [1, "two", None, True]}),
        created_at=kw.pop("created_at", 1000.0 + i),
        expires_at=expires_at,
        metadata=kw.pop("metadata", {"prompt_tokens": i}),
    )


def test_put_then_get_exact_round_trips_json(backend: Backend) -> None:
    v = unit(np.random.default_rng(1), 1)[0]
    stored = backend.put(
        entry(1, response={"text": "Grüße 👋", "n": 1.5}, metadata={"k": ["v"]}), v
    )
    got = backend.get_exact("scope-a", "text-1", now=1001.0)
    assert got is not None
    assert got == stored
    assert got.response == {"text": "Grüße 👋", "n": 1.5}
    assert got.metadata == {"k": ["v"]}
    assert backend.get(stored.id) == stored
    assert backend.get_exact("scope-a", "text-2", now=1001.0) is None
    assert backend.count() == 1


def test_put_replaces_the_same_scope_and_text_key(backend: Backend) -> None:
    v1, v2 = unit(np.random.default_rng(2), 2)
    backend.put(entry(1, response="old"), v1)
    new = backend.put(entry(1, response="new", created_at=2000.0), v2)
    assert backend.count() == 1
    got = backend.get_exact("scope-a", "text-1", now=2000.0)
    assert got is not None
    assert (got.id, got.response) == (new.id, "new")
    found = backend.search("scope-a", v1, 5, now=2000.0)
    assert [c.entry.response for c in found] == ["new"]


def test_search_returns_cosine_similarity_most_similar_first(backend: Backend) -> None:
    rng = np.random.default_rng(3)
    vecs = unit(rng, 40)
    for i, v in enumerate(vecs):
        backend.put(entry(i), v)
    for q in (vecs[5], unit(rng, 1)[0], -vecs[9]):
        found = backend.search("scope-a", q, 5, now=1100.0)
        exact = vecs @ q
        expected = np.sort(exact)[::-1][:5]
        sims = [c.similarity for c in found]
        assert sims == sorted(sims, reverse=True)
        np.testing.assert_allclose(sims, expected, atol=1e-4)
        for c in found:
            assert c.similarity == pytest.approx(float(exact[int(c.entry.text_key[5:])]), abs=1e-4)
    assert backend.search("scope-a", -vecs[9], 1, now=1100.0)[0].similarity > -1.0001


def test_scopes_are_isolated(backend: Backend) -> None:
    v = unit(np.random.default_rng(4), 1)[0]
    backend.put(entry(1, "tenant-a"), v)
    backend.put(entry(2, "tenant-b", text_key="other"), v)
    a = backend.search("tenant-a", v, 10, now=1100.0)
    assert [c.entry.scope_key for c in a] == ["tenant-a"]
    assert backend.search("tenant-c", v, 10, now=1100.0) == []
    assert backend.get_exact("tenant-b", "text-1", now=1100.0) is None


def test_expired_entries_are_never_returned(backend: Backend) -> None:
    clock = ManualClock(start=5000.0)
    v = unit(np.random.default_rng(5), 1)[0]
    backend.put(entry(1, created_at=clock.now(), expires_at=clock.now() + 60), v)
    clock.advance(59)
    assert backend.get_exact("scope-a", "text-1", clock.now()) is not None
    assert len(backend.search("scope-a", v, 3, clock.now())) == 1
    clock.advance(1)
    assert backend.get_exact("scope-a", "text-1", clock.now()) is None
    assert backend.search("scope-a", v, 3, clock.now()) == []
    assert backend.purge_expired(clock.now()) == 1
    assert backend.count() == 0


def test_eviction_keeps_the_recently_used(backend: Backend) -> None:
    vecs = unit(np.random.default_rng(6), 5)
    ids = [backend.put(entry(i, created_at=float(i)), v).id for i, v in enumerate(vecs)]
    backend.touch(ids[0], now=100.0)
    assert backend.evict(3) == 2
    assert backend.count() == 3
    assert {i for i in ids if backend.get(i) is not None} == {ids[0], ids[3], ids[4]}
    assert backend.evict(3) == 0


def test_delete_and_clear(backend: Backend) -> None:
    vecs = unit(np.random.default_rng(7), 6)
    ids = [backend.put(entry(i, "a" if i < 4 else "b"), v).id for i, v in enumerate(vecs)]
    assert backend.delete([ids[0], ids[0]]) == 1
    assert backend.delete([ids[0]]) == 0
    assert backend.get(ids[0]) is None
    assert backend.search("a", vecs[0], 10, now=1100.0)[0].entry.id != ids[0]
    assert backend.clear("a") == 3
    assert backend.count() == 2
    assert backend.search("a", vecs[1], 10, now=1100.0) == []
    assert len(backend.search("b", vecs[4], 10, now=1100.0)) == 2
    assert backend.clear() == 2
    assert backend.count() == 0


def test_unknown_ids_are_absent_not_errors(backend: Backend) -> None:
    assert backend.get("no-such-entry") is None
    assert backend.delete(["no-such-entry"]) == 0
    backend.touch("no-such-entry", now=1.0)
    assert backend.count() == 0


def test_another_embedding_model_is_refused(store: Store) -> None:
    first = store.open()
    first.bind(FP)
    first.put(entry(1), unit(np.random.default_rng(8), 1)[0])
    if store.kind == "embedded":
        first.close()
    for other in (
        ModelFingerprint(model="other-model", dim=DIM),
        ModelFingerprint(model="m", dim=8),
    ):
        with pytest.raises(FingerprintMismatchError):
            store.open().bind(other)
    store.open().bind(FP)  # the right model still opens it


@pytest.mark.parametrize(
    "bad",
    [
        np.full(DIM, np.nan, dtype=np.float32),
        np.ones(DIM + 1, dtype=np.float32) / np.sqrt(DIM + 1),
        np.ones(DIM, dtype=np.float32),
        np.ones((1, DIM), dtype=np.float32) / np.sqrt(DIM),
    ],
    ids=["nan", "wrong-dim", "not-normalised", "2-d"],
)
def test_bad_vectors_are_refused(backend: Backend, bad: np.ndarray) -> None:
    with pytest.raises(InvalidInputError):
        backend.put(entry(1), bad)
    with pytest.raises(InvalidInputError):
        backend.search("scope-a", bad, 3, now=0.0)
    assert backend.count() == 0


def test_corrupt_entry_is_reported_with_its_id(store: Store, backend: Backend) -> None:
    v = unit(np.random.default_rng(9), 1)[0]
    stored = backend.put(entry(1), v)
    store.corrupt(backend, stored.id)
    with pytest.raises(CorruptEntryError) as exact:
        backend.get_exact("scope-a", "text-1", now=1001.0)
    assert exact.value.entry_id == stored.id
    with pytest.raises(CorruptEntryError) as near:
        backend.search("scope-a", v, 3, now=1001.0)
    assert near.value.entry_id == stored.id


def test_semantic_cache_end_to_end(store: Store) -> None:
    """The cache's behaviour (tiers, scopes, TTL, size bound, corrupt entries) on each backend."""
    clock = ManualClock(start=10_000.0)
    embedder = HashingEmbedder(dim=DIM)
    policy = CachePolicy(min_similarity=0.6, ttl=300, max_entries=3)
    cache = SemanticCache(embedder=embedder, backend=store.open(), policy=policy, clock=clock)
    acme, other = Scope(model="m", tenant="acme"), Scope(model="m", tenant="other")
    cache.store("how do I reset my password", {"a": "reset"}, acme)
    assert cache.lookup("How do I  reset my password", acme).tier == "exact"
    hit = cache.lookup("how can I reset my password", acme)
    assert hit.hit
    assert hit.tier == "semantic"
    assert 0.6 <= (hit.similarity or 0) < 1.0
    assert not cache.lookup("how do I reset my password", other).hit
    clock.advance(301)
    assert not cache.lookup("how do I reset my password", acme).hit
    for i, text in enumerate(["alpha one", "beta two", "gamma three", "delta four"]):
        clock.advance(1)
        cache.store(text, i, acme)
    assert cache.backend.count() <= 3
    assert cache.lookup("delta four", acme).hit  # the bound evicted others (which: test_eviction)
    stored = cache.store("corrupt me please", "x", acme)
    store.corrupt(cache.backend, stored.id)
    with pytest.raises(CorruptEntryError):
        cache.lookup("corrupt me please", acme)
    assert cache.backend.get(stored.id) is None  # discarded, so the next store replaces it
    assert not cache.lookup("corrupt me please", acme).hit


def test_methods_need_bind_first(store: Store) -> None:
    # The test's memory store is shared (and may be bound already); a new one is not.
    b = MemoryBackend() if store.kind == "memory" else store.open()
    with pytest.raises(ConfigurationError, match="bind"):
        b.search("s", unit(np.random.default_rng(0), 1)[0], 1, now=0.0)
