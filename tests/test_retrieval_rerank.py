"""The reranking stage: a pluggable pair scorer, its blend with the fused order, and the
cross-encoder scorer loaded offline from an adapter file (a missing or wrong file is a clear
error)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest

from semcache.embedders.shipped import EMBEDDER, VERIFIER
from semcache.errors import AdapterError, ConfigurationError, ModelLoadError, SemcacheError
from semcache.retrieval.documents import Chunk, ScoredChunk
from semcache.retrieval.rerank import (
    SHIPPED_FUSED_WEIGHT,
    CrossEncoderReranker,
    CrossEncoderScorer,
    PairScorer,
    ScorerReranker,
    blend,
    default_reranker,
)


def _hit(n: int, text: str, score: float) -> ScoredChunk:
    return ScoredChunk(Chunk(id=f"d{n}#0", doc_id=f"d{n}", index=0, text=text), score)


class WordOverlap:
    """Scores a text by how many of the query's words it contains."""

    def score(self, query: str, texts: Sequence[str]) -> list[float]:
        words = set(query.split())
        return [float(len(words & set(t.split()))) for t in texts]


def test_the_scorer_reorders_the_top_hits_and_the_rest_follow_in_fused_order() -> None:
    hits = [
        _hit(0, "nothing here", 0.9),
        _hit(1, "red apple pie", 0.8),
        _hit(2, "apple", 0.7),
        _hit(3, "red apple pie recipe", 0.6),
    ]
    assert isinstance(WordOverlap(), PairScorer)
    out = ScorerReranker(WordOverlap(), depth=3).rerank("red apple pie", hits)
    assert [h.chunk.id for h in out] == ["d1#0", "d2#0", "d0#0", "d3#0"]
    assert [h.score for h in out[:3]] == [3.0, 1.0, 0.0]
    assert out[3].score == 0.6  # past the depth: untouched
    assert ScorerReranker(WordOverlap()).rerank("q", []) == []


def test_a_scorer_returning_the_wrong_number_of_scores_is_an_error() -> None:
    class Short:
        def score(self, query: str, texts: Sequence[str]) -> list[float]:
            return [1.0]

    with pytest.raises(ConfigurationError, match="1 scores for 2 texts"):
        ScorerReranker(Short()).rerank("q", [_hit(0, "a", 1.0), _hit(1, "b", 0.5)])
    with pytest.raises(ConfigurationError):
        ScorerReranker(WordOverlap(), depth=0)


class Reversed:
    """Scores the texts in the reverse of the order given."""

    def score(self, query: str, texts: Sequence[str]) -> list[float]:
        return [float(i) for i in range(len(texts))]


def test_a_fused_weight_blends_the_scorer_order_with_the_fused_order() -> None:
    hits = [_hit(i, f"text {i}", 1.0 - i / 10) for i in range(4)]
    ids = lambda out: [h.chunk.doc_id for h in out]  # noqa: E731
    assert ids(ScorerReranker(Reversed()).rerank("q", hits)) == ["d3", "d2", "d1", "d0"]
    # Fused first in the blend's ties, fused order once it outweighs the scorer.
    assert ids(ScorerReranker(Reversed(), fused_weight=0.5).rerank("q", hits)) == [
        "d0", "d1", "d2", "d3"
    ]  # fmt: skip
    assert ids(ScorerReranker(Reversed(), fused_weight=0.9).rerank("q", hits)) == [
        "d0", "d1", "d2", "d3"
    ]  # fmt: skip
    out = ScorerReranker(Reversed(), fused_weight=0.3).rerank("q", hits)
    assert ids(out) == ["d3", "d2", "d1", "d0"]
    assert [h.score for h in out] == sorted((h.score for h in out), reverse=True)
    # The scorer's favourite moves up as far as the weight allows, no further.
    assert [i for i, _ in blend([0.0, 0.0, 0.0, 9.0], 0.6)] == [0, 1, 3, 2]
    assert [i for i, _ in blend([0.0, 0.0, 0.0, 9.0], 0.3)] == [0, 3, 1, 2]
    with pytest.raises(ConfigurationError, match="fused_weight"):
        ScorerReranker(Reversed(), fused_weight=1.0)


