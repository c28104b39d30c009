"""Redis-only behaviour: key expiry, key names, several processes, outages, ACL, real-model scopes.

Every test here runs against a real Redis Stack server (the session fixture ``redis_url``, or a
dedicated one for the outage test). The circuit breaker's decisions are tested as pure functions.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from redis_server import RedisStackServer, free_port

from semcache import (
    BackendUnavailableError,
    CachePolicy,
    ConfigurationError,
    ModelFingerprint,
    Scope,
    SemanticCache,
)
from semcache.backends.breaker import BreakerParams, BreakerState, admit, failed, succeeded
from semcache.models import NewEntry
from semcache.testing import HashingEmbedder

ROOT = Path(__file__).resolve().parent.parent
FP = ModelFingerprint(model="redis-test", dim=16)


def _unit(seed: int, dim: int = 16) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal(dim).astype(np.float32)
    return x / np.linalg.norm(x)


def _cleanup(backend: Any) -> None:
    backend.drop()
    backend.close()


@pytest.fixture
def backend(redis_url: str) -> Iterator[Any]:
    from semcache.backends.redis import RedisBackend

    b = RedisBackend(redis_url, name=f"t{uuid.uuid4().hex[:12]}")
    b.bind(FP)
    yield b
    _cleanup(b)


# -- the circuit breaker, as pure functions ------------------------------------------------------


def test_breaker_opens_after_threshold_then_probes_once() -> None:
    p = BreakerParams(failure_threshold=2, reset_seconds=5.0)
    s = failed(BreakerState(), now=0.0, params=p)
    assert admit(s, 0.1, p)[0]  # one failure: still closed
    s = failed(s, now=1.0, params=p)
    assert s.is_open
    assert not admit(s, 5.9, p)[0]  # open: refused until reset_seconds have passed
    ok, probing = admit(s, 6.0, p)
    assert ok
    assert not admit(probing, 6.1, p)[0]  # only one probe at a time
    assert failed(probing, 6.2, p).opened_at == 6.2  # a failed probe re-opens
    assert succeeded(probing) == BreakerState()  # a successful probe closes


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"failure_threshold": 0}, "failure_threshold"), ({"reset_seconds": -1}, "reset_seconds")],
)
def test_breaker_params_are_validated(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        BreakerParams(**kwargs)


# -- Redis specifics ------------------------------------------------------------------------------


@pytest.mark.redis
def test_ttl_is_a_redis_key_expiry_and_replacing_clears_it(backend: Any) -> None:
    now = 1_700_000_000.0  # an injected clock far from real time: the TTL is relative
    e = NewEntry(
        scope_key="s", text_key="t", prompt="p", response=1, created_at=now, expires_at=now + 30
    )
    stored = backend.put(e, _unit(1))
    key = backend.keys.entry_key(stored.id)
    assert 25_000 < backend.client.pttl(key) <= 30_000
    assert backend.get_exact("s", "t", now + 29) is not None
    assert backend.get_exact("s", "t", now + 30) is None  # the injected clock decides reads
    backend.put(
        NewEntry(scope_key="s", text_key="t", prompt="p", response=2, created_at=now), _unit(1)
    )
    assert backend.client.pttl(key) == -1  # no TTL any more, and no stale expires_at field
    assert b"expires_at" not in backend.client.hkeys(key)


@pytest.mark.redis
def test_every_key_is_namespaced_and_json(backend: Any) -> None:
    backend.put(
        NewEntry(scope_key="s", text_key="t", prompt="p", response={"a": [1]}, created_at=1.0),
        _unit(2),
    )
    keys = {k.decode() for k in backend.client.scan_iter(match=f"semcache:{backend.keys.name}:*")}
    entry_key, k = backend.keys.entry_key("s:t"), backend.keys
    assert keys == {k.meta, k.lru, k.eviction, entry_key}  # k.clock: after an eviction
    fields = backend.client.hgetall(entry_key)
    assert json.loads(fields[b"response"]) == {"a": [1]}
    assert json.loads(backend.client.get(backend.keys.meta))["fingerprint"]["dim"] == 16


def test_configuration_is_validated() -> None:
    from semcache.backends.redis import RedisBackend, RedisConnection

    with pytest.raises(ConfigurationError, match="cache name"):
        RedisBackend("redis://localhost", name="has space")
    with pytest.raises(ConfigurationError, match="redis://"):
        RedisBackend("http://user:secret@localhost")
    with pytest.raises(ConfigurationError, match="socket_timeout"):
        RedisConnection(socket_timeout=0)
    b = RedisBackend("redis://user:secret@localhost:1/0")
    assert "secret" not in repr(b)
    b.close()


@pytest.mark.redis
def test_unreachable_redis_fails_fast_once_the_circuit_opens() -> None:
    from semcache.backends.redis import RedisBackend

    b = RedisBackend(f"redis://127.0.0.1:{free_port()}/0", breaker=BreakerParams(reset_seconds=60))
    for _ in range(3):
        with pytest.raises(BackendUnavailableError):
            b.bind(FP)
    assert b.breaker.state.is_open
    for _ in range(100):  # refused by the open circuit, before any connection attempt
        with pytest.raises(BackendUnavailableError, match="circuit open"):
            b.bind(FP)
    b.close()


def _leftovers(backend: Any) -> tuple[list[bytes], bool]:
    """The keys of this cache still in Redis, and whether its index still exists."""
    keys = list(backend.client.scan_iter(match=f"semcache:{backend.keys.name}:*"))
    return keys, backend.keys.index.encode() in backend.client.execute_command("FT._LIST")


@pytest.mark.redis
@pytest.mark.parametrize("path", ["sync", "async"])
async def test_drop_deletes_the_index_and_every_key(backend: Any, path: str) -> None:
    new = NewEntry(scope_key="s", text_key="t", prompt="p", response=1, created_at=1.0)
    backend.put_many(
        [dataclasses.replace(new, text_key=f"t{i}") for i in range(3)], [_unit(i) for i in range(3)]
    )
    keys, indexed = _leftovers(backend)
    assert len(keys) == 6  # meta, eviction policy, eviction order, three entries
    assert indexed
    dropped = backend.drop() if path == "sync" else await backend.adrop()
    assert dropped == 6
    assert _leftovers(backend) == ([], False)
    backend.put(new, _unit(7))  # still usable: the next search recreates the index
    deadline = time.monotonic() + 10
    while not backend.search("s", _unit(7), 1, now=2.0):
        assert time.monotonic() < deadline, "the recreated index never found the entry"
        time.sleep(0.05)
    if path == "async":
        await backend.aclose()


@pytest.mark.redis
def test_an_unbound_backend_drops_a_cache_by_name(backend: Any, redis_url: str) -> None:
    from semcache.backends.redis import RedisBackend

    backend.put(
        NewEntry(scope_key="s", text_key="t", prompt="p", response=1, created_at=1.0), _unit(5)
    )
    with RedisBackend(redis_url, name=backend.keys.name) as other:
        assert other.drop() == 4  # meta, eviction policy and order, the entry
    assert _leftovers(backend) == ([], False)


def test_errors_are_classified_in_one_place() -> None:
    import redis.exceptions as rex
    from redisvl.exceptions import RedisSearchError

    from semcache.backends.redis.core import classify_error, is_existing_index

    def wrapped(error: BaseException) -> BaseException:
        try:
            raise RedisSearchError("Error while searching") from error
        except RedisSearchError as e:
            return e

    assert classify_error(rex.ResponseError("idx: Unknown index name")) == "missing_index"
    assert classify_error(wrapped(rex.ResponseError("Unknown Index name"))) == "missing_index"
    assert classify_error(rex.ResponseError("WRONGTYPE Operation against a key")) == "error"
    assert classify_error(rex.NoPermissionError("no permissions to run 'FT.INFO'")) == "error"
    assert classify_error(wrapped(rex.ConnectionError("refused"))) == "unavailable"
    assert classify_error(rex.TimeoutError("Timeout reading from socket")) == "unavailable"
    assert is_existing_index(wrapped(rex.ResponseError("Index already exists")))
    assert not is_existing_index(rex.ResponseError("Unknown index name"))


def test_the_retrieval_namespace_is_not_a_cache_name() -> None:
    from semcache.backends.redis import RedisBackend

    with pytest.raises(ConfigurationError, match="reserved"):
        RedisBackend("redis://localhost", name="rag")


@pytest.mark.redis
def test_vanished_index_is_recreated(backend: Any) -> None:
    backend.put(
        NewEntry(scope_key="s", text_key="t", prompt="p", response=1, created_at=1.0), _unit(3)
    )
    backend.client.execute_command("FT.DROPINDEX", backend.keys.index)  # keeps the hashes
    backend.client.delete(backend.keys.meta)
    deadline = time.monotonic() + 10
    while not backend.search("s", _unit(3), 1, now=2.0):  # recreated, then re-indexed
        assert time.monotonic() < deadline, "the recreated index never found the entry"
        time.sleep(0.05)
    assert backend.client.get(backend.keys.meta) is not None


@pytest.mark.redis
def test_acl_user_and_password(redis_url: str) -> None:
    import redis

    from semcache.backends.redis import RedisBackend

    admin = redis.Redis.from_url(redis_url)
    user, password = f"u{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    admin.execute_command("ACL", "SETUSER", user, "on", f">{password}", "~semcache:*", "+@all")
    try:
        url = redis_url.replace("redis://", f"redis://{user}:{password}@")
        b = RedisBackend(url, name=f"t{uuid.uuid4().hex[:8]}")
        b.bind(FP)
        b.put(
            NewEntry(scope_key="s", text_key="t", prompt="p", response=1, created_at=1.0), _unit(4)
        )
        assert b.search("s", _unit(4), 1, now=2.0)[0].similarity == pytest.approx(1.0, abs=1e-5)
        _cleanup(b)
    finally:
        admin.execute_command("ACL", "DELUSER", user)
        admin.close()


# -- several processes, outages ------------------------------------------------------------------

_CHILD = """
import json, sys
from semcache import SemanticCache, Scope, CachePolicy
from semcache.backends.redis import RedisBackend
from semcache.testing import HashingEmbedder
url, name = sys.argv[1], sys.argv[2]
cache = SemanticCache(embedder=HashingEmbedder(dim=64), backend=RedisBackend(url, name=name),
                      policy=CachePolicy(min_similarity=0.7))
