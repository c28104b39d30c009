"""Time budgets: a lookup that runs past ``lookup_budget`` is a miss, and a slow Redis opens the
circuit breaker like a dead one.

No timed assertions: a step that sleeps longer than the budget makes the outcome certain, and
the tests assert outcomes, counters, breaker states and error types, never durations.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from entry_points import ENTRY_POINTS, EntryPoint
from otel_capture import Otel
from redis_server import RedisStackServer

from semcache import CachePolicy, MemoryBackend, SemanticCache, cached
from semcache.backends.breaker import (
    BreakerParams,
    BreakerState,
    CircuitBreaker,
    abandoned,
    admit,
    finished,
    is_slow,
)
from semcache.errors import (
    BackendUnavailableError,
    ConfigurationError,
    LookupTimeoutError,
)
from semcache.policy import check_budget
from semcache.testing import HashingEmbedder

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:langchain_core.*")

QUESTION = "how do i brew green tea at home"
PARAPHRASE = "how do i brew green tea at home today"  # not an exact repeat: the lookup embeds
BUDGET = 0.15  # far above a healthy lookup here (about a millisecond), set once the cache is warm
DELAY = 0.3  # a slow embedding: twice the budget, so the outcome is certain


class SlowEmbedder(HashingEmbedder):
    """The hashing embedder, sleeping ``delay`` seconds per call while ``delay`` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.delay = 0.0

    def embed(self, texts: Sequence[str]) -> NDArray[np.float32]:
        if self.delay:
            time.sleep(self.delay)
        return super().embed(texts)


# -- the policy and the breaker, as pure functions -------------------------------------------------


@pytest.mark.parametrize("budget", [0, -1.0, float("nan"), float("inf"), True, "1"])
def test_lookup_budget_is_validated(budget: Any) -> None:
    with pytest.raises(ConfigurationError, match="lookup_budget"):
        CachePolicy(lookup_budget=budget)


def test_check_budget() -> None:
    policy = CachePolicy(lookup_budget=0.25)
    check_budget(policy, 0.25, "search")  # exactly the budget is within it
    with pytest.raises(LookupTimeoutError, match=r"0\.25s spent .*at embed"):
        check_budget(policy, 0.3, "embed")
    check_budget(CachePolicy(lookup_budget=None), 1e9, "search")  # no budget
    assert issubclass(LookupTimeoutError, BackendUnavailableError)


@pytest.mark.parametrize("slow", [0, -0.1, float("nan"), True, 7200.0])
def test_slow_call_seconds_is_validated(slow: Any) -> None:
    with pytest.raises(ConfigurationError, match="slow_call_seconds"):
        BreakerParams(slow_call_seconds=slow)


def test_slow_calls_open_the_breaker_then_one_probe_passes() -> None:
    params = BreakerParams(failure_threshold=3, reset_seconds=1.0, slow_call_seconds=0.1)
    assert is_slow(0.2, params)
    assert not is_slow(0.1, params)
    assert not is_slow(99.0, BreakerParams(slow_call_seconds=None))
    state = BreakerState()
    state = finished(state, 10.0, 0.2, params)
    state = finished(state, 10.2, 0.2, params)
    assert state.failures == 2
    assert not state.is_open
    assert finished(state, 10.3, 0.01, params) == BreakerState()  # a fast answer resets the count
    state = finished(state, 10.4, 0.2, params)
    assert state.is_open  # the third consecutive slow call
    assert admit(state, 10.5, params) == (False, state)
    ok, probing = admit(state, 11.5, params)
    assert ok
    assert finished(probing, 11.6, 0.3, params).is_open  # a slow probe re-opens
    assert finished(probing, 11.6, 0.001, params) == BreakerState()  # a fast one closes


def test_a_cancelled_call_counts_only_if_it_was_already_slow() -> None:
    params = BreakerParams(failure_threshold=1, slow_call_seconds=0.1)
    state = BreakerState()
    assert abandoned(state, 5.0, 0.05, params) is state
    assert abandoned(state, 5.0, 0.2, params).is_open


