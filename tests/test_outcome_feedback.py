"""Feedback from ``@cached`` callers: the :class:`CallOutcome` carries the lookup behind it, so a
served hit, or a shadow-mode would-be hit, can be marked wrong (the dashboard's false-hit
estimate), sync and async alike."""

from __future__ import annotations

import asyncio

from semcache import CachePolicy, CallOutcome, MemoryBackend, Outcome, SemanticCache, cached
from semcache.llm.requests import PromptRequest
from semcache.testing import HashingEmbedder

QUESTION = "what is the boiling point of water at sea level"


def _cache(*, shadow: bool = False) -> SemanticCache:
    return SemanticCache(
        embedder=HashingEmbedder(),
        backend=MemoryBackend(),
        policy=CachePolicy(min_similarity=0.8),
        shadow=shadow,
    )


def test_a_served_hit_can_be_marked_wrong_through_its_outcome() -> None:
    outcomes: list[CallOutcome] = []
    cache = _cache()

    @cached(cache, request=PromptRequest(), on_outcome=outcomes.append)
    def ask(prompt: str) -> str:
        return "100 degrees Celsius"

    ask(QUESTION)
    ask(QUESTION)
    miss, hit = outcomes
    assert miss.outcome is Outcome.MISS
    assert hit.outcome is Outcome.HIT
    assert hit.lookup is not None
    assert hit.lookup.entry is not None
    cache.feedback(hit.lookup, correct=False)
    info = cache.info()
    assert (info.feedback, info.false_hits, info.shadow_false_hits) == (1, 1, 0)


def test_a_shadow_would_be_hit_is_counted_as_shadow_feedback() -> None:
    outcomes: list[CallOutcome] = []
    cache = _cache(shadow=True)

    @cached(cache, request=PromptRequest(), on_outcome=outcomes.append)
    def ask(prompt: str) -> str:
        return "100 degrees Celsius"

    ask(QUESTION)
    ask(QUESTION)
    second = outcomes[-1]
    assert second.outcome is Outcome.MISS  # shadow mode never serves
    assert second.lookup is not None
    assert second.lookup.shadow is not None
    cache.feedback(second.lookup, correct=False)
    info = cache.info()
    assert (info.feedback, info.false_hits, info.shadow_false_hits) == (1, 0, 1)


def test_async_outcomes_carry_the_lookup_too() -> None:
    outcomes: list[CallOutcome] = []
    cache = _cache()

    @cached(cache, request=PromptRequest(), on_outcome=outcomes.append)
    async def ask(prompt: str) -> str:
        return "100 degrees Celsius"

    async def run() -> None:
        await ask(QUESTION)
        await ask(QUESTION)

    asyncio.run(run())
    hit = outcomes[-1]
    assert hit.outcome is Outcome.HIT
    assert hit.lookup is not None
    assert hit.lookup.entry is not None
    cache.feedback(hit.lookup, correct=True)
    assert (cache.info().feedback, cache.info().false_hits) == (1, 0)


def test_a_bypassed_call_has_no_lookup() -> None:
    outcomes: list[CallOutcome] = []
    cache = _cache()

    @cached(cache, request=PromptRequest(), on_outcome=outcomes.append)
    def ask(prompt: str) -> str:
        return "nothing"

    ask("")  # empty text: bypassed
    (bypass,) = outcomes
    assert bypass.outcome is Outcome.BYPASS
    assert bypass.lookup is None
