"""The async path takes the same decisions as the sync one, on the embedded and Redis backends.

``SemanticCache.afind``/``aput`` await the backend's own async methods (``RedisBackend``, over
``redis.asyncio``) or run a sync backend's methods in worker threads (``EmbeddedBackend``). One
scripted sequence runs through both paths on a fresh store of each kind and must give identical
results and counters. Also: an async Redis outage fails fast through the circuit breaker shared
with the sync path, and the ``@cached`` async shells over Redis hit on a paraphrase.
"""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from redis_server import RedisStackServer

from semcache import (
    BackendUnavailableError,
    CachePolicy,
    EmbeddedBackend,
    Scope,
    SemanticCache,
    cached,
)
from semcache.backends.base import AsyncBackend, ThreadedBackend
from semcache.backends.breaker import BreakerParams
from semcache.backends.eviction import LRU
from semcache.testing import HashingEmbedder, ManualClock

KINDS = ["embedded", pytest.param("redis", marks=pytest.mark.redis)]
ACME, OTHER = Scope(model="m", tenant="acme"), Scope(model="m", tenant="other")

# (operation, argument, scope). "advance" moves the ManualClock; "store" stores the text.
SCRIPT: list[tuple[str, Any, Scope]] = [
    ("store", "how do I reset my password", ACME),
    ("store", "refund policy for damaged items within 30 days", ACME),
    ("lookup", "How do I  reset my password", ACME),  # exact tier (normalised text)
    ("lookup", "how can I reset my password", ACME),  # semantic tier
    ("lookup", "what is the weather in paris tomorrow", ACME),  # below the threshold
    ("lookup", "refund policy for damaged items within 60 days", ACME),  # vetoed: numbers
    ("lookup", "how do I reset my password", OTHER),  # another tenant's partition: empty
    ("advance", 301.0, ACME),
    ("lookup", "how do I reset my password", ACME),  # expired (the injected clock decides)
    ("store", "alpha one", ACME),  # the first store after the TTL also purges expired entries
    ("advance", 1.0, ACME),
    ("store", "beta two", ACME),
    ("advance", 1.0, ACME),
    ("store", "gamma three", ACME),
    ("lookup", "alpha one", ACME),  # touch: alpha becomes the most recently used
    ("advance", 1.0, ACME),
    ("store", "delta four", ACME),  # past max_entries: beta (least recently used) goes
    ("lookup", "beta two", ACME),
    ("lookup", "alpha one", ACME),
    ("lookup", "delta four four", ACME),
]
# What the script must observe for each lookup: (tier, reason).
EXPECTED = [
    ("exact", ""),
    ("semantic", ""),
    (None, "below_threshold"),
    (None, "vetoed:numbers"),
    (None, "no_candidates"),
    (None, "no_candidates"),
    ("exact", ""),
    (None, "below_threshold"),
    ("exact", ""),
    ("semantic", ""),
]