class FakeClock:
    """A monotonic clock that moves only when told to."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_circuit_breaker_times_calls_with_its_clock() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(
        BreakerParams(failure_threshold=2, reset_seconds=5.0, slow_call_seconds=0.1),
        monotonic=clock,
    )
    for _ in range(2):
        started = breaker.before_call()
        clock.now += 0.5  # the call answers, slowly
        breaker.record_success(started)
    assert breaker.state.is_open
    assert breaker.openings == 1
    with pytest.raises(BackendUnavailableError, match="failed or slow"):
        breaker.before_call()  # refused at once
    clock.now += 5.0
    started = breaker.before_call()  # the half-open probe
    clock.now += 0.2
    breaker.record_abandoned(started)  # cancelled after being slow: re-opens
    assert breaker.state.is_open
    assert breaker.openings == 1  # a re-opening, not a new opening
    clock.now += 5.0
    started = breaker.before_call()
    clock.now += 0.01
    breaker.record_success(started)
    assert not breaker.state.is_open


# -- a lookup over budget, through every entry point -----------------------------------------------


class World:
    """A cache with a budget and a slowable embedder, and one entry point into it."""

    def __init__(self, kind: type[EntryPoint], tmp_path: Path, otel: Otel) -> None:
        self.embedder = SlowEmbedder()
        self.cache = SemanticCache(
            embedder=self.embedder,
            backend=MemoryBackend(),
            policy=CachePolicy(min_similarity=0.5, lookup_budget=None),
            guards=(),
            telemetry=otel.telemetry(),
        )
        self.entry = kind(self.cache, tmp_path)

    def ask(self, text: str) -> Any:
        got = self.entry.ask(text)
        return asyncio.run(got) if self.entry.is_async else got


@pytest.mark.parametrize("kind", ENTRY_POINTS, ids=lambda k: k.name)
def test_a_lookup_over_budget_goes_upstream_counted_once(
    kind: type[EntryPoint], tmp_path: Path, otel: Otel
) -> None:
    world = World(kind, tmp_path, otel)
    entry = world.entry
    world.ask(QUESTION)  # stored; the paraphrase would be a semantic hit
    assert world.cache.info().errors == 0

    world.cache.policy = replace(world.cache.policy, lookup_budget=BUDGET)
    world.embedder.delay = DELAY
    world.cache.reset_stats()
    got = world.ask(PARAPHRASE)

    assert entry.upstream == 2, "the call must reach the upstream"
    assert entry.same(got), "the caller gets the upstream's fresh answer"
    info = world.cache.info()
    assert info.errors == 1
    assert info.hits_semantic == 0
    assert otel.total("semcache.errors", **{"error.type": "LookupTimeoutError"}) == 1
    assert otel.total("semcache.errors") == 1


def test_lookup_and_alookup_raise_lookup_timeout_error() -> None:
    embedder = SlowEmbedder()
    cache = SemanticCache(
        embedder=embedder,
        backend=MemoryBackend(),
        policy=CachePolicy(lookup_budget=BUDGET, exact_tier=False),
    )
    cache.store(QUESTION, "answer")
    embedder.delay = DELAY
    with pytest.raises(LookupTimeoutError, match="at embed"):
        cache.lookup(QUESTION)
    with pytest.raises(LookupTimeoutError, match="at embed"):
        asyncio.run(cache.alookup(QUESTION))
    cache.close()


def test_a_given_vector_skips_the_embedding_and_its_cost() -> None:
    embedder = SlowEmbedder()
    cache = SemanticCache(
        embedder=embedder,
        backend=MemoryBackend(),
        policy=CachePolicy(lookup_budget=BUDGET, exact_tier=False),
    )
    cache.store(QUESTION, "answer")
    vector = embedder.embed([QUESTION])[0]
    embedder.delay = DELAY
    assert cache.lookup(QUESTION, vector=vector).hit
    cache.close()


def test_no_budget_waits_for_a_slow_step() -> None:
    embedder = SlowEmbedder()
    cache = SemanticCache(
        embedder=embedder,
        backend=MemoryBackend(),
        policy=CachePolicy(lookup_budget=None, exact_tier=False),
    )
    cache.store(QUESTION, "answer")
    embedder.delay = DELAY
    assert cache.lookup(QUESTION).hit
    assert asyncio.run(cache.alookup(QUESTION)).hit
    cache.close()


# -- a slow (not dead) Redis -----------------------------------------------------------------------


class Pauser:
    """Another connection that makes the server slow: ``CLIENT PAUSE`` delays every other
    client's commands, which then succeed."""

    def __init__(self, url: str) -> None:
        import redis

        self.client = redis.Redis.from_url(url)

    def pause(self, ms: int) -> None:
        self.client.execute_command("CLIENT", "PAUSE", str(ms), "ALL")

    def close(self) -> None:
        self.client.close()  # no UNPAUSE: it would wait for the pause too; the server is stopped


