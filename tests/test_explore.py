"""Exploration: uncertain hits go upstream anyway, the fresh answer is returned and judged."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import pytest

from semcache import CachePolicy, MemoryBackend, PromptRequest, SemanticCache, cached
from semcache.matching.adaptive import AdaptiveConfig, AdaptiveThresholds
from semcache.matching.explore import AnswerMatch, Exploration, explore_target
from semcache.models import Candidate, Entry, LookupResult, Tier
from semcache.testing import HashingEmbedder

FIRST = "what is the price of a train ticket to rome"
NEAR = "what is the price of a plane ticket to rome"


def _cache(
    *,
    explore: Exploration | None,
    adaptive: bool = True,
    shadow: bool = False,
    initial: float = 0.5,
) -> Any:
    thresholds = (
        AdaptiveThresholds(AdaptiveConfig(initial_threshold=initial), explore=explore)
        if adaptive
        else None
    )
    return SemanticCache(
        embedder=HashingEmbedder(),
        backend=MemoryBackend(),
        policy=CachePolicy(min_similarity=0.3),
        thresholds=thresholds,
        shadow=shadow,
    )


def _always() -> Exploration:
    return Exploration(probability=1.0, band=1.0, rng=random.Random(1))


def _llm(answers: dict[str, str]) -> tuple[Callable[..., str], list[str]]:
    asked: list[str] = []

    def llm(prompt: str) -> str:
        asked.append(prompt)
        return answers[prompt]

    return llm, asked


@pytest.mark.parametrize("agree", [True, False])
def test_an_explored_hit_returns_the_fresh_answer_and_records_a_verdict(agree: bool) -> None:
    cache = _cache(explore=_always())
    llm, asked = _llm({FIRST: "about 40 euros", NEAR: "about 40 euros" if agree else "120 euros"})
    ask = cached(cache, request=PromptRequest())(llm)
    assert ask(FIRST) == "about 40 euros"  # a miss: stored
    assert ask(NEAR) == llm(NEAR)  # a would-be hit, explored: the LLM's fresh answer
    assert asked == [FIRST, NEAR, NEAR]
    info = cache.info()
    assert (info.explored, info.explored_false) == (1, 0 if agree else 1)
    assert info.false_hits == 0  # the caller never got the stored answer
    assert info.hits == 0
    # learned: a wrong answer raises the threshold above that similarity; one right one
    # certifies nothing, so the threshold stays where it was
    assert (cache.thresholds.thresholds()[0] > 0.5) is not agree


@pytest.mark.parametrize("agree", [True, False])
async def test_async_exploration_matches_sync(agree: bool) -> None:
    cache = _cache(explore=_always())
    answers = {FIRST: "about 40 euros", NEAR: "about 40 euros" if agree else "120 euros"}
    asked: list[str] = []

    async def llm(prompt: str) -> str:
        asked.append(prompt)
        return answers[prompt]

    ask = cached(cache, request=PromptRequest())(llm)
    assert await ask(FIRST) == "about 40 euros"
    assert await ask(NEAR) == answers[NEAR]
    assert asked == [FIRST, NEAR]
    info = cache.info()
    assert (info.explored, info.explored_false) == (1, 0 if agree else 1)


def test_no_bound_no_exploration() -> None:
    for cache in (_cache(explore=None, adaptive=False), _cache(explore=Exploration(band=0))):
        llm, asked = _llm({FIRST: "about 40 euros", NEAR: "120 euros"})
        ask = cached(cache, request=PromptRequest())(llm)
        ask(FIRST)
        assert ask(NEAR) == "about 40 euros"  # served from cache, never explored
        assert asked == [FIRST]
        assert cache.info().explored == 0


def test_shadow_mode_reports_the_verdicts_of_would_be_hits() -> None:
    cache = _cache(explore=Exploration(probability=0.0, band=1.0), shadow=True)
    llm, asked = _llm({FIRST: "about 40 euros", NEAR: "120 euros"})
    ask = cached(cache, request=PromptRequest())(llm)
    ask(FIRST)
    assert ask(NEAR) == "120 euros"
    assert asked == [FIRST, NEAR]
    info = cache.info()
    assert (info.shadow_hits, info.feedback, info.shadow_false_hits) == (1, 1, 1)
    assert info.explored == 0  # no extra upstream call: shadow mode calls it anyway


@pytest.mark.parametrize("agree", [True, False])
def test_a_near_miss_below_the_learned_threshold_is_judged_for_free(agree: bool) -> None:
    cache = _cache(explore=Exploration(probability=0.0, band=1.0), initial=0.999)
    llm, asked = _llm({FIRST: "about 40 euros", NEAR: "about 40 euros" if agree else "120 euros"})
    ask = cached(cache, request=PromptRequest())(llm)
    ask(FIRST)
    assert ask(NEAR) == llm(NEAR)  # a miss: the LLM answers, as it would anyway
    assert asked == [FIRST, NEAR, NEAR]
    info = cache.info()
    assert (info.misses, info.explored, info.feedback, info.false_hits) == (2, 0, 1, 0)
    assert cache.thresholds.observations == 1  # a verdict below the threshold: evidence


def _result(similarity: float, threshold: float, tier: Tier = Tier.SEMANTIC) -> LookupResult:
    entry = Entry(id="e", scope_key="s", text_key="t", prompt="p", response=1, created_at=0)
    return LookupResult(entry=entry, tier=tier, similarity=similarity, threshold=threshold)


def test_the_decision_explores_only_inside_the_band_and_under_the_probability() -> None:
    decide = {"band": 0.03, "probability": 0.1, "shadow": False}
    assert explore_target(_result(0.91, 0.9), draw=0.05, **decide) is not None  # type: ignore[arg-type]
    assert explore_target(_result(0.91, 0.9), draw=0.5, **decide) is None  # type: ignore[arg-type]
    assert explore_target(_result(0.95, 0.9), draw=0.0, **decide) is None  # type: ignore[arg-type]
    exact = _result(1.0, 0.99, Tier.EXACT)
    assert explore_target(exact, draw=0.0, **decide) is None  # type: ignore[arg-type]
    miss = LookupResult(entry=None, tier=None, similarity=0.91, threshold=0.9)
    assert explore_target(miss, draw=0.0, **decide) is None  # type: ignore[arg-type]
    near = Candidate(_result(0.88, 0.9).entry, 0.88)  # type: ignore[arg-type]
    below = LookupResult(entry=None, tier=None, similarity=0.88, threshold=0.9, nearest=near)
    assert explore_target(below, draw=0.99, **decide) is near  # type: ignore[arg-type]
    distant = Candidate(near.entry, 0.8)
    far = LookupResult(entry=None, tier=None, similarity=0.8, threshold=0.9, nearest=distant)
    assert explore_target(far, draw=0.0, **decide) is None  # type: ignore[arg-type]


def test_answer_match_short_exact_long_by_embedding() -> None:
    match = AnswerMatch(embedder=HashingEmbedder(), short_words=3, min_cosine=0.5)
    assert match("About 40 euros.", "about  40 euros")
    assert not match("40 euros", "120 euros")
    long_a = "the train from milan to rome takes about three hours and costs forty euros"
    long_b = "the train from milan to rome takes roughly three hours and costs forty euros"
    assert match(long_a, long_b)
    assert not AnswerMatch(short_words=3)(long_a, long_b)  # no embedder: exact only
