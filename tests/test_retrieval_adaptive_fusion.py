"""Agreement-gated fusion: hand-computed weights, and falling back to one retriever's ranking
when the other returns nothing or noise."""

from __future__ import annotations

import random

import pytest

from semcache.errors import ConfigurationError, InvalidInputError
from semcache.retrieval.adaptive import AgreementFusion, agreement
from semcache.retrieval.fusion import MinMax


def _ranking(ids: list[str], top: float = 1.0) -> list[tuple[str, float]]:
    return [(d, top - i * 0.01) for i, d in enumerate(ids)]


CORPUS = [f"doc{i}" for i in range(1000)]
DENSE = _ranking(CORPUS[:100])
SPARSE_GOOD = [(d, 20.0 - i * 0.1) for i, d in enumerate(CORPUS[5:105])]


def _noise(seed: int, exclude: set[str]) -> list[tuple[str, float]]:
    """A retriever returning random documents with random scores (none of ``exclude``)."""
    rng = random.Random(seed)
    ids = rng.sample([d for d in CORPUS if d not in exclude], 100)
    return sorted(((d, rng.uniform(0, 30)) for d in ids), key=lambda kv: -kv[1])


def _ids(ranking: list[tuple[str, float]]) -> list[str]:
    return [d for d, _ in ranking]


def test_agreement_is_the_shared_share_of_the_top_lists() -> None:
    assert agreement(DENSE, SPARSE_GOOD, 10) == pytest.approx(0.5)  # doc5..doc9 of doc0..doc9
    assert agreement(DENSE, DENSE, 10) == 1.0
    assert agreement([], DENSE, 10) == 0.0
    assert agreement(DENSE, [], 10) == 0.0


def test_weight_grows_with_agreement_up_to_the_maximum() -> None:
    f = AgreementFusion(depth=10, max_weight=0.4, saturation=1.0)
    assert f.weight(DENSE, SPARSE_GOOD) == pytest.approx(0.4 * 0.5)
    assert f.weight(DENSE, DENSE) == pytest.approx(0.4)
    assert AgreementFusion(max_weight=0.4, saturation=0.3).weight(DENSE, SPARSE_GOOD) == 0.4


def test_fused_scores_match_hand_computation() -> None:
    sparse = [("a", 9.0), ("x", 5.0), ("b", 1.0)]
    dense = [("a", 0.9), ("b", 0.8), ("c", 0.5)]
    f = AgreementFusion(depth=2, max_weight=0.5, saturation=1.0, rrf_k=None)
    # dense top-2 {a, b}, sparse top-2 {a, x}: agreement 1/2 -> w = 0.25.
    fused = dict(f.fuse([sparse, dense]))
    d = dict(zip(["a", "b", "c"], MinMax()([0.9, 0.8, 0.5]), strict=True))  # 1, 0.75, 0
    s = {"a": 1.0, "x": 0.5, "b": 0.0}
    assert fused["a"] == pytest.approx(0.75 * d["a"] + 0.25 * s["a"])
    assert fused["b"] == pytest.approx(0.75 * d["b"] + 0.25 * s["b"])
    assert fused["c"] == pytest.approx(0.75 * d["c"])
    assert fused["x"] == pytest.approx(0.25 * s["x"])
    assert _ids(f.fuse([sparse, dense])) == ["a", "b", "x", "c"]


def test_falls_back_to_the_dense_ranking_when_bm25_returns_nothing() -> None:
    assert _ids(AgreementFusion().fuse([[], DENSE])) == _ids(DENSE)


def test_falls_back_to_the_bm25_ranking_when_dense_returns_nothing() -> None:
    assert _ids(AgreementFusion().fuse([SPARSE_GOOD, []])) == _ids(SPARSE_GOOD)


@pytest.mark.parametrize("seed", range(5))
def test_falls_back_to_the_dense_ranking_when_bm25_returns_noise(seed: int) -> None:
    noise = _noise(seed, exclude=set(_ids(DENSE[:10])))
    fused = AgreementFusion().fuse([noise, DENSE])
    assert _ids(fused) == _ids(DENSE)


@pytest.mark.parametrize("seed", range(5))
def test_falls_back_to_the_bm25_ranking_when_dense_returns_noise_and_bm25_leads(
    seed: int,
) -> None:
    noise = _noise(seed, exclude=set(_ids(SPARSE_GOOD[:10])))
    fused = AgreementFusion(primary=0).fuse([SPARSE_GOOD, noise])
    assert _ids(fused) == _ids(SPARSE_GOOD)


def test_agreeing_retrievers_are_both_used() -> None:
    fused = _ids(AgreementFusion().fuse([SPARSE_GOOD, DENSE]))
    assert fused != _ids(DENSE)
    assert fused[0] == "doc5"  # top-ranked by BM25 and sixth by dense: both lists count
    assert set(fused) == set(_ids(DENSE)) | set(_ids(SPARSE_GOOD))


@pytest.mark.parametrize(
    "kwargs",
    [{"primary": 2}, {"depth": 0}, {"max_weight": 1.5}, {"saturation": 0.0}, {"max_weight": -1}],
)
def test_bad_settings_fail_at_construction(kwargs: dict[str, float]) -> None:
    with pytest.raises(ConfigurationError):
        AgreementFusion(**kwargs)  # type: ignore[arg-type]


def test_takes_exactly_two_rankings() -> None:
    with pytest.raises(InvalidInputError):
        AgreementFusion().fuse([DENSE])


def test_reciprocal_rank_scores_match_hand_computation() -> None:
    sparse = [("a", 9.0), ("x", 5.0)]
    dense = [("b", 0.9), ("a", 0.8)]
    # Defaults: k=20; dense top-10 {b, a} shares a with sparse -> agreement 0.5 >= 0.1 -> w=0.2.
    fused = dict(AgreementFusion().fuse([sparse, dense]))
    assert fused["a"] == pytest.approx(0.8 / 22 + 0.2 / 21)
    assert fused["b"] == pytest.approx(0.8 / 21)
    assert fused["x"] == pytest.approx(0.2 / 22)
    assert _ids(AgreementFusion().fuse([sparse, dense])) == ["a", "b", "x"]
