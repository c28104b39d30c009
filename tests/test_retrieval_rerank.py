"""The reranking stage: a pluggable pair scorer, and the MiniLM cross-encoder loaded offline from
a safetensors file (a missing file is a clear error)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from semcache.errors import ConfigurationError, ModelLoadError, SemcacheError
from semcache.retrieval.documents import Chunk, ScoredChunk
from semcache.retrieval.rerank import (
    CONFIG_FILE,
    WEIGHTS_FILE,
    MiniLMCrossEncoder,
    PairScorer,
    ScorerReranker,
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


def test_a_missing_model_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="reranker file missing") as info:
        MiniLMCrossEncoder.load(tmp_path)
    assert isinstance(info.value, SemcacheError)
    (tmp_path / CONFIG_FILE).write_text(json.dumps({"scale": 1.0}))
    with pytest.raises(ModelLoadError, match=WEIGHTS_FILE):
        MiniLMCrossEncoder.load(tmp_path)


def _write(directory: Path, *, lora: bool) -> Path:
    from safetensors.numpy import save_file

    rng = np.random.default_rng(0)
    tensors = {
        "head.weight": rng.normal(size=(1, 384)).astype(np.float32),
        "head.bias": np.zeros(1, dtype=np.float32),
    }
    if lora:  # rank 2 on one attention projection
        module = "encoder.layer.0.attention.self.query"
        tensors[f"lora.{module}.A"] = rng.normal(size=(2, 384)).astype(np.float32)
        tensors[f"lora.{module}.B"] = rng.normal(size=(384, 2)).astype(np.float32)
    directory.mkdir()
    save_file(tensors, str(directory / WEIGHTS_FILE))
    (directory / CONFIG_FILE).write_text(json.dumps({"scale": 0.5, "max_length": 64}))
    return directory


@pytest.mark.model
def test_the_cross_encoder_loads_offline_and_applies_its_adapter(tmp_path: Path) -> None:
    plain = MiniLMCrossEncoder.load(_write(tmp_path / "plain", lora=False))
    adapted = MiniLMCrossEncoder.load(_write(tmp_path / "adapted", lora=True))
    texts = ["Aspirin reduces the risk of heart attack.", "The Eiffel Tower is in Paris."]
    a = plain.score("does aspirin prevent heart attacks", texts)
    b = adapted.score("does aspirin prevent heart attacks", texts)
    assert len(a) == len(b) == 2
    assert all(np.isfinite(a))
    assert all(np.isfinite(b))
    assert a != pytest.approx(b)  # the LoRA update was merged into the base model
    assert plain.max_length == 64
    # Scores are per pair: scoring one text alone gives its score in the batch.
    assert plain.score("does aspirin prevent heart attacks", texts[:1])[0] == pytest.approx(
        a[0], abs=1e-4
    )
    hits = [_hit(0, texts[0], 0.1), _hit(1, texts[1], 0.2)]
    out = ScorerReranker(plain).rerank("does aspirin prevent heart attacks", hits)
    assert sorted(h.score for h in out) == pytest.approx(sorted(a), abs=1e-4)


@pytest.mark.model
def test_a_lora_that_does_not_fit_the_base_model_is_an_error(tmp_path: Path) -> None:
    from safetensors.numpy import save_file

    tmp_path.joinpath("bad").mkdir()
    save_file(
        {
            "head.weight": np.zeros((1, 384), np.float32),
            "head.bias": np.zeros(1, np.float32),
            "lora.no.such.layer.A": np.zeros((2, 384), np.float32),
            "lora.no.such.layer.B": np.zeros((384, 2), np.float32),
        },
        str(tmp_path / "bad" / WEIGHTS_FILE),
    )
    (tmp_path / "bad" / CONFIG_FILE).write_text("{}")
    with pytest.raises(ModelLoadError, match="no matching"):
        MiniLMCrossEncoder.load(tmp_path / "bad")
