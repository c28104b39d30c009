"""Adaptive thresholds' learned state: kept across restarts, shared by replicas, never fatal."""

from __future__ import annotations

import multiprocessing
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from redis_server import RedisStackServer, free_port
from test_adaptive import CENTROIDS, DIM, _candidate
from test_adaptive import _stream as adaptive_stream

from semcache import ConfigurationError
from semcache.matching.adaptive import AdaptiveConfig, AdaptiveThresholds
from semcache.matching.learned_redis import RedisLearnedState
from semcache.matching.learned_state import SqliteLearnedState

CONFIG = AdaptiveConfig(delta=0.05, initial_threshold=0.97)


def _stream(seed: int, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return adaptive_stream(np.random.default_rng(seed), n)


def _feed(model: AdaptiveThresholds, seed: int, n: int, tag: str) -> None:
    """Verdicts through the cache's hooks: served, then feedback."""
    vectors, sims, ok = _stream(seed, n)
    for i in range(n):
        model.served(f"{tag}-{i}", vectors[i], float(sims[i]))
        assert model.feedback(f"{tag}-{i}", bool(ok[i]))


def _first_wrong(seed: int, n: int, tag: str) -> tuple[str, float]:
    _, sims, ok = _stream(seed, n)
    i = int(np.flatnonzero(~ok)[0])
    return f"{tag}-{i}", float(sims[i])


def test_a_restart_keeps_thresholds_and_per_entry_floors(tmp_path: Path) -> None:
    path = tmp_path / "learned.sqlite3"
    first = AdaptiveThresholds(CONFIG, centroids=CENTROIDS, state=SqliteLearnedState(path))
    _feed(first, seed=1, n=3000, tag="a")
    learned = first.thresholds()
    assert learned[0] < CONFIG.initial_threshold  # it did learn something worth keeping
    first.close()

    again = AdaptiveThresholds(CONFIG, centroids=CENTROIDS, state=SqliteLearnedState(path))
    assert again.thresholds() == learned
    assert again.global_threshold() == first.global_threshold()
    assert again.observations == 3000
    wrong, sim = _first_wrong(1, 3000, "a")
    vec = np.zeros(DIM, dtype=np.float32)
    vec[0] = 1.0
    assert again.for_query("q", vec)(_candidate(wrong, sim)) > sim  # still not served again
    assert again.state_errors == 0
    again.close()


def test_closing_the_cache_writes_its_pending_verdicts(tmp_path: Path) -> None:
    from semcache import MemoryBackend, SemanticCache
    from semcache.testing import HashingEmbedder

    path = tmp_path / "learned.sqlite3"
    model = AdaptiveThresholds(CONFIG, centroids=CENTROIDS, state=SqliteLearnedState(path))
    cache = SemanticCache(embedder=HashingEmbedder(), backend=MemoryBackend(), thresholds=model)
    _feed(model, seed=2, n=500, tag="c")
    cache.close()  # no explicit model.close(): the cache owns what it was given
    again = AdaptiveThresholds(CONFIG, centroids=CENTROIDS, state=SqliteLearnedState(path))
    assert again.observations == 500
    again.close()


async def test_aclose_of_the_cache_writes_its_pending_verdicts(tmp_path: Path) -> None:
    from semcache import MemoryBackend, SemanticCache
    from semcache.testing import HashingEmbedder

    path = tmp_path / "learned.sqlite3"
    model = AdaptiveThresholds(CONFIG, centroids=CENTROIDS, state=SqliteLearnedState(path))
    cache = SemanticCache(embedder=HashingEmbedder(), backend=MemoryBackend(), thresholds=model)
    _feed(model, seed=3, n=300, tag="d")
    await cache.aclose()
    again = AdaptiveThresholds(CONFIG, centroids=CENTROIDS, state=SqliteLearnedState(path))
    assert again.observations == 300
    again.close()


def test_a_store_of_other_centroids_or_settings_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "learned.sqlite3"
    AdaptiveThresholds(CONFIG, centroids=CENTROIDS, state=SqliteLearnedState(path)).close()
    with pytest.raises(ConfigurationError, match="other centroids"):
        AdaptiveThresholds(CONFIG, centroids=CENTROIDS[::-1], state=SqliteLearnedState(path))
    with pytest.raises(ConfigurationError, match=r"other adaptive settings \(delta: stored 0.05"):
        AdaptiveThresholds(
            AdaptiveConfig(delta=0.01, initial_threshold=0.97),
            centroids=CENTROIDS,
            state=SqliteLearnedState(path),
        )
    stored = SqliteLearnedState(path).stored_centroids()
    assert stored is not None
    np.testing.assert_array_equal(stored, CENTROIDS)


def test_the_window_forgets_whole_generations_and_a_restart_agrees(tmp_path: Path) -> None:
    config = AdaptiveConfig(window=10, initial_threshold=0.9)
    path = tmp_path / "learned.sqlite3"
    model = AdaptiveThresholds(config, state=SqliteLearnedState(path))
    for i in range(12):  # generations of 5: [0-4] forgotten, [5-9] and [10-11] kept
        model.observe(0, 0.5 + i / 100, correct=True)
    assert model.observations == 7
    model.close()
    again = AdaptiveThresholds(config, state=SqliteLearnedState(path))
    assert again.observations == 7
    assert again.thresholds() == model.thresholds()
    again.close()


async def test_async_refresh_shares_like_refresh(tmp_path: Path) -> None:
    path = tmp_path / "learned.sqlite3"
    writer = AdaptiveThresholds(CONFIG, centroids=CENTROIDS, state=SqliteLearnedState(path))
    reader = AdaptiveThresholds(CONFIG, centroids=CENTROIDS, state=SqliteLearnedState(path))
    sync_reader = AdaptiveThresholds(CONFIG, centroids=CENTROIDS, state=SqliteLearnedState(path))
    before = reader.thresholds()
    _feed(writer, seed=2, n=2000, tag="w")
    await writer.arefresh()  # written
    await reader.arefresh()  # read
    sync_reader.refresh()
    assert reader.thresholds() == writer.thresholds() == sync_reader.thresholds() != before
    for model in (writer, reader, sync_reader):
        await model.aclose()


# -- Redis: replicas in separate processes ---------------------------------------------------------


def _replica(url: str, prefix: str, seed: int, tag: str, barrier: Any, out: Any) -> None:
    """One replica: feeds its own verdicts, then reports what it converged to."""
    import redis

    client = redis.Redis.from_url(url)
    model = AdaptiveThresholds(
        CONFIG, centroids=CENTROIDS, state=RedisLearnedState(client, prefix=prefix)
    )
    _feed(model, seed=seed, n=2500, tag=tag)
    model.refresh()  # everything of ours is written
    barrier.wait(timeout=120)
    model.refresh()  # and everything of theirs is read
    other = "b" if tag == "a" else "a"
    wrong, sim = _first_wrong(1 if other == "a" else 2, 2500, other)
    vec = np.zeros(DIM, dtype=np.float32)
    vec[0] = 1.0
    floor = model.for_query("q", vec)(_candidate(wrong, sim))
    out.put(
        {
            "tag": tag,
            "thresholds": model.thresholds(),
            "pooled": model.global_threshold(),
            "observations": model.observations,
            "blocks_others_wrong_entry": floor > sim,
            "errors": model.state_errors,
        }
    )
    model.close()
    client.close()


@pytest.mark.redis
def test_two_processes_on_one_redis_converge_to_the_same_thresholds(redis_url: str) -> None:
    prefix = f"test:learned:{uuid.uuid4().hex[:8]}"
    ctx = multiprocessing.get_context("spawn")
    barrier, out = ctx.Barrier(2), ctx.Queue()
    procs = [
        ctx.Process(target=_replica, args=(redis_url, prefix, seed, tag, barrier, out))
        for seed, tag in ((1, "a"), (2, "b"))
    ]
    for p in procs:
        p.start()
    reports = [out.get(timeout=180) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    a, b = sorted(reports, key=lambda r: r["tag"])
    assert a["thresholds"] == b["thresholds"]
    assert a["pooled"] == b["pooled"]
    assert a["observations"] == b["observations"] == 5000
    assert a["blocks_others_wrong_entry"]
    assert b["blocks_others_wrong_entry"]
    assert a["errors"] == b["errors"] == 0
    # the same as one process that saw every verdict
    alone = AdaptiveThresholds(CONFIG, centroids=CENTROIDS)
    _feed(alone, seed=1, n=2500, tag="a")
    _feed(alone, seed=2, n=2500, tag="b")
    assert alone.thresholds() == a["thresholds"]


@pytest.mark.redis
def test_an_unreachable_store_never_fails_a_decision_and_catches_up(tmp_path: Path) -> None:
    import redis

    port = free_port()
    client = redis.Redis(port=port, socket_timeout=1, socket_connect_timeout=1)
    # Down at start: the thresholds start static, learn locally, and count the failures.
    model = AdaptiveThresholds(CONFIG, centroids=CENTROIDS, state=RedisLearnedState(client))
    assert model.thresholds() == [CONFIG.initial_threshold] * 2
    _feed(model, seed=3, n=1500, tag="c")
    model.refresh()
    learned = model.thresholds()
    assert learned != [CONFIG.initial_threshold] * 2
    assert model.state_errors > 0
    # Up again: the pending verdicts are written, and another replica reads them.
    with RedisStackServer(tmp_path / "redis", port=port):
        model.refresh()
        other = AdaptiveThresholds(
            CONFIG, centroids=CENTROIDS, state=RedisLearnedState(redis.Redis(port=port))
        )
        assert other.thresholds() == learned
        assert other.observations == 1500
        other.close()
        model.close()
    client.close()


async def test_an_async_call_with_shared_learned_state_never_blocks_the_loop(
    tmp_path: Path,
) -> None:
    from faults import BlockingCalls

    from semcache import CachePolicy, EmbeddedBackend, PromptRequest, SemanticCache, cached
    from semcache.matching.explore import Exploration
    from semcache.testing import HashingEmbedder

    state = SqliteLearnedState(tmp_path / "learned.sqlite3")
    thresholds = AdaptiveThresholds(
        AdaptiveConfig(initial_threshold=0.5, refresh_every=1e-9),  # a refresh on every decision
        state=state,
        explore=Exploration(probability=1.0, band=1.0),
    )
    cache = SemanticCache(
        embedder=HashingEmbedder(),
        backend=EmbeddedBackend(tmp_path / "cache"),
        policy=CachePolicy(min_similarity=0.3),
        thresholds=thresholds,
    )

    async def llm(prompt: str) -> str:
        return "about 40 euros" if "train" in prompt else "120 euros"

    ask = cached(cache, request=PromptRequest())(llm)
    blocking = BlockingCalls()
    with blocking.watching():
        await ask("what is the price of a train ticket to rome")
        await ask("what is the price of a plane ticket to rome")  # explored, judged, learned
        await thresholds.arefresh()
    assert blocking.seen == [], f"blocking calls on the event loop: {sorted(set(blocking.seen))}"
    assert cache.info().explored_false == 1
    assert thresholds.observations == 1
    await thresholds.aclose()
    await cache.aclose()
