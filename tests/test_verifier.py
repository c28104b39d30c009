"""The band verifier: the decision pipeline's order, a tiny trained cross-encoder, reload, cache."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from semcache import SentenceTransformerEmbedder
from semcache.backends import MemoryBackend
from semcache.cache import SemanticCache
from semcache.errors import ConfigurationError
from semcache.matching.guards import LexicalGuard
from semcache.matching.verifier import CrossEncoderVerifier, VerifierBand
from semcache.measure.pairs import LabelledPair
from semcache.measure.tuning import TuneConfig, tune_verifier
from semcache.models import Candidate, Entry
from semcache.policy import CachePolicy, choose

# Hand-written pairs: paraphrases (True) and hard negatives with the same words in another
# order or one role swapped (False), the PAWS pattern.
PAIRS = [
    LabelledPair(
        "How do I fly from Paris to London?", "How can I get a flight Paris to London?", True
    ),
    LabelledPair("How do I fly from Paris to London?", "How do I fly from London to Paris?", False),
    LabelledPair("Can a dog eat chocolate?", "Is chocolate safe for dogs to eat?", True),
    LabelledPair("Can a dog eat chocolate?", "Can chocolate eat a dog?", False),
    LabelledPair("Who does the employer pay?", "Whom does the employer pay?", True),
    LabelledPair("Who pays the employer?", "Who does the employer pay?", False),
    LabelledPair("How do I convert euros to dollars?", "How to change euros into dollars?", True),
    LabelledPair("How do I convert euros to dollars?", "How do I convert dollars to euros?", False),
    LabelledPair("Why did Rome conquer Greece?", "What made Rome conquer Greece?", True),
    LabelledPair("Why did Rome conquer Greece?", "Why did Greece conquer Rome?", False),
    LabelledPair("What is the capital of Spain?", "Which city is the capital of Spain?", True),
    LabelledPair("Is Spain north of France?", "Is France north of Spain?", False),
]
HARD_NEGATIVE = ("How do I fly from Paris to London?", "How do I fly from London to Paris?")
PARAPHRASE = ("Can a dog eat chocolate?", "Is chocolate safe for dogs to eat?")


def _cand(similarity: float, prompt: str = "stored", id_: str = "1") -> Candidate:
    entry = Entry(
        id=id_,
        scope_key="s",
        text_key="k",
        prompt=prompt,
        response="r",
        created_at=0.0,
        expires_at=None,
        metadata={},
    )
    return Candidate(entry=entry, similarity=similarity)


# -- the pipeline (pure steps, any callable verifier) -------------------------------------------


def test_pipeline_runs_the_verifier_last_and_only_past_the_cheap_steps() -> None:
    asked: list[str] = []

    def verifier(query: str, cand: Candidate) -> str | None:
        asked.append(cand.entry.id)
        return "verifier" if cand.entry.id == "a" else None

    def no_b(query: str, cand: Candidate) -> str | None:
        return "guard" if cand.entry.id == "b" else None

    cands = [_cand(0.99, id_="a"), _cand(0.97, id_="b"), _cand(0.95, id_="c"), _cand(0.5, id_="d")]
    result = choose("q", cands, 0.9, [no_b], None, verifier)
    assert result.entry is not None
    assert result.entry.id == "c"
    assert asked == ["a", "c"]  # b was vetoed by the guard first; d is below the floor


def test_pipeline_learned_threshold_comes_before_the_verifier() -> None:
    asked: list[str] = []

    def verifier(query: str, cand: Candidate) -> str | None:
        asked.append(cand.entry.id)
        return None

    result = choose("q", [_cand(0.93)], 0.9, (), lambda c: 0.95, verifier)
    assert result.entry is None
    assert result.reason == "below_learned_threshold"
    assert result.threshold == 0.95
    assert asked == []


def test_verifier_veto_is_the_miss_reason() -> None:
    result = choose("q", [_cand(0.95)], 0.9, (), None, lambda q, c: "verifier")
    assert result.entry is None
    assert result.reason == "vetoed:verifier"


def test_band_is_validated() -> None:
    with pytest.raises(ConfigurationError, match="low <= high"):
        VerifierBand(low=0.95, high=0.9)
    with pytest.raises(ConfigurationError, match="probability"):
        VerifierBand(min_score=1.5)
    with pytest.raises(ConfigurationError, match="blend"):
        VerifierBand(blend=1.0)


def test_blend_mixes_probability_and_similarity() -> None:
    assert VerifierBand().decision(0.3, 0.99) == 0.3
    assert VerifierBand(blend=0.5).decision(0.3, 0.9) == pytest.approx(0.6)


# -- a tiny trained verifier --------------------------------------------------------------------


@pytest.fixture(scope="module")
def verifier_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("verifier")
    config = TuneConfig(
        epochs=12,
        batch_size=6,
        learning_rate=1e-4,
        warmup=0.0,
        max_seq_length=32,
        threads=1,
        progress=False,
    )
    result = tune_verifier(PAIRS, out, config=config)
    assert result.steps == 24
    assert not result.stopped_by_budget
    return out


@pytest.mark.model
@pytest.mark.slow
def test_trained_verifier_vetoes_a_known_hard_negative(verifier_dir: Path) -> None:
    verifier = CrossEncoderVerifier.load(verifier_dir, band=VerifierBand(low=0.5, high=1.0))
    neg, pos = verifier.score([HARD_NEGATIVE, PARAPHRASE])
    assert neg < 0.5 < pos
    assert verifier(HARD_NEGATIVE[0], _cand(0.97, HARD_NEGATIVE[1])) == "verifier"
    assert verifier(PARAPHRASE[0], _cand(0.8, PARAPHRASE[1])) is None
    stats = verifier.stats()
    assert (stats.calls, stats.vetoed, stats.confirmed) == (2, 1, 1)
    assert stats.latency_p50_ms > 0


@pytest.mark.model
@pytest.mark.slow
def test_verifier_reloads_with_the_same_scores(verifier_dir: Path) -> None:
    pairs = [(p.text_a, p.text_b) for p in PAIRS]
    first = CrossEncoderVerifier.load(verifier_dir).score(pairs)
    second = CrossEncoderVerifier.load(verifier_dir).score(pairs)
    np.testing.assert_allclose(first, second, rtol=0, atol=1e-6)


@pytest.mark.model
@pytest.mark.slow
def test_band_decides_who_is_scored(verifier_dir: Path) -> None:
    verifier = CrossEncoderVerifier.load(verifier_dir, band=VerifierBand(low=0.85, high=0.95))
    assert verifier(HARD_NEGATIVE[0], _cand(0.99, HARD_NEGATIVE[1])) is None  # above: served
    assert verifier(PARAPHRASE[0], _cand(0.80, PARAPHRASE[1])) == "below_band"
    stats = verifier.stats()
    assert (stats.calls, stats.above_band, stats.below_band) == (0, 1, 1)


@pytest.mark.model
@pytest.mark.slow
def test_cache_with_verifier_refuses_the_hard_negative(
    verifier_dir: Path, st_embedder: SentenceTransformerEmbedder
) -> None:
    query, stored = HARD_NEGATIVE
    sim = float(st_embedder.embed([query])[0] @ st_embedder.embed([stored])[0])
    assert 0.8 < sim < 1.0
    band = VerifierBand(low=0.8, high=1.0)  # the pair falls inside the band
    verifier = CrossEncoderVerifier.load(verifier_dir, band=band)
    policy = CachePolicy(min_similarity=0.8)
    with SemanticCache(embedder=st_embedder, backend=MemoryBackend(), policy=policy) as plain:
        plain.store(stored, "answer")
        assert plain.lookup(query).hit  # the embedding alone serves it (sim ~ 0.98)
    with SemanticCache(
        embedder=st_embedder,
        backend=MemoryBackend(),
        policy=policy,
        guards=[LexicalGuard()],
        verifier=verifier,
    ) as cache:
        cache.store(stored, "answer")
        result = cache.lookup(query)
        assert not result.hit
        assert result.reason == "vetoed:verifier"
        cache.store(PARAPHRASE[1], "chocolate answer")
        assert verifier.stats().calls == 1
