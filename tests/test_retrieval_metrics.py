"""Ranking metrics against hand-computed cases (trec_eval conventions: linear gain)."""

from __future__ import annotations

import math

import pytest

from semcache.errors import InvalidInputError
from semcache.measure.metrics import mrr_at_k, ndcg_at_k, paired_bootstrap, percentile, recall_at_k
from semcache.measure.retrieval import to_documents


def test_ndcg_binary_relevance() -> None:
    qrels = {"d1": 1, "d3": 1}
    ranked = ["d2", "d1", "d3"]
    dcg = 1 / math.log2(3) + 1 / math.log2(4)
    ideal = 1 / math.log2(2) + 1 / math.log2(3)
    assert ndcg_at_k(ranked, qrels, 10) == pytest.approx(dcg / ideal)
    assert ndcg_at_k(["d1", "d3"], qrels, 10) == pytest.approx(1.0)


def test_ndcg_graded_relevance_and_cutoff() -> None:
    qrels = {"a": 3, "b": 2, "c": 1, "z": 0}
    ranked = ["c", "z", "a", "b"]
    # cutoff 2: dcg = 1/log2(2) + 0; ideal = 3/log2(2) + 2/log2(3)
    assert ndcg_at_k(ranked, qrels, 2) == pytest.approx(1.0 / (3.0 + 2.0 / math.log2(3)))
    dcg4 = 1.0 + 0.0 + 3 / math.log2(4) + 2 / math.log2(5)
    ideal4 = 3.0 + 2 / math.log2(3) + 1 / math.log2(4)
    assert ndcg_at_k(ranked, qrels, 4) == pytest.approx(dcg4 / ideal4)


def test_ndcg_without_relevant_documents_is_zero() -> None:
    assert ndcg_at_k(["a"], {"a": 0}, 10) == 0.0


def test_recall_and_mrr() -> None:
    qrels = {"a": 1, "b": 2, "c": 1, "n": 0}
    ranked = ["x", "b", "y", "a"]
    assert recall_at_k(ranked, qrels, 100) == pytest.approx(2 / 3)
    assert recall_at_k(ranked, qrels, 2) == pytest.approx(1 / 3)
    assert mrr_at_k(ranked, qrels, 10) == pytest.approx(0.5)
    assert mrr_at_k(ranked, qrels, 1) == 0.0
    assert mrr_at_k(["n"], qrels, 10) == 0.0


def test_k_must_be_positive() -> None:
    with pytest.raises(InvalidInputError):
        ndcg_at_k(["a"], {"a": 1}, 0)


def test_percentile_interpolates() -> None:
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == pytest.approx(2.5)
    assert percentile([5.0], 95) == 5.0
    assert math.isnan(percentile([], 50))


def test_chunks_map_to_documents_at_their_best_rank() -> None:
    ranking = [("d1#1", 0.9), ("d2#0", 0.8), ("d1#0", 0.7), ("d3#0", 0.6)]
    assert to_documents(ranking, lambda c: c.rsplit("#", 1)[0], 10) == ["d1", "d2", "d3"]
    assert to_documents(ranking, lambda c: c.rsplit("#", 1)[0], 2) == ["d1", "d2"]


def test_paired_bootstrap_interval_is_seeded_and_brackets_the_mean() -> None:
    diff = [0.1, -0.05, 0.2, 0.0, 0.15, 0.05, -0.1, 0.3]
    low, high = paired_bootstrap(diff, rounds=2000, seed=1)
    assert low < sum(diff) / len(diff) < high
    assert paired_bootstrap(diff, rounds=2000, seed=1) == (low, high)
    assert paired_bootstrap([0.02] * 10, rounds=500) == pytest.approx((0.02, 0.02))
    wide = paired_bootstrap(diff, rounds=2000, seed=1, level=0.99)
    assert wide[0] <= low
    assert wide[1] >= high
    assert all(math.isnan(x) for x in paired_bootstrap([]))
