"""Calibration math against hand-computed cases and scipy; reports, pair files, the CLI."""

from __future__ import annotations

import gzip
import json
import math
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from semcache import CachePolicy, ConfigurationError, InvalidInputError
from semcache.matching.bounds import (
    betainc,
    binomial_cdf,
    clopper_pearson,
    clopper_pearson_upper,
    lowest_safe_threshold,
    max_false_allowed,
)
from semcache.matching.verifier import VerifierBand
from semcache.measure.calibration import (
    CalibrationReport,
    band_from_calibration,
    calibrate,
    policy_from_calibration,
    sweep,
)
from semcache.measure.pairs import read_pairs
from semcache.testing import HashingEmbedder

CASES = [(0, 1), (0, 10), (1, 10), (3, 10), (9, 10), (0, 300), (5, 1000), (40, 20000), (499, 500)]


@pytest.mark.parametrize(("k", "n"), CASES)
def test_clopper_pearson_upper_matches_scipy_beta(k: int, n: int) -> None:
    for confidence in (0.9, 0.95, 0.99):
        expected = stats.beta.ppf(confidence, k + 1, n - k)
        assert clopper_pearson_upper(k, n, confidence) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize(("k", "n"), CASES)
def test_two_sided_interval_matches_scipy_beta(k: int, n: int) -> None:
    low, high = clopper_pearson(k, n, 0.95)
    assert low == (0.0 if k == 0 else pytest.approx(stats.beta.ppf(0.025, k, n - k + 1), abs=1e-12))
    assert high == pytest.approx(stats.beta.ppf(0.975, k + 1, n - k), abs=1e-12)


def test_hand_computed_bounds() -> None:
    # k = 0: P(X = 0) = (1 - p)^n = alpha  =>  p = 1 - alpha^(1/n)  (the "rule of three" case)
    assert clopper_pearson_upper(0, 10) == pytest.approx(1 - 0.05**0.1, abs=1e-13)
    assert clopper_pearson_upper(0, 300) == pytest.approx(1 - 0.05 ** (1 / 300), abs=1e-13)
    # k = n - 1 of n: P(X <= n-1) = 1 - p^n = alpha  =>  p = (1 - alpha)^(1/n)
    assert clopper_pearson_upper(4, 5) == pytest.approx(0.95**0.2, abs=1e-13)
    assert clopper_pearson_upper(5, 5) == 1.0
    assert clopper_pearson_upper(0, 0) == 1.0  # no evidence, no bound


def test_binomial_cdf_and_betainc_match_scipy() -> None:
    for k, n, p in [(0, 5, 0.2), (3, 10, 0.3), (17, 40, 0.5), (2, 1000, 0.01), (900, 1000, 0.9)]:
        assert binomial_cdf(k, n, p) == pytest.approx(stats.binom.cdf(k, n, p), rel=1e-10)
    for a, b, x in [(0.5, 0.5, 0.3), (2, 3, 0.9), (100, 2000, 0.05), (7, 1, 1.0), (3, 4, 0.0)]:
        assert betainc(a, b, x) == pytest.approx(stats.beta.cdf(x, a, b), rel=1e-10, abs=1e-15)
    # P(X <= 1) for Binomial(3, 0.5) by hand: (1 + 3) / 8
    assert binomial_cdf(1, 3, 0.5) == pytest.approx(0.5)


def test_max_false_allowed_is_the_largest_k_whose_bound_meets_delta() -> None:
    for n in (10, 298, 299, 1000, 5000):
        k = max_false_allowed(n, 0.01)
        if k >= 0:
            assert clopper_pearson_upper(k, n) <= 0.01
        assert clopper_pearson_upper(k + 1, n) > 0.01
    assert max_false_allowed(298, 0.01) == -1  # 298 clean hits are not yet enough for 1%
    assert max_false_allowed(299, 0.01) == 0