def test_a_missing_adapter_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(AdapterError, match="adapter file not found") as info:
        CrossEncoderScorer.load(tmp_path / "reranker.safetensors")
    assert isinstance(info.value, ModelLoadError)
    assert isinstance(info.value, SemcacheError)
    with pytest.raises(AdapterError, match="sha256"):
        CrossEncoderScorer.load(VERIFIER.path, sha256="0" * 64)


def test_an_embedder_adapter_is_not_a_reranker() -> None:
    for prefer_onnx in (False, True):
        with pytest.raises(AdapterError, match="no classification head"):
            CrossEncoderScorer.load(EMBEDDER.path, prefer_onnx=prefer_onnx)


@pytest.mark.model
def test_a_cross_encoder_adapter_loads_offline_and_reranks(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """Any cross-encoder adapter in the package's format is a scorer (the shipped verifier's
    here: it scores equivalence, not relevance); ONNX Runtime and torch give the same scores."""
    pytest.importorskip("onnxruntime")
    root = tmp_path_factory.mktemp("onnx-reranker")
    onnx = CrossEncoderScorer.load(VERIFIER.path, max_length=128, int8=False, cache_dir=root)
    torch_ = CrossEncoderScorer.load(VERIFIER.path, max_length=128, prefer_onnx=False)
    query = "how can I reset my password"
    texts = ["How do I reset my password?", "What is the capital of France?", "ok"]
    a, b = onnx.score(query, texts), torch_.score(query, texts)
    assert a == pytest.approx(b, abs=1e-3)
    assert all(0.0 <= x <= 1.0 for x in a)
    assert a[0] > a[1]
    assert onnx.score(query, []) == []
    hits = [_hit(i, t, 0.5) for i, t in enumerate(reversed(texts))]
    out = ScorerReranker(onnx).rerank(query, hits)
    assert out[0].chunk.text == texts[0]
    assert isinstance(onnx, PairScorer)


class FakeCrossEncoder:
    """``predict`` as sentence-transformers' CrossEncoder has it: one score per pair."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []

    def predict(self, pairs: list[tuple[str, str]]) -> list[float]:
        self.seen += pairs
        return [float(len(set(q.split()) & set(t.split()))) for q, t in pairs]


def test_a_sentence_transformers_cross_encoder_reranks_every_hit() -> None:
    model = FakeCrossEncoder()
    hits = [_hit(i, t, 1.0) for i, t in enumerate(["x", "red pie", "red apple pie"] * 10)]
    out = CrossEncoderReranker(model).rerank("red apple pie", hits)
    assert len(model.seen) == len(out) == 30  # no depth cut: every hit rescored
    assert [h.score for h in out[:10]] == [3.0] * 10
    assert [h.chunk.doc_id for h in out[:2]] == ["d2", "d5"]  # ties keep the fused order


@pytest.mark.model
def test_the_shipped_reranker_loads_offline_and_ranks_the_relevant_passage_first(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    pytest.importorskip("onnxruntime")
    reranker = default_reranker(cache_dir=tmp_path_factory.mktemp("onnx-shipped-reranker"))
    assert reranker.fused_weight == SHIPPED_FUSED_WEIGHT
    query = "does aspirin prevent heart attacks"
    texts = [
        "The Eiffel Tower was completed in 1889 for the World's Fair in Paris.",
        "Low-dose aspirin reduces the risk of myocardial infarction in adults at high risk.",
        "Bananas are a good source of potassium.",
    ]
    scores = reranker.scorer.score(query, texts)
    assert max(range(3), key=lambda i: scores[i]) == 1
    out = ScorerReranker(reranker.scorer).rerank(
        query, [_hit(i, t, 0.5) for i, t in enumerate(texts)]
    )
    assert out[0].chunk.doc_id == "d1"
