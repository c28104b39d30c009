"""AdaptiveThresholds honours its false-hit bound on synthetic streams with known truth."""

from __future__ import annotations

import numpy as np
import pytest

from semcache import (
    CachePolicy,
    ConfigurationError,
    Entry,
    MemoryBackend,
    SemanticCache,
)
from semcache.matching.adaptive import AdaptiveConfig, AdaptiveThresholds, kmeans_centroids
from semcache.matching.binned import BIN_WIDTH
from semcache.matching.bounds import clopper_pearson, clopper_pearson_upper, lowest_safe_threshold
from semcache.models import Candidate
from semcache.policy import shadow_entry_id
from semcache.testing import HashingEmbedder

DIM = 8
# Two regions of the embedding space with different true boundaries: in region 0 a pair is
# equivalent above about 0.80, in region 1 only above about 0.95.
BOUNDARY = (0.80, 0.95)
CENTROIDS = np.eye(DIM, dtype=np.float32)[:2]


def _stream(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Query vectors, similarities and the truth (a steep logistic around each boundary)."""
    region = rng.integers(0, 2, n)
    vectors = np.zeros((n, DIM), dtype=np.float32)
    vectors[np.arange(n), region] = 1.0
    sims = rng.uniform(0.6, 1.0, n)
    p_ok = 1.0 / (1.0 + np.exp(-(sims - np.take(BOUNDARY, region)) / 0.01))
    return vectors, sims, rng.random(n) < p_ok


def _candidate(entry_id: str, similarity: float) -> Candidate:
    entry = Entry(
        id=entry_id, scope_key="s", text_key=entry_id, prompt="p", response=1, created_at=0
    )
    return Candidate(entry, similarity)


def test_fitted_per_region_thresholds_meet_the_bound_and_beat_one_global_threshold() -> None:
    rng = np.random.default_rng(7)
    delta = 0.02
    vectors, sims, ok = _stream(rng, 12_000)
    adaptive = AdaptiveThresholds(AdaptiveConfig(delta=delta), centroids=CENTROIDS)
    adaptive.fit(vectors, sims, ok)
    t0, t1 = adaptive.thresholds()
    assert t0 < t1
    assert BOUNDARY[0] < t0 < BOUNDARY[1] < t1 < 1.0
    static = lowest_safe_threshold(sims, ok, delta)
    assert static is not None

    # measured on a fresh stream from the same distribution
    vectors, sims, ok = _stream(rng, 40_000)
    regions = np.argmax(vectors @ CENTROIDS.T, axis=1)
    served = sims >= np.array([t0, t1])[regions]
    false = int((served & ~ok).sum())
    _, upper = clopper_pearson(false, int(served.sum()))
    assert upper <= delta
    served_static = sims >= static
    assert false / served.sum() <= delta
    assert served.sum() > 1.2 * served_static.sum()  # the region that allows it is served lower


def test_no_region_goes_below_the_pooled_threshold_without_its_own_evidence() -> None:
    rng = np.random.default_rng(11)
    delta = 0.05
    vectors, sims, ok = _stream(rng, 8_000)
    # a third region with a handful of observations, all correct, at low similarity
    sparse = np.zeros((12, DIM), dtype=np.float32)
    sparse[:, 2] = 1.0
    vectors = np.vstack([vectors, sparse])
    sims = np.concatenate([sims, np.full(12, 0.7)])
    ok = np.concatenate([ok, np.ones(12, dtype=bool)])
    centroids = np.eye(DIM, dtype=np.float32)[:3]
    adaptive = AdaptiveThresholds(AdaptiveConfig(delta=delta), centroids=centroids)
    adaptive.fit(vectors, sims, ok)
    pooled = adaptive.global_threshold()
    # the calibrated static threshold, to the bin width (the counts are binned)
    static = lowest_safe_threshold(sims, ok, delta)
    assert pooled is not None
    assert static is not None
    assert pooled == pytest.approx(static, abs=BIN_WIDTH)
    t0, t1, t2 = adaptive.thresholds()
    region = np.argmax(vectors @ centroids.T, axis=1)
    own0 = lowest_safe_threshold(sims[region == 0], ok[region == 0], delta)
    assert own0 is not None
    assert t0 == pytest.approx(own0, abs=BIN_WIDTH)
    assert t0 < pooled
    assert t1 >= pooled
    assert t2 >= pooled  # 12 clean observations certify nothing at 5%
    served = sims >= np.array([t0, t1, t2])[region]
    upper = clopper_pearson_upper(int((served & ~ok).sum()), int(served.sum()))
    assert upper <= delta  # the (one-sided) bound holds over everything served together


def test_online_feedback_with_a_verifier_lowers_thresholds_within_the_bound() -> None:
    rng = np.random.default_rng(3)
    delta = 0.05
    truth: dict[str, bool] = {}

    def verifier(query: str, candidate: Candidate) -> bool:
        return truth[candidate.entry.id]

    config = AdaptiveConfig(delta=delta, initial_threshold=0.99, verify_margin=0.03)
    adaptive = AdaptiveThresholds(config, centroids=CENTROIDS, verifier=verifier)
    vectors, sims, ok = _stream(rng, 6_000)
    served = wrong = 0
    for i in range(len(sims)):
        key = str(i)
        truth[key] = bool(ok[i])
        threshold = adaptive.for_query("q", vectors[i])(_candidate(key, float(sims[i])))
        if sims[i] >= threshold:
            served += 1
            wrong += not ok[i]
            adaptive.served(key, vectors[i], float(sims[i]))
            assert adaptive.feedback(key, bool(ok[i]))  # e.g. a thumbs-down when wrong
    t0, t1 = adaptive.thresholds()
    assert t0 < 0.9 < t1  # region 0 came down from 0.99, region 1 did not go below its truth
    assert adaptive.verified > 0
    assert served > 1000
    assert wrong / served <= delta


def test_negative_feedback_blocks_that_entry_at_that_similarity() -> None:
    adaptive = AdaptiveThresholds(AdaptiveConfig(initial_threshold=0.9))
    vec = np.ones(DIM, dtype=np.float32) / np.sqrt(DIM)
    assert adaptive.for_query("q", vec)(_candidate("e1", 0.93)) == pytest.approx(0.9)
    adaptive.served("e1", vec, 0.93)
    assert adaptive.feedback("e1", correct=False)
    assert adaptive.for_query("q", vec)(_candidate("e1", 0.93)) > 0.93
    assert adaptive.for_query("q", vec)(_candidate("e2", 0.93)) > 0.93  # and the region learned
    assert not adaptive.feedback("never-served", correct=False)


def test_config_is_validated() -> None:
    with pytest.raises(ConfigurationError, match=r"delta is a false-hit rate in \(0, 1\), got 0"):
        AdaptiveConfig(delta=0)
    with pytest.raises(ConfigurationError, match="centroids"):
        AdaptiveThresholds(centroids=np.ones(3, dtype=np.float32))
    with pytest.raises(ConfigurationError, match="k must be in"):
        kmeans_centroids(np.ones((3, 4), dtype=np.float32), 5)


def test_kmeans_separates_clusters() -> None:
    rng = np.random.default_rng(0)
    noise = 0.1 * rng.normal(size=(100, DIM))
    data = (np.repeat(CENTROIDS, 50, axis=0) + noise).astype(np.float32)
    data /= np.linalg.norm(data, axis=1, keepdims=True)
    cents = kmeans_centroids(data, 2)
    assignment = np.argmax(data @ cents.T, axis=1)
    assert len(set(assignment[:50])) == 1
    assert len(set(assignment[50:])) == 1
    assert assignment[0] != assignment[50]


def test_cache_feedback_teaches_the_adaptive_policy() -> None:
    adaptive = AdaptiveThresholds(AdaptiveConfig(initial_threshold=0.5))
    policy = CachePolicy(min_similarity=0.3, exact_tier=False)
    with SemanticCache(
        embedder=HashingEmbedder(), backend=MemoryBackend(), policy=policy, thresholds=adaptive
    ) as cache:
        cache.store("what is the price of a train ticket to rome", "about 40 euros")
        first = cache.lookup("what is the price of a plane ticket to rome")
        assert first.hit
        assert cache.feedback(first, correct=False)  # a thumbs-down
        again = cache.lookup("what is the price of a plane ticket to rome")
        assert not again.hit
        assert again.reason == "below_learned_threshold"
        assert again.threshold > float(first.similarity or 0)
        info = cache.info()
        assert (info.feedback, info.false_hits, info.hits_semantic, info.misses) == (1, 1, 1, 1)


def test_shadow_mode_counts_would_be_hits_and_returns_misses() -> None:
    adaptive = AdaptiveThresholds(AdaptiveConfig(initial_threshold=0.5))
    policy = CachePolicy(min_similarity=0.3)
    with SemanticCache(
        embedder=HashingEmbedder(),
        backend=MemoryBackend(),
        policy=policy,
        thresholds=adaptive,
        shadow=True,
    ) as cache:
        entry = cache.store("how do i reset my password", "click forgot password")
        exact = cache.lookup("how do i reset my password")
        near = cache.lookup("how can i reset my password")
        far = cache.lookup("weather in oslo tomorrow")
        assert [exact.hit, near.hit, far.hit] == [False, False, False]
        assert shadow_entry_id(exact) == entry.id
        assert shadow_entry_id(near) == entry.id
        assert shadow_entry_id(far) is None
        cache.feedback(near, correct=False)  # the fresh LLM answer disagreed
        info = cache.info()
        assert (info.shadow_hits, info.misses, info.hits) == (2, 3, 0)
        assert info.hit_rate == 0.0
        assert info.projected_hit_rate == pytest.approx(2 / 3)
        assert (info.shadow_false_hits, info.false_hits) == (1, 0)
