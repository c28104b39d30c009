"""Replay labelled pairs through a real cache, store then look up (``semcache eval cache``).

Each pair gets its own scope: ``text_a`` is stored, ``text_b`` is looked up, so a hit can only be
the pair's partner and its label says whether serving it was right. Pairs are split 50/50 by a
hash of their position into a *tune* half (the static threshold, or the adaptive model, is learned
there) and a *measure* half (reported). Embeddings are computed in batches and passed to the
cache; the latency reported is that of the cache decision (exact tier, search, choose, count).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from semcache.backends import MemoryBackend
from semcache.cache import SemanticCache
from semcache.embedders.base import Embedder
from semcache.keys import Scope
from semcache.matching.adaptive import AdaptiveConfig, AdaptiveThresholds, kmeans_centroids
from semcache.matching.bounds import clopper_pearson, clopper_pearson_upper, lowest_safe_threshold
from semcache.measure.pairs import LabelledPair
from semcache.models import Candidate, Entry
from semcache.policy import CachePolicy, Guard, shadow_entry_id

if TYPE_CHECKING:
    from numpy.typing import NDArray

__all__ = [
    "ReplayResult",
    "embed_pairs",
    "make_cache",
    "replay",
    "tune_adaptive",
    "tune_split",
    "tune_static",
    "vetoed",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class ReplayResult:
    """What a replay measured."""

    policy: str
    lookups: int
    hits: int
    false_hits: int
    positives: int
    hit_rate: float
    recall: float
    false_hit_rate: float
    false_hit_ci: tuple[float, float]
    false_hit_upper: float
    latency_p50_ms: float
    latency_p95_ms: float

    def line(self) -> str:
        lo, hi = self.false_hit_ci
        return (
            f"{self.policy}: {self.lookups} lookups, hit rate {self.hit_rate:.4f} "
            f"(recall {self.recall:.4f}), false-hit rate {self.false_hit_rate:.4f} "
            f"[95% CI {lo:.4f}-{hi:.4f}; upper {self.false_hit_upper:.4f}], "
            f"decision p50 {self.latency_p50_ms:.3f} ms p95 {self.latency_p95_ms:.3f} ms"
        )


def tune_split(n: int, *, salt: str = "semcache") -> NDArray[np.bool_]:
    """A fixed 50/50 split of pair positions by hash: ``True`` = tune, ``False`` = measure."""
    return np.array(
        [hashlib.blake2b(f"{salt}:{i}".encode(), digest_size=1).digest()[0] & 1 == 0
         for i in range(n)]
    )  # fmt: skip


def embed_pairs(
    embedder: Embedder, pairs: Sequence[LabelledPair], *, batch: int = 256
) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """Unit vectors of every ``text_a`` and ``text_b``, in batches."""
    from tqdm import tqdm

    dim = embedder.fingerprint.dim
    a = np.empty((len(pairs), dim), dtype=np.float32)
    b = np.empty_like(a)
    for s in tqdm(range(0, len(pairs), batch), desc="embedding pairs", unit="batch"):
        chunk = pairs[s : s + batch]
        a[s : s + len(chunk)] = embedder.embed([p.text_a for p in chunk])
        b[s : s + len(chunk)] = embedder.embed([p.text_b for p in chunk])
    return a, b


def replay(
    cache: SemanticCache,
    pairs: Sequence[LabelledPair],
    vectors_a: NDArray[np.float32],
    vectors_b: NDArray[np.float32],
    *,
    name: str = "",
    feedback: bool = False,
) -> ReplayResult:
    """Store each ``text_a`` in its own scope, then look ``text_b`` up there.

    With ``feedback``, every served (or shadow would-be) hit is followed by
    ``cache.feedback(result, label)``, as a user's verdict would be (so an adaptive policy keeps
    learning while it is measured).
    """
    hits = false = 0
    latencies = np.empty(len(pairs))
    for i, pair in enumerate(pairs):
        scope = Scope(namespace=f"pair:{i}")
        cache.store(pair.text_a, i, scope, vector=vectors_a[i])
        start = time.perf_counter()
        result = cache.lookup(pair.text_b, scope, vector=vectors_b[i])
        latencies[i] = time.perf_counter() - start
        if result.hit:
            hits += 1
            false += not pair.label
        if feedback and (result.hit or shadow_entry_id(result) is not None):
            cache.feedback(result, pair.label)
    positives = sum(p.label for p in pairs)
    n = len(pairs)
    return ReplayResult(
        policy=name,
        lookups=n,
        hits=hits,
        false_hits=false,
        positives=positives,
        hit_rate=hits / n if n else 0.0,
        recall=(hits - false) / positives if positives else 0.0,
        false_hit_rate=false / hits if hits else 0.0,
        false_hit_ci=clopper_pearson(false, hits),
        false_hit_upper=clopper_pearson_upper(false, hits),
        latency_p50_ms=float(np.percentile(latencies, 50) * 1000) if n else 0.0,
        latency_p95_ms=float(np.percentile(latencies, 95) * 1000) if n else 0.0,
    )


def vetoed(guards: Sequence[Guard], pairs: Sequence[LabelledPair]) -> NDArray[np.bool_]:
    """Which pairs a guard would refuse (``text_b`` looked up against a stored ``text_a``)."""
    out = np.zeros(len(pairs), dtype=bool)
    for i, p in enumerate(pairs):
        cand = Candidate(
            Entry(
                id=str(i), scope_key="", text_key="", prompt=p.text_a, response=None, created_at=0
            ),
            1.0,
        )
        out[i] = any(g(p.text_b, cand) is not None for g in guards)
    return out


def tune_static(sims: NDArray[np.floating[Any]], labels: NDArray[np.bool_], delta: float) -> float:
    """The lowest threshold whose false-hit upper bound is ``<= delta`` on these pairs (else 1)."""
    t = lowest_safe_threshold(sims, labels, delta)
    return 1.0 if t is None else t


def tune_adaptive(
    query_vectors: NDArray[np.float32],
    sims: NDArray[np.floating[Any]],
    labels: NDArray[np.bool_],
    *,
    delta: float,
    regions: int,
    seed: int = 0,
) -> AdaptiveThresholds:
    """An :class:`AdaptiveThresholds` with ``regions`` k-means regions, fitted on these pairs."""
    k = max(1, min(regions, len(sims)))
    cents = kmeans_centroids(query_vectors, k, seed=seed) if k > 1 else None
    model = AdaptiveThresholds(AdaptiveConfig(delta=delta, initial_threshold=1.0), centroids=cents)
    return model.fit(query_vectors, sims, labels)


def make_cache(
    embedder: Embedder,
    threshold: float,
    *,
    guards: Sequence[Guard] = (),
    model: AdaptiveThresholds | None = None,
    shadow: bool = False,
) -> SemanticCache:
    """An in-memory cache for a replay; with ``model``, ``threshold`` is only the floor."""
    if model is not None:
        threshold = min(model.thresholds())
    return SemanticCache(
        embedder=embedder,
        backend=MemoryBackend(),
        policy=CachePolicy(min_similarity=min(threshold, 1.0), max_entries=None, candidates=1),
        guards=guards,
        thresholds=model,
        shadow=shadow,
    )
