"""SemanticCache over the embedded backend with the hashing embedder: policy end to end."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from semcache import (
    BackendError,
    CachePolicy,
    EmbeddedBackend,
    EmbeddingError,
    InvalidInputError,
    Scope,
    SemanticCache,
    Tier,
)
from semcache.testing import HashingEmbedder, ManualClock


@pytest.fixture
def cache(tmp_path: Path, clock: ManualClock) -> Iterator[SemanticCache]:
    with SemanticCache(
        embedder=HashingEmbedder(),
        backend=EmbeddedBackend(tmp_path),
        policy=CachePolicy(min_similarity=0.8, ttl=3600, max_entries=50),
        clock=clock,
    ) as c:
        yield c


GPT = Scope(model="gpt-4o", params={"temperature": 0})


def test_exact_tier_answers_without_embedding(cache: SemanticCache) -> None:
    cache.store("What is the capital of France?", "Paris", GPT)
    embedder = cache.embedder
    assert isinstance(embedder, HashingEmbedder)
    calls = embedder.calls
    result = cache.lookup("  what is the CAPITAL of france? ", GPT)
    assert result.tier is Tier.EXACT
    assert result.similarity == 1.0
    assert result.entry is not None
    assert result.entry.response == "Paris"
    assert embedder.calls == calls


def test_semantic_hit_and_per_call_threshold(cache: SemanticCache) -> None:
    cache.store("what is the capital of france", "Paris", GPT)
    near = "what is the capital of france please"
    result = cache.lookup(near, GPT)
    assert result.tier is Tier.SEMANTIC
    assert result.similarity is not None
    assert 0.8 <= result.similarity < 1.0
    strict = cache.lookup(near, GPT, min_similarity=0.99)
    assert not strict.hit
    assert strict.reason == "below_threshold"
    assert strict.similarity == pytest.approx(result.similarity)


def test_scopes_never_cross(cache: SemanticCache) -> None:
    cache.store("what is the capital of france", "Paris", GPT)
    for other in (
        Scope(model="gpt-4o-mini", params={"temperature": 0}),
        Scope(model="gpt-4o", params={"temperature": 0.7}),
        Scope(model="gpt-4o", params={"temperature": 0}, system="Answer in French."),
        Scope(model="gpt-4o", params={"temperature": 0}, tools=[{"type": "function"}]),
        Scope(model="gpt-4o", params={"temperature": 0}, tenant="other-customer"),
    ):
        assert not cache.lookup("what is the capital of france", other).hit


def test_ttl_expiry_with_injected_clock(cache: SemanticCache, clock: ManualClock) -> None:
    cache.store("short lived question", "a", GPT, ttl=10)
    cache.store("long lived question", "b", GPT)
    clock.advance(9.9)
    assert cache.lookup("short lived question", GPT).hit
    clock.advance(0.2)
    assert not cache.lookup("short lived question", GPT).hit
    assert cache.lookup("long lived question", GPT).hit
    assert cache.purge_expired() == 1
    clock.advance(3600)
    assert not cache.lookup("long lived question", GPT).hit


def test_size_bound_evicts_least_recently_used(tmp_path: Path, clock: ManualClock) -> None:
    c = SemanticCache(
        embedder=HashingEmbedder(),
        backend=EmbeddedBackend(tmp_path),
        policy=CachePolicy(max_entries=3, min_similarity=0.99),
        clock=clock,
    )
    for word in ("alpha", "bravo", "charlie"):
        c.store(f"question {word}", word, GPT)
        clock.advance(1)
    assert c.lookup("question alpha", GPT).hit  # alpha is now the most recently used
    clock.advance(1)
    c.store("question delta", "delta", GPT)
    assert c.info().evictions == 1
    assert c.info().entries == 3
    assert not c.lookup("question bravo", GPT).hit
    assert c.lookup("question alpha", GPT).hit
    c.close()


def test_store_replaces_exact_repeat(cache: SemanticCache) -> None:
    cache.store("same question", "old", GPT)
    cache.store("SAME question", "new", GPT)
    assert cache.info().entries == 1
    result = cache.lookup("same question", GPT)
    assert result.entry is not None
    assert result.entry.response == "new"


def test_bad_inputs_get_clear_errors(cache: SemanticCache) -> None:
    for bad in ("", "  ", 42, None, "x" * 9000):
        with pytest.raises(InvalidInputError):
            cache.lookup(bad, GPT)  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="normalised"):
        cache.store("q", "a", GPT, vector=np.ones(64, np.float32))
    with pytest.raises(InvalidInputError, match="NaN"):
        cache.store("q", "a", GPT, vector=np.full(64, np.nan, np.float32))
    with pytest.raises(InvalidInputError, match="64-d"):
        cache.store("q", "a", GPT, vector=np.ones(8, np.float32) / np.sqrt(8))
    assert cache.info().entries == 0


def test_component_failures_become_semcache_errors(tmp_path: Path) -> None:
    class Exploding(HashingEmbedder):
        def embed(self, texts):  # type: ignore[no-untyped-def]
            raise RuntimeError("CUDA out of memory")

    c = SemanticCache(embedder=Exploding(), backend=EmbeddedBackend(tmp_path / "a"))
    with pytest.raises(EmbeddingError, match="CUDA out of memory"):
        c.lookup("hello", GPT)
    c.close()
    closed = SemanticCache(embedder=HashingEmbedder(), backend=EmbeddedBackend(tmp_path / "b"))
    closed.close()
    with pytest.raises(BackendError):
        closed.lookup("hello", GPT)


def test_corrupt_entry_is_raised_and_discarded(cache: SemanticCache) -> None:
    entry = cache.store("corrupt me", "fine", GPT)
    backend = cache.backend
    assert isinstance(backend, EmbeddedBackend)
    backend._db.execute("UPDATE entries SET response = '{not json' WHERE id = ?", (entry.id,))
    with pytest.raises(BackendError, match="cannot be decoded"):
        cache.lookup("corrupt me", GPT)
    # A direct lookup raises; only the fail-open path (decorator, integrations) counts errors.
    assert cache.info().errors == 0
    assert not cache.lookup("corrupt me", GPT).hit  # discarded, so a clean miss now


def test_info_counts_tiers_and_tokens(cache: SemanticCache) -> None:
    cache.store("q alpha", "a", GPT, metadata={"prompt_tokens": 10, "completion_tokens": 5})
    cache.lookup("q alpha", GPT)
    cache.lookup("q alpha beta", GPT, min_similarity=0.5)
    cache.lookup("something else entirely", GPT)
    info = cache.info()
    assert (info.hits_exact, info.hits_semantic, info.misses) == (1, 1, 1)
    assert info.tokens_saved == 30
    assert info.hit_rate == pytest.approx(2 / 3)


async def test_async_and_sync_lookups_agree(cache: SemanticCache) -> None:
    await cache.astore("async stored question", "x", GPT)
    for text in ("async stored question", "async stored question now", "unrelated words here"):
        a, s = await cache.alookup(text, GPT), cache.lookup(text, GPT)
        assert (a.hit, a.tier, a.similarity) == (s.hit, s.tier, s.similarity)


async def test_async_admin_matches_sync(cache: SemanticCache, clock: ManualClock) -> None:
    other = Scope(model="gpt-4o-mini")
    kept = await cache.astore("kept question", "k", other)
    gone = await cache.astore("deleted question", "d", GPT)
    await cache.astore("short lived question", "s", GPT, ttl=1)
    assert await cache.adelete(gone.id) is True
    assert await cache.adelete(gone.id) is False
    clock.advance(5)
    assert await cache.apurge_expired() == 1
    await cache.astore("cleared question", "c", GPT)
    assert await cache.aclear(GPT) == 1
    assert (await cache.alookup("kept question", other)).entry == kept
    assert await cache.aclear() == 1
    assert cache.info().entries == 0


def test_writes_purge_expired_entries(cache: SemanticCache, clock: ManualClock) -> None:
    for i in range(5):
        cache.store(f"stale question {i}", "a", GPT, ttl=1)
    clock.advance(120)
    cache.store("fresh question", "b", GPT)
    assert cache.info().entries == 1


def test_counter_names_are_the_cacheinfo_fields() -> None:
    """The ``Counter`` literal (what mypy checks names against) lists every counter."""
    from dataclasses import fields
    from typing import get_args

    from semcache.stats import CacheInfo, Counter

    assert set(get_args(Counter)) == {f.name for f in fields(CacheInfo)} - {"entries"}
