"""Same words in another order: the pure check and the verifier step it routes."""

from __future__ import annotations

import numpy as np
import pytest

from semcache.errors import ConfigurationError
from semcache.matching.verifier import CrossEncoderVerifier, VerifierBand
from semcache.matching.word_order import reordered, word_overlap
from semcache.models import Candidate, Entry


def test_overlap_counts_words_with_multiplicity_over_the_longer_prompt() -> None:
    assert word_overlap("Flights from Paris to Rome", "flights from rome to paris") == 1.0
    assert word_overlap("a a b", "a b") == pytest.approx(2 / 3)
    assert word_overlap("", "") == 0.0
    assert word_overlap("x y", "z w") == 0.0


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ("flights from Paris to Rome", "flights from Rome to Paris", True),
        ("Who beat Federer in 2009?", "Federer beat who in 2009?", True),
        ("how do I reset my password", "how do I reset my password", False),
        ("how do I reset my password", "How do I reset my password?", False),  # case, punctuation
        ("how do I reset my password", "how do I reset my old password", False),  # one word more
        ("how do I reset my password", "how can I reset my password", False),  # a changed word
        ("how do I reset my password", "what is the capital of France", False),
        ("", "", False),
    ],
)
def test_reordered(a: str, b: str, expected: bool) -> None:
    assert reordered(a, b, 0.8) is expected
    assert reordered(b, a, 0.8) is expected


def test_overlap_below_the_bound_is_not_reordered() -> None:
    # same words shared (3 of 5) but in another order: under 0.8 of the words
    assert not reordered("a b c x y", "c b a z w", 0.8)
    assert reordered("a b c x y", "c b a z w", 0.6)


def test_band_rejects_a_bad_overlap() -> None:
    for bad in (0.0, -0.1, 1.5):
        with pytest.raises(ConfigurationError, match="reorder_overlap"):
            VerifierBand(reorder_overlap=bad)


class _Scorer:
    """A pair scorer that records what it read and answers 0 (not equivalent)."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []

    def probabilities(self, pairs: list[tuple[str, str]], batch_size: int = 64) -> np.ndarray:
        self.seen.extend(pairs)
        return np.zeros(len(pairs), dtype=np.float32)


def _candidate(prompt: str, similarity: float) -> Candidate:
    entry = Entry(id="e", scope_key="s", text_key="t", prompt=prompt, response="r", created_at=0.0)
    return Candidate(entry=entry, similarity=similarity)


def test_verifier_reads_reordered_candidates_above_its_band_only_when_asked() -> None:
    query, swapped = "flights from Paris to Rome", "flights from Rome to Paris"
    plain = CrossEncoderVerifier(_Scorer(), band=VerifierBand(low=0.9, high=0.95))
    assert plain(query, _candidate(swapped, 0.99)) is None  # above the band: served
    assert plain.stats().above_band == 1

    scorer = _Scorer()
    band = VerifierBand(low=0.9, high=0.95, reorder_overlap=0.8)
    verifier = CrossEncoderVerifier(scorer, band=band)
    assert verifier(query, _candidate(swapped, 0.99)) == "verifier"
    assert scorer.seen == [(query, swapped)]
    # the same words in the same order above the band are still served unread
    assert verifier(query, _candidate("Flights from Paris to Rome?", 0.99)) is None
    assert scorer.seen == [(query, swapped)]
    assert verifier(query, _candidate(swapped, 0.5)) == "below_band"
