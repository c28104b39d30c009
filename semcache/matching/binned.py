"""Learned thresholds solved from counts per similarity bin, in O(regions x bins).

Observations are kept as counts per ``(region, bin)``: how many were served in the bin and how
many of those were false hits. Bins are ``BIN_WIDTH = 0.001`` wide over the whole cosine range
``[-1, 1]`` (``BINS = 2000``; 1.0 falls in the top bin), so an update is an increment and a solve
reads cumulative counts instead of sorting every observation.

A solved threshold is a bin's lower edge: serving everything at or above it serves exactly the
observations of that bin and above, which is one of the cuts the exact per-observation solver
(:func:`semcache.matching.bounds.lowest_safe_threshold`) considers; only cuts *inside* a bin are
lost. So the binned threshold is at most one bin width below the exact one when the exact cut is
available at its bin's edge, and otherwise the next bin edge that the bound allows. A threshold
kept above every false hit seen is the upper edge of that false hit's bin.

The three steps of :mod:`semcache.matching.adaptive` (pooled threshold, regions lowered by their
own evidence, a shared threshold for the rest) are :func:`solve`.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

from semcache.matching.bounds import AllowanceTable

if TYPE_CHECKING:
    from numpy.typing import NDArray

__all__ = ["BINS", "BIN_WIDTH", "bin_of", "bins_of", "edge", "first_bin_at", "solve"]

_PER_UNIT = 1000
BIN_WIDTH = 1.0 / _PER_UNIT
BINS = 2 * _PER_UNIT


def bin_of(similarity: float) -> int:
    """The bin of a cosine similarity (clamped to ``[-1, 1]``)."""
    b = math.floor(round(similarity * _PER_UNIT, 6)) + _PER_UNIT
    return min(max(b, 0), BINS - 1)


def bins_of(similarities: NDArray[np.floating[Any]]) -> NDArray[np.int64]:
    """:func:`bin_of` of every similarity."""
    scaled = np.floor(np.round(np.asarray(similarities, dtype=np.float64) * _PER_UNIT, 6))
    return np.clip(scaled.astype(np.int64) + _PER_UNIT, 0, BINS - 1)


def edge(b: int) -> float:
    """The lower edge of bin ``b`` (``b = BINS`` is the top, 1.0)."""
    return (b - _PER_UNIT) / _PER_UNIT


def first_bin_at(threshold: float) -> int:
    """The lowest bin whose lower edge is ``>= threshold`` (``BINS`` if none)."""
    if math.isinf(threshold):
        return BINS if threshold > 0 else 0
    b = math.ceil(round(threshold * _PER_UNIT, 6)) + _PER_UNIT
    return min(max(b, 0), BINS)


def _above_false(false: NDArray[np.int64], initial: float, lo: int) -> float:
    """No threshold certified: ``initial``, kept above every false hit seen (its bin's top);
    ``false`` counts bins from ``lo`` on."""
    seen = np.flatnonzero(false)
    if seen.size == 0:
        return initial
    top = lo + int(seen[-1]) + 1
    above = edge(top) if top < BINS else math.nextafter(1.0, math.inf)
    return max(initial, above)


def _lowest_safe(
    total: NDArray[np.int64],
    false: NDArray[np.int64],
    table: AllowanceTable,
    fixed_hits: int | NDArray[np.int64] = 0,
    fixed_false: int | NDArray[np.int64] = 0,
    start: int = 0,
) -> NDArray[np.int64]:
    """Per row of ``(rows, BINS)`` counts: the lowest non-empty bin ``>= start`` such that
    serving it and every bin above (plus the fixed hits) keeps the false hits within the bound;
    ``-1`` if none."""
    t, f = total[:, start:], false[:, start:]
    if t.shape[1] == 0:
        return np.full(len(total), -1, dtype=np.int64)
    hits = np.cumsum(t[:, ::-1], axis=1)[:, ::-1] + np.asarray(fixed_hits).reshape(-1, 1)
    falses = np.cumsum(f[:, ::-1], axis=1)[:, ::-1] + np.asarray(fixed_false).reshape(-1, 1)
    allowed = table.upto(int(hits[:, 0].max()))[hits]
    safe = (t > 0) & (falses <= allowed)
    first = np.argmax(safe, axis=1)
    return np.where(safe.any(axis=1), first + start, -1)


def solve(
    total: NDArray[np.int64], false: NDArray[np.int64], initial: float, table: AllowanceTable
) -> tuple[float | None, list[float]]:
    """(pooled threshold, per-region thresholds) from ``(regions, BINS)`` counts.

    1. pooled: the lowest bin edge certified by all observations together (``None`` if none);
    2. a region whose own counts certify a lower edge than the ceiling (the pooled threshold,
       or ``initial`` kept above every false hit) uses it;
    3. the other regions share the lowest edge ``>=`` the ceiling at which the bound over
       everything served (the lowered regions' hits included) holds, else the ceiling kept
       above their false hits.
    """
    k = len(total)
    used = np.flatnonzero(total.any(axis=0))
    if used.size == 0:
        return None, [initial] * k
    lo = int(used[0])  # solve over the bins in use only: indices below are relative to lo
    total, false = total[:, lo : int(used[-1]) + 1], false[:, lo : int(used[-1]) + 1]
    all_t, all_f = total.sum(axis=0, keepdims=True), false.sum(axis=0, keepdims=True)
    # one pass for the pooled threshold (last row) and every region's own
    cuts = _lowest_safe(np.vstack([total, all_t]), np.vstack([false, all_f]), table)
    own, pooled_bin = cuts[:k], int(cuts[k])
    pooled = None if pooled_bin < 0 else edge(lo + pooled_bin)
    ceiling = _above_false(all_f[0], initial, lo) if pooled is None else pooled
    start = max(first_bin_at(ceiling) - lo, 0)
    lowered = (own >= 0) & (own < start)
    if k == 1 and not lowered[0]:
        return pooled, [ceiling]  # the shared step over one region finds the ceiling again
    rows = np.flatnonzero(lowered)
    fixed_hits = fixed_false = 0
    for r in rows:
        fixed_hits += int(total[r, own[r] :].sum())
        fixed_false += int(false[r, own[r] :].sum())
    rest = ~lowered
    rest_t = total[rest].sum(axis=0, keepdims=True)
    rest_f = false[rest].sum(axis=0, keepdims=True)
    shared_bin = int(_lowest_safe(rest_t, rest_f, table, fixed_hits, fixed_false, start)[0])
    if shared_bin >= 0:
        shared = edge(lo + shared_bin)
    else:
        shared = max(ceiling, _above_false(rest_f[0], initial, lo))
    return pooled, [edge(lo + int(own[i])) if lowered[i] else shared for i in range(k)]