def test_sweep_counts_by_hand() -> None:
    sims = [0.99, 0.95, 0.93, 0.91, 0.80, 0.70]
    labels = [True, True, False, True, True, False]
    p90, p92, p96 = sweep(sims, labels, [0.9, 0.92, 0.96])
    assert (p90.hits, p90.false_hits, p90.positives) == (4, 1, 4)
    assert p90.precision == pytest.approx(0.75)
    assert p90.recall == pytest.approx(0.75)
    assert p90.false_hit_upper == pytest.approx(stats.beta.ppf(0.95, 2, 3))
    assert (p92.hits, p92.false_hits) == (3, 1)
    assert (p96.hits, p96.false_hits, p96.precision, p96.recall) == (1, 0, 1.0, 0.25)


def test_lowest_safe_threshold() -> None:
    rng = np.random.default_rng(1)
    sims = np.concatenate([rng.uniform(0.9, 1.0, 400), [0.89], rng.uniform(0.5, 0.88, 300)])
    ok = np.concatenate([np.ones(400, bool), [False], rng.random(300) < 0.5])
    t = lowest_safe_threshold(sims, ok, 0.01)
    # 400 clean hits above 0.9 certify 1%; adding the false hit at 0.89 is still fine (k=1 needs
    # n >= 473?) only if the bound allows it, so check the definition directly.
    assert t is not None
    served = sims >= t
    assert clopper_pearson_upper(int((~ok[served]).sum()), int(served.sum())) <= 0.01
    lower = sims[sims < t].max()
    served_lower = sims >= lower
    assert clopper_pearson_upper(int((~ok[served_lower]).sum()), int(served_lower.sum())) > 0.01
    assert lowest_safe_threshold([0.99] * 10, [True] * 10, 0.01) is None  # too few to certify