scope = Scope(model="m", tenant="acme")
cache.store("what is the refund policy for damaged items", {"from": "child"}, scope)
hit = cache.lookup("what is the refund policy for damaged goods", scope)
other = cache.lookup("what is the return window for electronics bought online", scope)
print(json.dumps({"parent_entry": hit.entry.response if hit.entry else None,
                  "parent_tier": hit.tier, "other": other.entry.response if other.entry else None}))
"""


@pytest.mark.redis
def test_two_processes_share_one_cache(redis_url: str) -> None:
    from semcache.backends.redis import RedisBackend

    name = f"t{uuid.uuid4().hex[:12]}"
    scope = Scope(model="m", tenant="acme")
    backend = RedisBackend(redis_url, name=name)
    cache = SemanticCache(
        embedder=HashingEmbedder(dim=64), backend=backend, policy=CachePolicy(min_similarity=0.7)
    )
    cache.store(
        "what is the return window for electronics bought online", {"from": "parent"}, scope
    )
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, redis_url, name],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        check=True,
    )
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    assert seen["other"] == {"from": "parent"}  # the child sees the parent's entry
    hit = cache.lookup("what is the refund policy for damaged items", scope)
    assert hit.entry is not None
    assert hit.entry.response == {"from": "child"}  # and the parent sees the child's
    _cleanup(backend)


@pytest.mark.redis
@pytest.mark.slow
def test_redis_killed_and_restarted_under_load(tmp_path: Path) -> None:
    """Lookups fail fast (BackendUnavailableError) while Redis is down, and hit again after."""
    from semcache.backends.redis import RedisBackend, RedisConnection

    server = RedisStackServer(tmp_path / "redis", appendonly=True)
    server.start()
    backend = RedisBackend(
        server.url,
        name="outage",
        connection=RedisConnection(socket_timeout=0.25, connect_timeout=0.25),
        breaker=BreakerParams(failure_threshold=2, reset_seconds=0.2),
    )
    cache = SemanticCache(embedder=HashingEmbedder(dim=64), backend=backend)
    scope = Scope(model="m")
    cache.store("the capital of france", "Paris", scope)
    log: list[tuple[float, float, str]] = []  # (start, duration, outcome)
    stop = threading.Event()

    def load() -> None:
        while not stop.is_set():
            t = time.perf_counter()
            try:
                outcome = "hit" if cache.lookup("the capital of france", scope).hit else "miss"
            except BackendUnavailableError:
                outcome = "unavailable"
            log.append((t, time.perf_counter() - t, outcome))
            time.sleep(0.002)

    workers = [threading.Thread(target=load) for _ in range(4)]
    try:
        for w in workers:
            w.start()
        time.sleep(0.3)
        killed_at = time.perf_counter()
        server.stop(kill=True)
        time.sleep(1.0)
        server.start()
        restarted_at = time.perf_counter()
        deadline = restarted_at + 15
        while not any(t > restarted_at and o == "hit" for t, _, o in log[-50:]):
            assert time.perf_counter() < deadline, "no hit after the restart"
            time.sleep(0.05)
    finally:
        stop.set()
        for w in workers:
            w.join(timeout=10)
        backend.close()
        server.stop()
    before = [o for t, d, o in log if t + d < killed_at]
    outage = [(d, o) for t, d, o in log if killed_at + 0.05 < t < restarted_at - 0.05]
    assert before
    assert set(before) == {"hit"}
    assert outage
    assert {o for _, o in outage} == {"unavailable"}
    durations = sorted(d for d, _ in outage)
    assert durations[-1] < 1.0  # never a hang: at worst one socket timeout
    assert durations[len(durations) // 2] < 0.01  # typically refused by the open circuit


# -- partitions with the real model --------------------------------------------------------------


@pytest.mark.redis
@pytest.mark.model
def test_adversarial_near_duplicates_never_cross_partitions(
    redis_url: str, st_embedder: Any
) -> None:
    from semcache.backends.redis import RedisBackend

    backend = RedisBackend(redis_url, name=f"t{uuid.uuid4().hex[:12]}")
    cache = SemanticCache(
        embedder=st_embedder, backend=backend, policy=CachePolicy(min_similarity=0.8)
    )
    question = "What is the current balance on my checking account?"
    variants = [
        question,
        "what is the current balance on my checking account",
        "What's the current balance of my checking account?",
    ]
    scopes = [
        Scope(model="gpt-4o", tenant="alice"),
        Scope(model="gpt-4o", tenant="bob"),
        Scope(model="gpt-4o-mini", tenant="alice"),
        Scope(model="gpt-4o", tenant="alice", system="You are a pirate."),
        Scope(model="gpt-4o", tenant="alice", params={"temperature": 0.7}),
    ]
    for i, scope in enumerate(scopes):
        cache.store(question, {"owner": i}, scope)
    for i, scope in enumerate(scopes):
        for text in variants:
            result = cache.lookup(text, scope)
            assert result.entry is not None, (i, text)
            assert result.entry.response == {"owner": i}
    stranger = Scope(model="gpt-4o", tenant="mallory")
    for text in variants:
        result = cache.lookup(text, stranger)
        assert not result.hit
        assert result.reason == "no_candidates"  # the KNN never saw another tenant's entries
    _cleanup(backend)


def test_query_plan_is_brute_force_for_small_scopes_and_hnsw_for_large_ones() -> None:
    from semcache.backends.redis.queries import hybrid_policy

    assert hybrid_policy(5, 1_000_000, 4, 64) == "ADHOC_BF"  # a tiny tenant in a big cache
    assert hybrid_policy(1_000, 1_000_000, 4, 64) == "ADHOC_BF"
    assert hybrid_policy(10_000, 10_000, 4, 64) == "BATCHES"  # one scope holds everything
    assert hybrid_policy(50_000, 1_000_000, 4, 64) == "BATCHES"
    assert hybrid_policy(0, 10, 4, 64) == "ADHOC_BF"


@pytest.mark.redis
def test_large_scope_uses_filtered_hnsw_with_exact_answers(backend: Any) -> None:
    rng = np.random.default_rng(11)
    data = rng.standard_normal((3000, 16)).astype(np.float32)
    data /= np.linalg.norm(data, axis=1, keepdims=True)
    entries = [
        NewEntry(scope_key="big", text_key=f"t{i}", prompt="p", response=i, created_at=1.0)
        for i in range(len(data))
    ]
    backend.put_many(entries, list(data))
    backend.put(dataclasses.replace(entries[0], scope_key="small"), data[0])
    assert backend.plan("big", 4) == "BATCHES"
    assert backend.plan("small", 4) == "ADHOC_BF"
    hits = 0
    for i in range(0, 3000, 150):
        found = backend.search("big", data[i], 4, now=2.0)
        assert len(found) == 4
        assert all(c.entry.scope_key == "big" for c in found)
        hits += found[0].entry.response == i
    assert hits >= 19  # HNSW recall@1 on exact repeats
    assert [c.entry.scope_key for c in backend.search("small", data[0], 4, now=2.0)] == ["small"]