class Stores:
    """Fresh backends of one kind; Redis caches get unique names and are dropped afterwards."""

    def __init__(self, kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
        self.kind, self.tmp_path = kind, tmp_path
        self.url = request.getfixturevalue("redis_url") if kind == "redis" else ""
        self.opened: list[Any] = []

    def open(self) -> Any:
        """A new backend, evicting by recency as the script expects (GDSF: test_eviction)."""
        if self.kind == "embedded":
            return EmbeddedBackend(self.tmp_path / uuid.uuid4().hex, eviction=LRU())
        from semcache.backends.redis import RedisBackend

        backend = RedisBackend(self.url, name=f"t{uuid.uuid4().hex[:12]}", eviction=LRU())
        self.opened.append(backend)
        return backend

    def drop(self) -> None:
        from semcache.backends.redis import RedisBackend

        for old in self.opened:  # the tests closed them; reopen each to delete what it wrote
            backend = RedisBackend(self.url, name=old.keys.name)
            backend.drop()
            backend.close()


@pytest.fixture(params=KINDS)
def stores(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Stores]:
    s = Stores(request.param, tmp_path, request)
    yield s
    s.drop()


@pytest.fixture
def redis_stores(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Stores]:
    s = Stores("redis", tmp_path, request)
    yield s
    s.drop()


def user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def new_cache(backend: Any) -> tuple[SemanticCache, ManualClock]:
    clock = ManualClock(start=50_000.0)
    policy = CachePolicy(min_similarity=0.6, ttl=300, max_entries=3)
    return SemanticCache(
        embedder=HashingEmbedder(dim=64), backend=backend, policy=policy, clock=clock
    ), clock


def observe(result: Any) -> tuple[Any, ...]:
    entry = result.entry
    return (
        "lookup",
        result.tier.value if result.tier else None,
        result.reason,
        result.similarity,
        result.threshold,
        None if entry is None else (entry.id, entry.prompt, entry.response, entry.expires_at),
    )


def run_sync(cache: SemanticCache, clock: ManualClock) -> list[tuple[Any, ...]]:
    seen: list[tuple[Any, ...]] = []
    for i, (op, arg, scope) in enumerate(SCRIPT):
        if op == "advance":
            clock.advance(arg)
        elif op == "store":
            entry = cache.store(arg, {"step": i}, scope, metadata={"prompt_tokens": i})
            seen.append(("store", entry.id, entry.prompt, entry.expires_at))
        else:
            seen.append(observe(cache.lookup(arg, scope)))
    return seen


async def run_async(cache: SemanticCache, clock: ManualClock) -> list[tuple[Any, ...]]:
    seen: list[tuple[Any, ...]] = []
    for i, (op, arg, scope) in enumerate(SCRIPT):
        if op == "advance":
            clock.advance(arg)
        elif op == "store":
            entry = await cache.astore(arg, {"step": i}, scope, metadata={"prompt_tokens": i})
            seen.append(("store", entry.id, entry.prompt, entry.expires_at))
        else:
            seen.append(observe(await cache.alookup(arg, scope)))
    return seen


def assert_same(sync: list[tuple[Any, ...]], asyn: list[tuple[Any, ...]]) -> None:
    assert len(sync) == len(asyn)
    for a, b in zip(sync, asyn, strict=True):
        if a[0] == "lookup" and a[3] is not None and b[3] is not None:
            assert b[3] == pytest.approx(a[3], abs=1e-6), (a, b)
            a, b = a[:3] + a[4:], b[:3] + b[4:]
        assert a == b


async def test_sync_and_async_paths_decide_identically(stores: Stores) -> None:
    sync_cache, sync_clock = new_cache(stores.open())
    sync_seen = run_sync(sync_cache, sync_clock)
    sync_info = sync_cache.info()
    sync_cache.close()

    async_cache, async_clock = new_cache(stores.open())
    native = stores.kind == "redis"
    assert isinstance(async_cache.backend, AsyncBackend) is native
    assert isinstance(async_cache.abackend, ThreadedBackend) is not native
    async_seen = await run_async(async_cache, async_clock)
    async_info = async_cache.info()
    if native:  # the async path used this loop's redis.asyncio client
        assert async_cache.backend.core.has_aclient()
    await async_cache.aclose()

    lookups = [(o[1], o[2]) for o in sync_seen if o[0] == "lookup"]
    assert lookups == EXPECTED
    assert_same(sync_seen, async_seen)
    assert dataclasses.asdict(sync_info) == dataclasses.asdict(async_info)
    assert (sync_info.hits_exact, sync_info.hits_semantic, sync_info.misses) == (3, 2, 5)
    assert sync_info.evictions >= 1
    assert sync_info.entries == 3


@pytest.mark.redis
async def test_redis_async_methods_match_the_sync_ones(redis_stores: Stores) -> None:
    """The backend contract's basics through the async methods of one Redis backend."""
    from semcache.models import NewEntry

    backend = redis_stores.open()
    cache, clock = new_cache(backend)  # binds the backend
    vector = cache.embedder.embed(["some prompt"])[0]
    now = clock.now()
    new = NewEntry(scope_key="s", text_key="t", prompt="some prompt", response=[1], created_at=now)
    stored = await backend.aput(new, vector)
    assert stored == backend.get(stored.id)
    assert await backend.aget_exact("s", "t", now) == backend.get_exact("s", "t", now)
    found, found_sync = (
        await backend.asearch("s", vector, 3, now),
        backend.search("s", vector, 3, now),
    )
    assert [(c.entry, round(c.similarity, 6)) for c in found] == [
        (c.entry, round(c.similarity, 6)) for c in found_sync
    ]
    assert found[0].similarity == pytest.approx(1.0, abs=1e-5)
    await backend.atouch(stored.id, now + 5)
    assert backend.client.zscore(backend.keys.lru, stored.id) == now + 5
    assert await backend.acount() == backend.count() == 1
    assert await backend.adelete([stored.id, stored.id]) == 1
    assert await backend.aget(stored.id) is None
    for i in range(4):
        await backend.aput(dataclasses.replace(new, text_key=f"t{i}", created_at=now + i), vector)
    assert await backend.aevict(2) == 2
    assert await backend.aclear("other") == 0
    assert await backend.aclear() == 2
    assert await backend.apurge_expired(now) == 0
    await cache.aclose()


@pytest.mark.redis
@pytest.mark.slow
async def test_async_outage_fails_fast_through_the_shared_breaker(tmp_path: Path) -> None:
    from semcache.backends.redis import RedisBackend, RedisConnection

    server = RedisStackServer(tmp_path / "redis", appendonly=True)
    server.start()
    backend = RedisBackend(
        server.url,
        name="async-outage",
        connection=RedisConnection(socket_timeout=0.25, connect_timeout=0.25),
        breaker=BreakerParams(failure_threshold=2, reset_seconds=0.3),
    )
    cache = SemanticCache(embedder=HashingEmbedder(dim=64), backend=backend)
    scope = Scope(model="m")
    try:
        await cache.astore("the capital of france", "Paris", scope)
        assert (await cache.alookup("the capital of france", scope)).hit
        server.stop(kill=True)
        for _ in range(20):  # never a hang: each call ends within a couple of socket timeouts
            with pytest.raises(BackendUnavailableError):
                await asyncio.wait_for(cache.alookup("the capital of france", scope), 2.0)
        assert backend.breaker.state.is_open
        with pytest.raises(BackendUnavailableError, match="circuit open"):
            cache.lookup("the capital of france", scope)  # the sync path sees the same breaker
        server.start()
        deadline = asyncio.get_running_loop().time() + 15
        while True:
            try:
                result = await asyncio.wait_for(cache.alookup("the capital of france", scope), 2.0)
            except BackendUnavailableError:
                result = None
            if result is not None and result.hit:
                break
            assert asyncio.get_running_loop().time() < deadline, "no hit after the restart"
            await asyncio.sleep(0.05)
        assert result.entry is not None
        assert result.entry.response == "Paris"  # the append-only file brought the entry back
        assert not backend.breaker.state.is_open
    finally:
        await cache.aclose()
        server.stop()


@pytest.mark.redis
@pytest.mark.model
async def test_decorated_async_functions_hit_on_a_paraphrase_over_redis(
    redis_stores: Stores, st_embedder: Any
) -> None:
    cache = SemanticCache(
        embedder=st_embedder, backend=redis_stores.open(), policy=CachePolicy(min_similarity=0.8)
    )
    outcomes: list[Any] = []
    calls: list[str] = []

    @cached(cache, on_outcome=outcomes.append)
    async def ask(*, model: str, messages: list[dict[str, str]]) -> dict[str, Any]:
        calls.append(messages[-1]["content"])
        await asyncio.sleep(0)
        return {
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "Paris."},
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 9, "completion_tokens": 2},
        }

    @cached(cache, on_outcome=outcomes.append)
    async def stream(*, model: str, messages: list[dict[str, str]]) -> AsyncIterator[Any]:
        calls.append(messages[-1]["content"])
        for text, finish in (("Par", None), ("is.", "stop")):
            await asyncio.sleep(0)
            yield {"choices": [{"index": 0, "delta": {"content": text}, "finish_reason": finish}]}

    first = await ask(model="m", messages=user("What is the capital of France?"))
    again = await ask(model="m", messages=user("What's the capital city of France?"))
    assert again == first
    chunks = [c async for c in stream(model="m", messages=user("What is the capital of France?"))]
    replay = [c async for c in stream(model="m", messages=user("Tell me the capital of France."))]
    assert replay == chunks
    assert len(calls) == 2  # one upstream call per function; the paraphrases were served
    kinds = [(o.outcome, o.tier) for o in outcomes]
    assert kinds == [("miss", None), ("hit", "semantic"), ("miss", None), ("hit", "semantic")]
    assert all(o.similarity is None or o.similarity >= 0.8 for o in outcomes)
    assert not any(o.error for o in outcomes)
    info = cache.info()
    assert (info.stores, info.hits_semantic, info.errors) == (2, 2, 0)
    assert info.tokens_saved == 11  # the value's usage; the stream reported none
    await cache.aclose()