def test_calibrate_recommends_lowest_safe_grid_threshold_and_round_trips(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    pos = rng.uniform(0.85, 1.0, 3000)
    neg = rng.uniform(0.3, 0.9, 3000)
    sims = np.concatenate([pos, neg])
    labels = np.concatenate([np.ones(3000, bool), np.zeros(3000, bool)])
    report = calibrate(sims, labels, delta=0.01, source="synthetic", model={"model": "m", "dim": 8})
    assert report.recommended is not None
    rec = report.point(report.recommended)
    assert rec.false_hit_upper <= 0.01
    assert all(p.false_hit_upper > 0.01 for p in report.points if p.threshold < rec.threshold)
    assert 0.895 <= report.recommended <= 0.92  # negatives stop at 0.9
    path = tmp_path / "report.json"
    report.write(path)
    again = CalibrationReport.read(path)
    assert again == report
    policy = policy_from_calibration(path, ttl=60.0)
    assert policy == CachePolicy(min_similarity=report.recommended, ttl=60.0)


def test_policy_from_calibration_refuses_no_recommendation_and_other_models(tmp_path: Path) -> None:
    path = tmp_path / "r.json"
    calibrate([0.99, 0.98], [False, True], delta=0.01).write(path)
    with pytest.raises(ConfigurationError, match="no threshold met"):
        policy_from_calibration(path)
    sims = np.linspace(0.95, 1.0, 1000)
    calibrate(sims, np.ones(1000, bool), model={"model": "other", "dim": 64}).write(path)
    with pytest.raises(ConfigurationError, match="built with 'other"):
        policy_from_calibration(path, embedder=HashingEmbedder())
    with pytest.raises(InvalidInputError):
        CalibrationReport.read(tmp_path / "missing.json")


def test_band_from_calibration_takes_a_verifier_report_only(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    probs = np.concatenate([rng.uniform(0.7, 1.0, 3000), rng.uniform(0.0, 0.6, 3000)])
    labels = np.concatenate([np.ones(3000, bool), np.zeros(3000, bool)])
    verifier = {"model": "models/verifier", "kind": "cross-encoder"}
    report = calibrate(probs, labels, delta=0.01, thresholds=[0.5, 0.6, 0.8], model=verifier)
    path = tmp_path / "after.calibration.json"
    report.write(path)
    assert report.recommended == 0.6  # negatives stop below 0.6
    assert band_from_calibration(path, high=1.0) == VerifierBand(min_score=0.6, high=1.0)
    with pytest.raises(ConfigurationError, match="blend must be 0"):
        band_from_calibration(path, blend=0.5)
    # a verifier's probabilities are not cosine similarities, and the other way round
    with pytest.raises(ConfigurationError, match="use band_from_calibration"):
        policy_from_calibration(path)
    cosine = tmp_path / "cosine.json"
    calibrate(probs, labels, model={"model": "m", "dim": 8}).write(cosine)
    with pytest.raises(ConfigurationError, match="use policy_from_calibration"):
        band_from_calibration(cosine)
    calibrate([0.99, 0.98], [False, True], model=verifier).write(path)
    with pytest.raises(ConfigurationError, match="no threshold met"):
        band_from_calibration(path)


def test_read_pairs_jsonl_gz_and_paws_tsv(tmp_path: Path, test_data: Path) -> None:
    jsonl = tmp_path / "pairs.jsonl.gz"
    with gzip.open(jsonl, "wt", encoding="utf-8") as f:
        f.write(json.dumps({"text_a": "a b", "text_b": "a c", "label": 1}) + "\n\n")
        f.write(json.dumps({"text_a": "x", "text_b": "y", "label": 0}) + "\n")
    pairs = read_pairs(jsonl)
    assert [(p.text_a, p.text_b, p.label) for p in pairs] == [
        ("a b", "a c", True),
        ("x", "y", False),
    ]
    paws = read_pairs(test_data / "paws-wiki" / "dev.tsv", limit=50)
    assert len(paws) == 50
    assert all(not p.text_b.endswith("\r") for p in paws)  # CRLF handled
    assert 0 < sum(p.label for p in paws) < 50
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text_a": "x"}\n')
    with pytest.raises(InvalidInputError, match=r"bad\.jsonl:1"):
        read_pairs(bad)


def test_calibrate_cli_writes_report_and_plot(tmp_path: Path) -> None:
    from semcache.cli import main
    from semcache.cli.calibrate import run_calibration

    rows = [
        {"text_a": f"how do i cook rice number {i}", "text_b": f"how to cook rice number {i}",
         "label": 1}
        for i in range(30)
    ] + [
        {"text_a": f"what is the capital of country {i}", "text_b": f"who wrote book {i}",
         "label": 0}
        for i in range(30)
    ]  # fmt: skip
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    out = tmp_path / "out"
    report = run_calibration(pairs, embedder=HashingEmbedder(), delta=0.2, out=out, plot=True)
    assert (out / "pairs.calibration.json").is_file()
    assert (out / "pairs.calibration.png").stat().st_size > 1000
    assert report.pairs == 60
    assert report.positives == 30
    assert report.recommended is not None
    assert math.isclose(report.delta, 0.2)
    assert callable(main)


def test_eval_cache_replay_counts_hits_and_false_hits_through_a_real_cache() -> None:
    from semcache.measure.pairs import LabelledPair
    from semcache.measure.replay import embed_pairs, make_cache, replay, tune_split

    pairs = [
        LabelledPair("how do i cook white rice", "how do i cook white rice fast", True),
        LabelledPair("best laptop for students", "best laptop for students today", False),
        LabelledPair("capital of norway", "population of peru", False),
        LabelledPair("learn python quickly", "learn python quickly", True),
    ]
    embedder = HashingEmbedder()
    a, b = embed_pairs(embedder, pairs)
    with make_cache(embedder, 0.7) as cache:
        result = replay(cache, pairs, a, b, name="static 0.7")
        info = cache.info()
    assert (result.lookups, result.hits, result.false_hits, result.positives) == (4, 3, 1, 2)
    assert result.hit_rate == pytest.approx(0.75)
    assert result.recall == pytest.approx(1.0)
    assert result.false_hit_rate == pytest.approx(1 / 3)
    assert result.false_hit_ci == clopper_pearson(1, 3)
    assert (info.hits_exact, info.hits_semantic, info.misses) == (1, 2, 1)
    split = tune_split(1000)
    assert 400 < split.sum() < 600
    assert (tune_split(1000) == split).all()
