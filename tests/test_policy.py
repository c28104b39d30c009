from __future__ import annotations

import pytest

from semcache import CachePolicy, ConfigurationError, Entry, InvalidInputError, Tier
from semcache.models import Candidate
from semcache.policy import check_text, choose, expiry, resolve_threshold


def _cand(sim: float, prompt: str = "q", id_: str = "1") -> Candidate:
    entry = Entry(
        id=id_, scope_key="s", text_key="t" + id_, prompt=prompt, response="a", created_at=0.0
    )
    return Candidate(entry, sim)


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"min_similarity": 1.5}, "[-1, 1]"),
        ({"min_similarity": "0.9"}, "must be a number"),
        ({"ttl": 0}, "ttl"),
        ({"ttl": float("inf")}, "ttl"),
        ({"max_entries": 0}, "max_entries"),
        ({"candidates": 0}, "candidates"),
        ({"max_text_chars": 0}, "max_text_chars"),
    ],
)
def test_policy_validates_at_construction(kwargs: dict[str, object], fragment: str) -> None:
    with pytest.raises(ConfigurationError, match=fragment.replace("[", r"\[").replace("]", r"\]")):
        CachePolicy(**kwargs)  # type: ignore[arg-type]


def test_choose_takes_best_candidate_at_or_above_threshold() -> None:
    result = choose("q", [_cand(0.80, id_="1"), _cand(0.95, id_="2"), _cand(0.91, id_="3")], 0.9)
    assert result.hit
    assert result.entry is not None
    assert result.entry.id == "2"
    assert result.tier is Tier.SEMANTIC
    assert result.similarity == pytest.approx(0.95)
    exactly = choose("q", [_cand(0.9)], 0.9)
    assert exactly.hit


def test_choose_reports_near_miss_similarity() -> None:
    result = choose("q", [_cand(0.85)], 0.9)
    assert not result.hit
    assert result.similarity == pytest.approx(0.85)
    assert result.reason == "below_threshold"
    assert choose("q", [], 0.9).reason == "no_candidates"


def test_guard_veto_falls_through_to_next_candidate() -> None:
    def no_two(query: str, cand: Candidate) -> str | None:
        return "two" if cand.entry.id == "2" else None

    result = choose("q", [_cand(0.99, id_="2"), _cand(0.95, id_="3")], 0.9, [no_two])
    assert result.entry is not None
    assert result.entry.id == "3"
    vetoed = choose("q", [_cand(0.99, id_="2")], 0.9, [no_two])
    assert not vetoed.hit
    assert vetoed.reason == "vetoed:two"


def test_check_text_rejects_bad_input() -> None:
    policy = CachePolicy(max_text_chars=10)
    assert check_text("hello", policy) == "hello"
    for bad in ("", "   \n", "x" * 11, None, 3, b"bytes"):
        with pytest.raises(InvalidInputError):
            check_text(bad, policy)


def test_expiry_and_threshold_override() -> None:
    policy = CachePolicy(ttl=60)
    assert expiry(100.0, policy, None) == 160.0
    assert expiry(100.0, policy, 5) == 105.0
    assert expiry(100.0, CachePolicy(), None) is None
    with pytest.raises(InvalidInputError):
        expiry(100.0, policy, -1)
    assert resolve_threshold(policy, None) == policy.min_similarity
    assert resolve_threshold(policy, 0.5) == 0.5
    with pytest.raises(ConfigurationError):
        resolve_threshold(policy, 2.0)


def test_text_with_a_lone_surrogate_is_invalid_input() -> None:
    """What json.loads gives for a split emoji cannot be keyed: refused before any I/O."""
    with pytest.raises(InvalidInputError, match="not valid Unicode"):
        check_text("half an emoji \ud83d", CachePolicy())
