"""Coalescing serves a follower only what a cache hit would serve (issue #14, finding 6).

Each test forces the race with events, never with sleeps: the leader's upstream call blocks
until the follower has joined its flight (seen through a patched ``Flights.join``) or, where no
join may happen, until the follower has reached upstream too.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from faults import RecordingBackend

from semcache import (
    CachePolicy,
    EmbeddedBackend,
    PromptRequest,
    SemanticCache,
    cache_options,
    cached,
)
from semcache.llm.coalesce import Flights
from semcache.models import CallOutcome, Candidate, Outcome
from semcache.testing import HashingEmbedder

WAIT = 10.0  # seconds before a stuck test fails (never reached when the code is right)

# (leader, follower, is the follower served the leader's answer?)
PAIRS = [
    ("What is 15 percent of 200?", "What is 16 percent of 200?", False),
    ("Suggest a laptop under $300", "Suggest a laptop under $500", False),
    ("What is 15 percent of 200?", "How much is 15 percent of 200?", True),
    ("Suggest a laptop under $300", "Recommend a laptop under $300", True),
]
PAIR_IDS = ["15-vs-16-percent", "300-vs-500-dollars", "paraphrase-percent", "paraphrase-laptop"]


class Joins:
    """Followers that joined a flight (counted by the patched ``Flights.join``)."""

    def __init__(self) -> None:
        self.followers = 0
        self.event = threading.Event()

    def joined(self) -> None:
        self.followers += 1
        self.event.set()


@pytest.fixture
def joins(monkeypatch: pytest.MonkeyPatch) -> Joins:
    seen = Joins()
    original = Flights.join

    def join(self: Flights, *args: Any, **kwargs: Any) -> Any:
        flight, leader = original(self, *args, **kwargs)
        if not leader:
            seen.joined()
        return flight, leader

    monkeypatch.setattr(Flights, "join", join)
    return seen


@pytest.fixture(
    params=["hashing", pytest.param("model", marks=pytest.mark.model)],
)
def make_cache(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[Callable[..., SemanticCache]]:
    """Caches whose threshold is low enough that cosine alone joins every pair in ``PAIRS``."""
    if request.param == "model":
        embedder, threshold = request.getfixturevalue("st_embedder"), 0.75
    else:
        embedder, threshold = HashingEmbedder(), 0.55
    made: list[SemanticCache] = []

    def make(**kwargs: Any) -> SemanticCache:
        cache = SemanticCache(
            embedder=embedder,
            backend=EmbeddedBackend(tmp_path / str(len(made))),
            policy=CachePolicy(min_similarity=threshold),
            **kwargs,
        )
        made.append(cache)
        return cache

    yield make
    for cache in made:
        cache.close()


class LLM:
    """A fake LLM whose first call blocks until released; it answers each prompt its own way."""

    def __init__(self) -> None:
        self.prompts: list[str] = []
        self._lock = threading.Lock()
        self.entered = threading.Event()
        self.second = threading.Event()
        self.gate = threading.Event()

    def arrive(self, prompt: str) -> bool:
        """Record a call; ``True`` for the first (the one that must wait for the gate)."""
        with self._lock:
            self.prompts.append(prompt)
            n = len(self.prompts)
        (self.entered if n == 1 else self.second).set()
        return n == 1

    def __call__(self, prompt: str) -> str:
        if self.arrive(prompt):
            assert self.gate.wait(WAIT)
        return f"answer to {prompt}"

    async def acall(self, prompt: str) -> str:
        if self.arrive(prompt):
            await until(self.gate.is_set)
        return f"answer to {prompt}"


async def until(condition: Callable[[], bool]) -> None:
    """Yield to the event loop until ``condition`` holds (bounded by ``WAIT``)."""

    async def poll() -> None:
        while not condition():
            await asyncio.sleep(0)

    await asyncio.wait_for(poll(), WAIT)


def race(
    ask: Callable[[str], Any], llm: LLM, first: str, second: str, *, joins: Joins | None
) -> list[Any]:
    """Run ``first`` and, while its upstream call is blocked, ``second``, in two threads.

    Waits for the second call to join the first's flight (``joins``), else to reach upstream.
    """
    out: dict[int, Any] = {}

    def run(i: int, prompt: str) -> None:
        out[i] = ask(prompt)

    leader = threading.Thread(target=run, args=(0, first))
    leader.start()
    assert llm.entered.wait(WAIT)
    follower = threading.Thread(target=run, args=(1, second))
    follower.start()
    assert (llm.second if joins is None else joins.event).wait(WAIT)
    llm.gate.set()
    for t in (leader, follower):
        t.join(WAIT)
    return [out[0], out[1]]


async def arace(
    ask: Callable[[str], Any], llm: LLM, first: str, second: str, *, joins: Joins | None
) -> list[Any]:
    """:func:`race` with two tasks on one event loop."""
    leader = asyncio.create_task(ask(first))
    await until(llm.entered.is_set)
    follower = asyncio.create_task(ask(second))
    await until(llm.second.is_set if joins is None else joins.event.is_set)
    llm.gate.set()
    return list(await asyncio.wait_for(asyncio.gather(leader, follower), WAIT))


# -- the decision: only what a hit would serve ---------------------------------------------


@pytest.mark.parametrize(("first", "second", "served"), PAIRS, ids=PAIR_IDS)
def test_threads_follower_served_only_if_the_cache_would_serve_it(
    make_cache: Callable[..., SemanticCache], joins: Joins, first: str, second: str, served: bool
) -> None:
    cache, llm, outcomes = make_cache(), LLM(), []

    @cached(cache, request=PromptRequest(), on_outcome=outcomes.append)
    def ask(prompt: str) -> str:
        return llm(prompt)

    leader, follower = race(ask, llm, first, second, joins=joins if served else None)
    # Cosine alone would join every pair; the guards turn the vetoed ones away before waiting.
    assert joins.followers == int(served)
    assert leader == f"answer to {first}"
    assert_follower(cache, llm, outcomes, first, second, follower, served=served)


@pytest.mark.parametrize(("first", "second", "served"), PAIRS, ids=PAIR_IDS)
async def test_tasks_follower_served_only_if_the_cache_would_serve_it(
    make_cache: Callable[..., SemanticCache], joins: Joins, first: str, second: str, served: bool
) -> None:
    cache, llm, outcomes = make_cache(), LLM(), []

    @cached(cache, request=PromptRequest(), on_outcome=outcomes.append)
    async def ask(prompt: str) -> str:
        return await llm.acall(prompt)

    leader, follower = await arace(ask, llm, first, second, joins=joins if served else None)
    assert joins.followers == int(served)
    assert leader == f"answer to {first}"
    assert_follower(cache, llm, outcomes, first, second, follower, served=served)


def assert_follower(
    cache: SemanticCache,
    llm: LLM,
    outcomes: list[CallOutcome],
    first: str,
    second: str,
    follower: str,
    *,
    served: bool,
) -> None:
    info = cache.info()
    # Each call's own lookup missed; a served follower counts as coalesced, never as a hit.
    assert (info.misses, info.hits) == (2, 0)
    if served:
        assert follower == f"answer to {first}"
        assert llm.prompts == [first]
        assert info.coalesced == 1
        assert sorted(o.outcome for o in outcomes) == sorted([Outcome.MISS, Outcome.COALESCED])
    else:
        assert follower == f"answer to {second}"
        assert llm.prompts == [first, second]
        assert info.coalesced == 0
        assert [o.outcome for o in outcomes] == [Outcome.MISS, Outcome.MISS]


def veto_all(query: str, candidate: Candidate) -> str | None:
    return "verifier_says_no"


def test_threads_the_verifier_decides_for_followers(
    make_cache: Callable[..., SemanticCache], joins: Joins
) -> None:
    first, second, _ = PAIRS[2]
    cache, llm = make_cache(verifier=veto_all), LLM()

    outcomes: list[CallOutcome] = []

    @cached(cache, request=PromptRequest(), on_outcome=outcomes.append)
    def ask(prompt: str) -> str:
        return llm(prompt)

    assert race(ask, llm, first, second, joins=joins) == [f"answer to {p}" for p in (first, second)]
    assert (joins.followers, llm.prompts, cache.info().coalesced) == (1, [first, second], 0)
    assert outcomes[-1].reason == "vetoed:verifier_says_no"  # the follower's own lookup


async def test_tasks_the_verifier_decides_for_followers(
    make_cache: Callable[..., SemanticCache], joins: Joins
) -> None:
    first, second, _ = PAIRS[2]
    cache, llm = make_cache(verifier=veto_all), LLM()

    @cached(cache, request=PromptRequest())
    async def ask(prompt: str) -> str:
        return await llm.acall(prompt)

    out = await arace(ask, llm, first, second, joins=joins)
    assert out == [f"answer to {p}" for p in (first, second)]
    assert (joins.followers, llm.prompts, cache.info().coalesced) == (1, [first, second], 0)


def test_threads_a_stricter_per_call_threshold_is_the_followers(
    make_cache: Callable[..., SemanticCache], joins: Joins
) -> None:
    first, second, _ = PAIRS[2]
    cache, llm = make_cache(), LLM()

    @cached(cache, request=PromptRequest())
    def ask(prompt: str) -> str:
        return llm(prompt)

    def strict(prompt: str) -> Any:
        if prompt == second:
            with cache_options(min_similarity=0.999):
                return ask(prompt)
        return ask(prompt)

    out = race(strict, llm, first, second, joins=None)
    assert out == [f"answer to {p}" for p in (first, second)]
    assert (joins.followers, llm.prompts, cache.info().coalesced) == (0, [first, second], 0)


# -- shadow mode: every call reaches the LLM ------------------------------------------------


def test_threads_shadow_mode_never_coalesces(
    make_cache: Callable[..., SemanticCache], joins: Joins
) -> None:
    cache, llm = make_cache(shadow=True), LLM()

    @cached(cache, request=PromptRequest())
    def ask(prompt: str) -> str:
        return llm(prompt)

    same = "How do vaccines work?"
    assert race(ask, llm, same, same, joins=None) == [f"answer to {same}"] * 2
    assert (joins.followers, len(llm.prompts), cache.info().coalesced) == (0, 2, 0)


async def test_tasks_shadow_mode_never_coalesces(
    make_cache: Callable[..., SemanticCache], joins: Joins
) -> None:
    cache, llm = make_cache(shadow=True), LLM()

    @cached(cache, request=PromptRequest())
    async def ask(prompt: str) -> str:
        return await llm.acall(prompt)

    same = "How do vaccines work?"
    assert await arace(ask, llm, same, same, joins=None) == [f"answer to {same}"] * 2
    assert (joins.followers, len(llm.prompts), cache.info().coalesced) == (0, 2, 0)


# -- waiting is bounded ---------------------------------------------------------------------


def test_a_follower_stops_waiting_after_coalesce_timeout(
    make_cache: Callable[..., SemanticCache], joins: Joins
) -> None:
    cache, llm = make_cache(), LLM()

    @cached(cache, request=PromptRequest(), coalesce_timeout=0.05)
    def ask(prompt: str) -> str:
        return llm(prompt)

    same = "How do vaccines work?"
    out: list[str] = []
    leader = threading.Thread(target=lambda: out.append(ask(same)))
    leader.start()
    assert llm.entered.wait(WAIT)
    # The leader is still blocked: the follower gives up waiting and calls upstream itself.
    assert ask(same) == f"answer to {same}"
    assert joins.followers == 1
    assert len(llm.prompts) == 2
    llm.gate.set()
    leader.join(WAIT)
    assert out == [f"answer to {same}"]


# -- streams follow the same rule ---------------------------------------------------------


@pytest.mark.parametrize(("first", "second", "served"), [PAIRS[0], PAIRS[2]], ids=PAIR_IDS[::2])
def test_threads_stream_follower_served_only_if_the_cache_would_serve_it(
    make_cache: Callable[..., SemanticCache], joins: Joins, first: str, second: str, served: bool
) -> None:
    cache, llm = make_cache(), LLM()

    @cached(cache, request=PromptRequest())
    def ask(prompt: str) -> Iterator[str]:
        yield from llm(prompt).split()

    def consume(prompt: str) -> str:
        return " ".join(ask(prompt))

    out = race(consume, llm, first, second, joins=joins if served else None)
    assert out == [f"answer to {first}", f"answer to {first if served else second}"]
    assert llm.prompts == ([first] if served else [first, second])
    assert cache.info().coalesced == int(served)


# -- failures: counted once, never a reason to wait ------------------------------------------


def test_a_call_whose_lookup_failed_does_not_wait(tmp_path: Path, joins: Joins) -> None:
    backend = RecordingBackend(EmbeddedBackend(tmp_path))
    llm = LLM()
    with SemanticCache(embedder=HashingEmbedder(), backend=backend) as cache:

        @cached(cache, request=PromptRequest())
        def ask(prompt: str) -> str:
            return llm(prompt)

        backend.down = True
        same = "How do vaccines work?"
        assert race(ask, llm, same, same, joins=None) == [f"answer to {same}"] * 2
        assert (joins.followers, len(llm.prompts), cache.info().errors) == (0, 2, 2)


def test_a_failing_guard_is_counted_once_and_the_follower_goes_upstream(
    tmp_path: Path, joins: Joins
) -> None:
    def broken(query: str, candidate: Candidate) -> str | None:
        raise RuntimeError("guard bug")

    llm = LLM()
    with SemanticCache(
        embedder=HashingEmbedder(),
        backend=EmbeddedBackend(tmp_path),
        policy=CachePolicy(min_similarity=0.55),
        guards=[broken],
    ) as cache:

        @cached(cache, request=PromptRequest())
        def ask(prompt: str) -> str:
            return llm(prompt)

        first, second, _ = PAIRS[2]
        out = race(ask, llm, first, second, joins=joins)
        assert out == [f"answer to {p}" for p in (first, second)]
        assert (joins.followers, cache.info().errors, cache.info().coalesced) == (1, 1, 0)
