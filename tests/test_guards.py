"""LexicalGuard: numbers and negation veto semantic hits, inside a real cache."""

from __future__ import annotations

import pytest

from semcache import CachePolicy, Entry, MemoryBackend, SemanticCache
from semcache.matching.guards import LexicalGuard, negations, numbers
from semcache.models import Candidate
from semcache.testing import HashingEmbedder


def _cand(prompt: str, similarity: float = 0.97) -> Candidate:
    entry = Entry(id="1", scope_key="s", text_key="t", prompt=prompt, response="r", created_at=0.0)
    return Candidate(entry, similarity)


def test_numbers_are_normalised() -> None:
    assert numbers("flights under $1,000 for 2 people") == {"1000", "2"}
    assert numbers("2.50 or 2.5 or two") == {"2.5", "2"}
    assert numbers("two", words=False) == frozenset()
    assert numbers("no digits here") == frozenset()


def test_negation_counts_contractions() -> None:
    assert negations("Is it safe?") == 0
    assert negations("Isn't it safe?") == 1
    assert negations("It is not never safe") == 2
    assert negations("I can’t go without you") == 2


@pytest.mark.parametrize(
    ("query", "stored", "reason"),
    [
        ("cheap flights under 300 dollars", "cheap flights under 500 dollars", "numbers"),
        ("top 10 movies of 2019", "top 10 movies of 2018", "numbers"),
        ("how to lose weight in two weeks", "how to lose weight in 3 weeks", "numbers"),
        ("is coffee bad for you", "is coffee not bad for you", "negation"),
        ("why doesn't my car start", "why does my car start", "negation"),
        ("how do I learn python", "how can I learn python", None),
        ("is it not raining", "isn't it raining", None),
        ("top 10 movies", "the 10 best movies", None),
    ],
)
def test_guard_vetoes_answer_determining_differences(
    query: str, stored: str, reason: str | None
) -> None:
    assert LexicalGuard()(query, _cand(stored)) == reason


def test_guard_checks_can_be_switched_off() -> None:
    assert LexicalGuard(numbers=False)("top 5", _cand("top 6")) is None
    assert LexicalGuard(negation=False)("is it safe", _cand("is it not safe")) is None
    assert LexicalGuard(number_words=False)("in two weeks", _cand("in 2 weeks")) == "numbers"


def test_guard_vetoes_a_hit_in_a_real_cache() -> None:
    policy = CachePolicy(min_similarity=0.5)
    with SemanticCache(
        embedder=HashingEmbedder(), backend=MemoryBackend(), policy=policy, guards=[LexicalGuard()]
    ) as cache:
        cache.store("best hotels in paris under 200 euros", "list A")
        vetoed = cache.lookup("best hotels in paris under 300 euros")
        assert vetoed.entry is None
        assert vetoed.reason == "vetoed:numbers"
        hit = cache.lookup("best hotels in paris under 200 euros please")
        assert hit.hit
        assert hit.entry is not None
        assert hit.entry.response == "list A"
        info = cache.info()
        assert (info.hits_semantic, info.misses) == (1, 1)
