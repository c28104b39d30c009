"""Fusion against hand-computed cases."""

from __future__ import annotations

import math

import pytest

from semcache.errors import ConfigurationError, InvalidInputError
from semcache.retrieval.fusion import RRF, MinMax, WeightedFusion, ZScore

SPARSE = [("a", 12.0), ("b", 8.0), ("c", 2.0)]
DENSE = [("c", 0.9), ("a", 0.8), ("d", 0.1)]


def test_rrf_matches_hand_computation() -> None:
    fused = dict(RRF(k=60).fuse([SPARSE, DENSE]))
    assert fused["a"] == pytest.approx(1 / 61 + 1 / 62)
    assert fused["c"] == pytest.approx(1 / 63 + 1 / 61)
    assert fused["b"] == pytest.approx(1 / 62)
    assert fused["d"] == pytest.approx(1 / 63)
    assert [doc for doc, _ in RRF(k=60).fuse([SPARSE, DENSE])] == ["a", "c", "b", "d"]


def test_rrf_k_zero_and_weights() -> None:
    fused = RRF(k=0, weights=(1.0, 3.0)).fuse([SPARSE, DENSE])
    # a: 1/1 + 3/2 = 2.5; c: 1/3 + 3/1 = 3.333; b: 1/2; d: 3/3 = 1
    assert fused == [
        ("c", pytest.approx(1 / 3 + 3.0)),
        ("a", pytest.approx(2.5)),
        ("d", pytest.approx(1.0)),
        ("b", pytest.approx(0.5)),
    ]


def test_rrf_ties_keep_first_seen_order() -> None:
    assert [d for d, _ in RRF().fuse([[("x", 1.0)], [("y", 1.0)]])] == ["x", "y"]


def test_weighted_minmax_matches_hand_computation() -> None:
    fused = dict(WeightedFusion(weights=(0.3, 0.7), normalization=MinMax()).fuse([SPARSE, DENSE]))
    # sparse min-max: a=1, b=0.6, c=0; dense min-max: c=1, a=0.875, d=0; missing -> 0.
    assert fused["a"] == pytest.approx(0.3 * 1.0 + 0.7 * 0.875)
    assert fused["b"] == pytest.approx(0.3 * 0.6)
    assert fused["c"] == pytest.approx(0.7 * 1.0)
    assert fused["d"] == pytest.approx(0.0)


def test_weighted_zscore_missing_gets_the_floor() -> None:
    z = ZScore()([1.0, 2.0, 3.0])
    assert z == pytest.approx([-math.sqrt(1.5), 0.0, math.sqrt(1.5)])
    fused = dict(
        WeightedFusion(weights=(1.0, 1.0), normalization=ZScore()).fuse(
            [[("a", 1.0), ("b", 2.0), ("c", 3.0)], [("a", 5.0), ("b", 5.0)]]
        )
    )
    # second ranking: equal scores -> z = 0 for both; "c" missing there gets its floor (0).
    assert fused["c"] == pytest.approx(math.sqrt(1.5))
    assert fused["a"] == pytest.approx(-math.sqrt(1.5))


def test_normalisations_of_degenerate_inputs() -> None:
    assert MinMax()([]) == []
    assert MinMax()([2.0, 2.0]) == [1.0, 1.0]
    assert ZScore()([4.0]) == [0.0]


@pytest.mark.parametrize(
    "build",
    [
        lambda: RRF(k=-1),
        lambda: RRF(k=math.inf),
        lambda: RRF(weights=(0.0, 0.0)),
        lambda: WeightedFusion(weights=(-1.0, 1.0)),
        lambda: WeightedFusion(weights=()),
    ],
)
def test_invalid_configuration_is_refused(build: object) -> None:
    with pytest.raises(ConfigurationError):
        build()  # type: ignore[operator]


def test_weight_count_must_match_rankings() -> None:
    with pytest.raises(InvalidInputError, match="2 weights given for 3 rankings"):
        RRF(weights=(1.0, 1.0)).fuse([SPARSE, DENSE, DENSE])
