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


def _above_false(false: NDArray[np.int64], initial: float) -> float:
    """No threshold certified: ``initial``, kept above every false hit seen (its bin's top)."""
    seen = np.flatnonzero(false)
    if seen.size == 0:
        return initial
    top = int(seen[-1]) + 1
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
    all_t, all_f = total.sum(axis=0, keepdims=True), false.sum(axis=0, keepdims=True)
    pooled_bin = int(_lowest_safe(all_t, all_f, table)[0])
    pooled = None if pooled_bin < 0 else edge(pooled_bin)
    ceiling = _above_false(all_f[0], initial) if pooled is None else pooled
    own = _lowest_safe(total, false, table)
    lowered = (own >= 0) & (own < first_bin_at(ceiling))
    if k == 1 and not lowered[0]:
        return pooled, [ceiling]  # the shared step over one region finds the ceiling again
    cum_t = np.cumsum(total[:, ::-1], axis=1)[:, ::-1]
    cum_f = np.cumsum(false[:, ::-1], axis=1)[:, ::-1]
    rows = np.flatnonzero(lowered)
    fixed_hits = int(cum_t[rows, own[rows]].sum())
    fixed_false = int(cum_f[rows, own[rows]].sum())
    rest = ~lowered
    rest_t = total[rest].sum(axis=0, keepdims=True)
    rest_f = false[rest].sum(axis=0, keepdims=True)
    start = first_bin_at(ceiling)
    shared_bin = int(_lowest_safe(rest_t, rest_f, table, fixed_hits, fixed_false, start)[0])
    shared = edge(shared_bin) if shared_bin >= 0 else max(ceiling, _above_false(rest_f[0], initial))
    return pooled, [edge(int(own[i])) if lowered[i] else shared for i in range(k)]
