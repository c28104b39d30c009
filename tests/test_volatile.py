"""Volatile prompts: the detector, its labelled fixture, and the policy on every path.

The detector is pure text rules; the policy is checked end to end through the direct API and
the ``@cached`` decorator (sync and async) on the embedded backend, with a manual clock.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from semcache import (
    CachePolicy,
    ConfigurationError,
    EmbeddedBackend,
    GuardError,
    NotCacheableError,
    PromptRequest,
    SemanticCache,
    VolatilePolicy,
    cached,
)
from semcache.matching.volatile import is_volatile, volatility
from semcache.policy import DEFAULT_VOLATILE_TTL, expiry, max_age, volatile_bypassed
from semcache.testing import HashingEmbedder, ManualClock

VOLATILE_TEXT = "what's the weather in Paris today"
TIMELESS_TEXT = "what is the capital of France"

#: Floors on the whole fixture and on its held-out half C (see tests/data/README.md); the
#: measured figures are in docs/BENCHMARKS.md ("Volatile prompts").
FLOOR_ALL = {"precision": 0.95, "recall": 0.90}
FLOOR_HELD_OUT = {"precision": 0.90, "recall": 0.70}


# -- the detector ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("What's the weather today?", "anchor"),
        ("current BTC price", "attributive"),
        ("What's the latest version of Python?", "attributive"),
        ("who won last night?", "anchor"),
        ("Is the site down right now?", "anchor"),
        ("is Gmail down", "status"),
        ("how many euros is 100 dollars", "exchange_rate"),
        ("What is the price of Bitcoin?", "price"),
        ("How many days until Christmas?", "clock"),
        ("weather forecast for London", "weather"),
    ],
)
def test_volatile_questions_are_recognised(text: str, reason: str) -> None:
    assert volatility(text) == reason
    assert is_volatile(text)


@pytest.mark.parametrize(
    "text",
    [
        "What is the current in a circuit?",
        "How do I get the current date in Python?",
        "history of the stock market",
        "What does 'latest' mean?",
        "Who won the 2014 World Cup?",
        "How is a stock's price determined?",
        "I'm currently learning Spanish, any tips?",
        "What should I cook for dinner tonight?",
        "How do I update npm to the latest version?",
        "What is the capital of France?",
        "Quelle est la météo aujourd'hui ?",  # not English: never recognised
    ],
)
def test_timeless_questions_with_temporal_words_are_not(text: str) -> None:
    assert volatility(text) is None


def test_a_long_prompt_is_judged_on_its_ends() -> None:
    filler = "Here is some background about my project. " * 50
    assert is_volatile(filler + "What's the weather today?")
    assert is_volatile("What's the weather today? " + filler)
    assert not is_volatile(filler + "What's the weather today? " + filler)
    assert not is_volatile(filler)


def load_fixture(test_data: Path) -> list[dict[str, Any]]:
    lines = (test_data / "volatile_prompts.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def precision_recall(rows: list[dict[str, Any]]) -> dict[str, float]:
    got = [(is_volatile(r["text"]), bool(r["volatile"])) for r in rows]
    tp = sum(g and w for g, w in got)
    return {
        "precision": tp / sum(g for g, _ in got),
        "recall": tp / sum(w for _, w in got),
    }


def test_fixture_is_balanced_and_split_by_the_stated_rule(test_data: Path) -> None:
    rows = load_fixture(test_data)
    assert len(rows) >= 200
    assert len({r["text"] for r in rows}) == len(rows)
    assert sum(r["volatile"] for r in rows) == len(rows) // 2
    assert sum(r["kind"] == "hard" for r in rows) >= 50
    for r in rows:
        if r["half"] != "C":
            first = hashlib.sha256(r["text"].encode("utf-8")).digest()[0]
            assert r["half"] == ("A" if first % 2 == 0 else "B"), r


def test_detector_reaches_its_floor_on_the_fixture(test_data: Path) -> None:
    rows = load_fixture(test_data)
    overall = precision_recall(rows)
    held_out = precision_recall([r for r in rows if r["half"] == "C"])
    assert overall["precision"] >= FLOOR_ALL["precision"], overall
    assert overall["recall"] >= FLOOR_ALL["recall"], overall
    assert held_out["precision"] >= FLOOR_HELD_OUT["precision"], held_out
    assert held_out["recall"] >= FLOOR_HELD_OUT["recall"], held_out


# -- configuration --------------------------------------------------------------------------


def test_on_by_default_with_a_five_minute_cap() -> None:
    rule = CachePolicy().volatile
    assert rule == VolatilePolicy(action="cap_ttl", max_ttl=DEFAULT_VOLATILE_TTL)
    assert DEFAULT_VOLATILE_TTL == 300.0
    assert CachePolicy(volatile=None).volatile is None


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"action": "drop"}, "'cap_ttl' or 'bypass'"),
        ({"max_ttl": 0}, "positive number"),
        ({"max_ttl": -5.0}, "positive number"),
        ({"max_ttl": math.inf}, "positive number"),
        ({"max_ttl": math.nan}, "positive number"),
        ({"max_ttl": True}, "positive number"),
        ({"max_ttl": "300"}, "positive number"),
        ({"detector": "weather"}, "callable"),
    ],
)
def test_bad_volatile_settings_fail_at_construction(kwargs: Any, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        VolatilePolicy(**kwargs)


def test_cache_policy_refuses_a_non_policy_volatile() -> None:
    with pytest.raises(ConfigurationError, match="VolatilePolicy or None"):
        CachePolicy(volatile=True)  # type: ignore[arg-type]


def test_pure_decisions() -> None:
    capped = CachePolicy(ttl=3600.0, volatile=VolatilePolicy(max_ttl=60.0))
    assert expiry(100.0, capped, None, volatile=True) == 160.0  # the cap wins over the policy's
    assert expiry(100.0, capped, 7200.0, volatile=True) == 160.0  # and over a per-call TTL
    assert expiry(100.0, capped, 10.0, volatile=True) == 110.0  # a shorter one is kept
    assert expiry(100.0, capped, None, volatile=False) == 3700.0
    assert expiry(100.0, CachePolicy(), None, volatile=True) == 100.0 + DEFAULT_VOLATILE_TTL
    assert expiry(100.0, CachePolicy(volatile=None), None, volatile=True) is None
    assert max_age(capped, True) == 60.0
    assert max_age(capped, False) is None
    bypass = CachePolicy(volatile=VolatilePolicy(action="bypass"))
    assert max_age(bypass, True) is None
    assert volatile_bypassed(bypass, True)
    assert not volatile_bypassed(bypass, False)
    assert not volatile_bypassed(capped, True)


# -- the direct API, sync and async -----------------------------------------------------------


def make_cache(path: Path, clock: ManualClock, rule: VolatilePolicy | None) -> SemanticCache:
    return SemanticCache(
        embedder=HashingEmbedder(),
        backend=EmbeddedBackend(path),
        policy=CachePolicy(min_similarity=0.8, ttl=3600.0, volatile=rule),
        clock=clock,
    )


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(1000.0)


@pytest.fixture
def capped(tmp_path: Path, clock: ManualClock) -> Iterator[SemanticCache]:
    with make_cache(tmp_path, clock, VolatilePolicy(max_ttl=60.0)) as c:
        yield c


@pytest.fixture
def bypassing(tmp_path: Path, clock: ManualClock) -> Iterator[SemanticCache]:
    with make_cache(tmp_path, clock, VolatilePolicy(action="bypass")) as c:
        yield c


def test_cap_limits_a_volatile_entry_and_spares_others(
    capped: SemanticCache, clock: ManualClock
) -> None:
    hot = capped.store(VOLATILE_TEXT, "sunny")
    cold = capped.store(TIMELESS_TEXT, "Paris")
    assert hot.expires_at == 1060.0
    assert cold.expires_at == 4600.0
    assert capped.lookup(VOLATILE_TEXT).hit
    clock.advance(61.0)
    assert not capped.lookup(VOLATILE_TEXT).hit
    assert capped.lookup(TIMELESS_TEXT).hit
    info = capped.info()
    assert info.volatile == 2
    assert (info.hits, info.misses, info.bypasses) == (2, 1, 0)


async def test_cap_limits_a_volatile_entry_async(capped: SemanticCache, clock: ManualClock) -> None:
    hot = await capped.astore(VOLATILE_TEXT, "sunny")
    assert hot.expires_at == 1060.0
    assert (await capped.alookup(VOLATILE_TEXT)).hit
    clock.advance(61.0)
    assert not (await capped.alookup(VOLATILE_TEXT)).hit
    assert capped.info().volatile == 2
    await capped.aclose()


def test_a_volatile_lookup_is_served_fresh_entries_only(tmp_path: Path, clock: ManualClock) -> None:
    """An answer stored without the guard (a long TTL) is not served to a volatile prompt once
    older than the cap, from the exact tier or the semantic one."""
    with make_cache(tmp_path, clock, None) as unguarded:
        unguarded.store(VOLATILE_TEXT, "sunny")
    with make_cache(tmp_path, clock, VolatilePolicy(max_ttl=60.0)) as guarded:
        assert guarded.lookup(VOLATILE_TEXT).tier is not None
        assert guarded.lookup(VOLATILE_TEXT + " please").hit
        clock.advance(61.0)
        exact = guarded.lookup(VOLATILE_TEXT)
        near = guarded.lookup(VOLATILE_TEXT + " please")
        assert not exact.hit
        assert not near.hit
        assert guarded.backend.count() == 1  # still stored: expires in an hour


async def test_a_volatile_lookup_is_served_fresh_entries_only_async(
    tmp_path: Path, clock: ManualClock
) -> None:
    with make_cache(tmp_path, clock, None) as unguarded:
        await unguarded.astore(VOLATILE_TEXT, "sunny")
        await unguarded.aclose()
    with make_cache(tmp_path, clock, VolatilePolicy(max_ttl=60.0)) as guarded:
        assert (await guarded.alookup(VOLATILE_TEXT + " please")).hit
        clock.advance(61.0)
        assert not (await guarded.alookup(VOLATILE_TEXT)).hit
        assert not (await guarded.alookup(VOLATILE_TEXT + " please")).hit
        await guarded.aclose()


def test_bypass_neither_looks_up_nor_stores(bypassing: SemanticCache) -> None:
    embedder = bypassing.embedder
    assert isinstance(embedder, HashingEmbedder)
    result = bypassing.lookup(VOLATILE_TEXT)
    assert not result.hit
    assert result.reason == "volatile"
    assert embedder.calls == 0  # not embedded, not searched
    with pytest.raises(NotCacheableError) as refused:
        bypassing.store(VOLATILE_TEXT, "sunny")
    assert refused.value.reason == "volatile"
    bypassing.store(TIMELESS_TEXT, "Paris")
    assert bypassing.lookup(TIMELESS_TEXT).hit
    info = bypassing.info()
    assert (info.bypasses, info.volatile, info.misses, info.hits, info.entries) == (1, 1, 0, 1, 1)


async def test_bypass_neither_looks_up_nor_stores_async(bypassing: SemanticCache) -> None:
    result = await bypassing.alookup(VOLATILE_TEXT)
    assert (result.hit, result.reason) == (False, "volatile")
    with pytest.raises(NotCacheableError):
        await bypassing.astore(VOLATILE_TEXT, "sunny")
    info = bypassing.info()
    assert (info.bypasses, info.volatile, info.entries) == (1, 1, 0)
    await bypassing.aclose()


def test_off_caches_volatile_prompts_like_any_other(tmp_path: Path, clock: ManualClock) -> None:
    with make_cache(tmp_path, clock, None) as off:
        assert off.store(VOLATILE_TEXT, "sunny").expires_at == 4600.0
        clock.advance(61.0)
        assert off.lookup(VOLATILE_TEXT).hit
        assert off.info().volatile == 0


# -- the decorator, sync and async ----------------------------------------------------------


class Upstream:
    def __init__(self) -> None:
        self.calls = 0

    def answer(self, prompt: str) -> str:
        self.calls += 1
        return f"answer #{self.calls} to {prompt}"


@pytest.mark.parametrize(
    ("rule", "calls"),
    [(VolatilePolicy(max_ttl=60.0), 2), (None, 1)],  # capped: expired after 60 s
)
def test_decorator_caps(
    tmp_path: Path, clock: ManualClock, rule: VolatilePolicy | None, calls: int
) -> None:
    with make_cache(tmp_path, clock, rule) as cache:
        up = Upstream()

        @cached(cache, request=PromptRequest())
        def ask(prompt: str) -> str:
            return up.answer(prompt)

        first = ask(VOLATILE_TEXT)
        assert ask(VOLATILE_TEXT) == first
        clock.advance(61.0)
        ask(VOLATILE_TEXT)
        assert up.calls == calls


def test_decorator_bypasses(tmp_path: Path, clock: ManualClock) -> None:
    with make_cache(tmp_path / "bypass", clock, VolatilePolicy(action="bypass")) as cache:
        up = Upstream()

        @cached(cache, request=PromptRequest())
        def ask_bypassed(prompt: str) -> str:
            return up.answer(prompt)

        assert ask_bypassed(VOLATILE_TEXT) != ask_bypassed(VOLATILE_TEXT)
        assert ask_bypassed(TIMELESS_TEXT) == ask_bypassed(TIMELESS_TEXT)
        info = cache.info()
        assert (info.bypasses, info.volatile, info.store_refusals, info.stores) == (2, 2, 0, 1)
        assert info.entries == 1


async def test_decorator_caps_and_bypasses_async(tmp_path: Path, clock: ManualClock) -> None:
    with make_cache(tmp_path / "cap", clock, VolatilePolicy(max_ttl=60.0)) as cache:
        up = Upstream()

        @cached(cache, request=PromptRequest())
        async def ask(prompt: str) -> str:
            return up.answer(prompt)

        first = await ask(VOLATILE_TEXT)
        assert await ask(VOLATILE_TEXT) == first
        clock.advance(61.0)
        assert await ask(VOLATILE_TEXT) != first
        assert up.calls == 2
        await cache.aclose()

    with make_cache(tmp_path / "bypass", clock, VolatilePolicy(action="bypass")) as cache:
        up = Upstream()

        @cached(cache, request=PromptRequest())
        async def ask_bypassed(prompt: str) -> str:
            return up.answer(prompt)

        assert await ask_bypassed(VOLATILE_TEXT) != await ask_bypassed(VOLATILE_TEXT)
        info = cache.info()
        assert (info.bypasses, info.volatile, info.entries) == (2, 2, 0)
        await cache.aclose()


# -- a detector that fails ------------------------------------------------------------------


def broken_detector(text: str) -> bool:
    raise RuntimeError("detector bug")


def test_a_failing_detector_is_a_miss_and_the_upstream_answer(
    tmp_path: Path, clock: ManualClock
) -> None:
    rule = VolatilePolicy(detector=broken_detector)
    with make_cache(tmp_path, clock, rule) as cache:
        up = Upstream()

        @cached(cache, request=PromptRequest())
        def ask(prompt: str) -> str:
            return up.answer(prompt)

        assert ask(VOLATILE_TEXT) == f"answer #1 to {VOLATILE_TEXT}"
        assert ask(VOLATILE_TEXT) == f"answer #2 to {VOLATILE_TEXT}"
        info = cache.info()
        assert info.errors == 2
        assert (info.hits, info.entries) == (0, 0)
        with pytest.raises(GuardError, match="detector bug"):
            cache.lookup(VOLATILE_TEXT)  # the direct API raises, as for any guard


async def test_a_failing_detector_is_a_miss_async(tmp_path: Path, clock: ManualClock) -> None:
    with make_cache(tmp_path, clock, VolatilePolicy(detector=broken_detector)) as cache:
        up = Upstream()

        @cached(cache, request=PromptRequest())
        async def ask(prompt: str) -> str:
            return up.answer(prompt)

        assert await ask(VOLATILE_TEXT) == f"answer #1 to {VOLATILE_TEXT}"
        assert cache.info().errors == 1
        with pytest.raises(GuardError):
            await cache.astore(VOLATILE_TEXT, "x")
        await cache.aclose()


# -- the integrations key through the same place ------------------------------------------------


def completion(text: str) -> dict[str, Any]:
    return {
        "id": "x",
        "object": "chat.completion",
        "model": "gpt-4o-mini",
        "choices": [
            {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}
        ],
        "usage": {"prompt_tokens": 5, "completion_tokens": 7},
    }


@pytest.mark.parametrize(("rule", "entries"), [(VolatilePolicy(action="bypass"), 1), (None, 2)])
def test_litellm_plugin_applies_the_policy(
    tmp_path: Path, clock: ManualClock, rule: VolatilePolicy | None, entries: int
) -> None:
    pytest.importorskip("litellm")
    from semcache_litellm import LiteLLMCacheSettings, SemcacheLiteLLMCache

    with make_cache(tmp_path / "store", clock, rule) as cache:
        plugin = SemcacheLiteLLMCache(cache, LiteLLMCacheSettings(path=str(tmp_path / "unused")))
        for i, text in enumerate((VOLATILE_TEXT, TIMELESS_TEXT)):
            kwargs = {
                "model": "gpt-4o-mini",
                "messages": [{"role": "user", "content": text}],
                "litellm_call_id": str(i),
            }
            assert plugin.get_cache("k", **kwargs) is None
            plugin.set_cache("k", {"timestamp": clock.now(), "response": completion("a")}, **kwargs)
            served = plugin.get_cache("k", **kwargs) is not None
            assert served is (rule is None or text == TIMELESS_TEXT)
        info = cache.info()
        assert info.entries == entries
        assert info.volatile == (2 if rule is not None else 0)  # both lookups, counted once each
        assert info.store_refusals == 0  # a bypassed request is not counted again at store


@pytest.mark.parametrize(("rule", "entries"), [(VolatilePolicy(action="bypass"), 0), (None, 1)])
def test_langchain_cache_applies_the_policy(
    tmp_path: Path, clock: ManualClock, rule: VolatilePolicy | None, entries: int
) -> None:
    pytest.importorskip("langchain_core")
    from langchain_core.outputs import Generation

    from semcache_langchain import SemanticLLMCache

    with make_cache(tmp_path, clock, rule) as cache:
        llm_cache = SemanticLLMCache(cache)
        llm_cache.update(VOLATILE_TEXT, "fake-llm", [Generation(text="sunny")])
        served = llm_cache.lookup(VOLATILE_TEXT, "fake-llm")
        assert (served is not None) is (rule is None)
        assert cache.info().entries == entries


def test_litellm_proxy_settings_choose_the_policy() -> None:
    pytest.importorskip("litellm")
    from semcache_litellm.settings import LiteLLMCacheSettings

    def policy(**raw: Any) -> VolatilePolicy | None:
        return LiteLLMCacheSettings.from_mapping({"path": "store", **raw}).policy().volatile

    assert policy() == VolatilePolicy()
    assert policy(volatile="bypass") == VolatilePolicy(action="bypass")
    assert policy(volatile="cap_ttl", volatile_ttl="60") == VolatilePolicy(max_ttl=60.0)
    assert policy(volatile="off") is None
    with pytest.raises(ConfigurationError, match="volatile must be one of"):
        policy(volatile="never")
    with pytest.raises(ConfigurationError, match="positive number"):
        policy(volatile_ttl=0)
