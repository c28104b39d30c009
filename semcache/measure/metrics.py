"""Ranking metrics as pure functions, matching trec_eval / BEIR conventions.

``ranked`` is a list of document ids, best first; ``qrels`` maps document id to graded
relevance (> 0 is relevant). nDCG uses linear gain and a ``log2(rank + 1)`` discount, as
trec_eval's ``ndcg_cut`` (which BEIR reports).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from semcache.errors import InvalidInputError

__all__ = ["mrr_at_k", "ndcg_at_k", "paired_bootstrap", "percentile", "recall_at_k"]


def _check_k(k: int) -> None:
    if k < 1:
        raise InvalidInputError(f"k must be >= 1, got {k}")


def ndcg_at_k(ranked: Sequence[str], qrels: Mapping[str, int], k: int) -> float:
    """Normalised discounted cumulative gain of the top ``k``; 0 when nothing is relevant."""
    _check_k(k)
    gains = sorted((g for g in qrels.values() if g > 0), reverse=True)[:k]
    ideal = sum(g / math.log2(i + 2) for i, g in enumerate(gains))
    if ideal == 0:
        return 0.0
    dcg = sum(max(qrels.get(doc, 0), 0) / math.log2(i + 2) for i, doc in enumerate(ranked[:k]))
    return dcg / ideal


def recall_at_k(ranked: Sequence[str], qrels: Mapping[str, int], k: int) -> float:
    """Share of the relevant documents found in the top ``k``; 0 when nothing is relevant."""
    _check_k(k)
    relevant = {doc for doc, g in qrels.items() if g > 0}
    if not relevant:
        return 0.0
    return len(relevant.intersection(ranked[:k])) / len(relevant)


def mrr_at_k(ranked: Sequence[str], qrels: Mapping[str, int], k: int) -> float:
    """Reciprocal rank of the first relevant document in the top ``k`` (0 if none)."""
    _check_k(k)
    for i, doc in enumerate(ranked[:k]):
        if qrels.get(doc, 0) > 0:
            return 1.0 / (i + 1)
    return 0.0


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) by linear interpolation; NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100.0
    low = math.floor(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def paired_bootstrap(
    diff: Sequence[float], *, rounds: int = 10_000, seed: int = 0, level: float = 0.95
) -> tuple[float, float]:
    """Percentile interval (``level``, 95% by default) of the mean of per-query differences,
    resampling the queries with replacement; seeded, so a rerun gives the same interval."""
    import numpy as np

    if not diff:
        return (math.nan, math.nan)
    if not 0.0 < level < 1.0:
        raise InvalidInputError(f"level must be in (0, 1), got {level!r}")
    rng = np.random.default_rng(seed)
    d = np.asarray(diff, dtype=np.float64)
    means = np.empty(rounds)
    chunk = max(1, 2_000_000 // len(d))  # bounded memory: at most ~16 MB of indices at once
    for start in range(0, rounds, chunk):
        n = min(chunk, rounds - start)
        means[start : start + n] = d[rng.integers(0, len(d), size=(n, len(d)))].mean(axis=1)
    tail = (1.0 - level) / 2 * 100
    return float(np.percentile(means, tail)), float(np.percentile(means, 100 - tail))