@pytest.fixture
def slow_redis(tmp_path: Path) -> Iterator[tuple[str, Pauser]]:
    """A private Redis Stack server (pausing it must not slow other tests) and its pauser."""
    with RedisStackServer(tmp_path / "redis") as server:
        pauser = Pauser(server.url)
        try:
            yield server.url, pauser
        finally:
            pauser.close()


def _redis_cache(url: str, **policy: Any) -> SemanticCache:
    from semcache.backends.redis import RedisBackend, RedisConnection

    backend = RedisBackend(
        url,
        name="slow",
        # Slow answers, not timeouts: the socket timeout is far above the pauses.
        connection=RedisConnection(socket_timeout=10, connect_timeout=10),
        breaker=BreakerParams(failure_threshold=2, reset_seconds=60, slow_call_seconds=0.05),
    )
    return SemanticCache(
        embedder=HashingEmbedder(),
        backend=backend,
        policy=CachePolicy(min_similarity=0.5, **policy),
        guards=(),
    )


@pytest.mark.redis
def test_slow_redis_opens_the_breaker_and_later_calls_are_refused_at_once(
    slow_redis: tuple[str, Pauser],
) -> None:
    url, pauser = slow_redis
    cache = _redis_cache(url, lookup_budget=None)
    backend: Any = cache.backend
    upstream = 0

    @cached(cache, coalesce=False)
    def chat(*, model: str, messages: list[dict[str, str]]) -> dict[str, str]:
        nonlocal upstream
        upstream += 1
        return {"content": f"answer {upstream}"}

    def ask(text: str) -> Any:
        return chat(model="m", messages=[{"role": "user", "content": text}])

    ask(QUESTION)
    assert ask(QUESTION) == {"content": "answer 1"}  # healthy: a hit
    for _ in range(2):  # each command waits out a pause: slow, but it answers
        pauser.pause(300)
        assert backend.get_exact("scope", "key", 0.0) is None
    assert backend.breaker.state.is_open
    assert backend.breaker.openings == 1

    pauser.pause(2000)  # still slow; the breaker no longer waits for it
    with pytest.raises(BackendUnavailableError) as refused:
        cache.lookup(QUESTION)
    assert type(refused.value) is BackendUnavailableError
    assert "circuit open" in str(refused.value)
    cache.reset_stats()
    assert ask(QUESTION) == {"content": "answer 2"}  # fail-open: the upstream answers
    assert cache.info().errors == 1
    assert upstream == 2
    cache.close()


@pytest.mark.redis
async def test_async_lookups_cancelled_by_the_budget_count_as_slow(
    slow_redis: tuple[str, Pauser],
) -> None:
    url, pauser = slow_redis
    cache = _redis_cache(url, lookup_budget=0.2)  # the budget cancels before Redis answers
    backend: Any = cache.backend
    await cache.astore(QUESTION, "answer")
    assert (await cache.alookup(QUESTION)).hit
    pauser.pause(2000)
    for _ in range(2):
        with pytest.raises(LookupTimeoutError):
            await cache.alookup(QUESTION)
    assert backend.breaker.state.is_open  # the cancelled calls had been slow
    with pytest.raises(BackendUnavailableError) as refused:
        await cache.alookup(QUESTION)
    assert type(refused.value) is BackendUnavailableError  # refused by the breaker, not the budget
    await cache.aclose()
    cache.close()


@pytest.mark.redis
def test_concurrent_callers_never_see_an_error_while_redis_is_slow(
    slow_redis: tuple[str, Pauser],
) -> None:
    """Threads calling a decorated function through a slow Redis all get answers; the breaker
    opens and the failures are counted, not raised."""
    url, pauser = slow_redis
    cache = _redis_cache(url)
    backend: Any = cache.backend

    @cached(cache, coalesce=False)
    def chat(*, model: str, messages: list[dict[str, str]]) -> str:
        return "fresh"

    chat(model="m", messages=[{"role": "user", "content": QUESTION}])
    errors: list[BaseException] = []
    answers: list[str] = []

    def call() -> None:
        try:
            answers.append(chat(model="m", messages=[{"role": "user", "content": QUESTION}]))
        except BaseException as e:  # the test fails on any
            errors.append(e)

    pauser.pause(500)
    threads = [threading.Thread(target=call) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert answers == ["fresh"] * 8
    assert backend.breaker.openings >= 1
    cache.close()
