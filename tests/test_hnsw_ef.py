"""HNSW search width: an explicit ``ef_search`` at every size, or one chosen from the graph size."""

from __future__ import annotations

import numpy as np
import pytest

from semcache.backends import vector_index as vi
from semcache.backends.redis import queries
from semcache.backends.vector_index import HnswIndex, HnswParams, size_aware_ef
from semcache.errors import ConfigurationError


def test_size_aware_ef_is_the_floor_for_small_graphs_then_grows_to_the_cap() -> None:
    assert size_aware_ef(0) == vi.EF_FLOOR
    assert size_aware_ef(vi.EF_FROM) == vi.EF_FLOOR
    widths = [size_aware_ef(n) for n in (10**5, 2 * 10**5, 5 * 10**5, 10**6, 10**7, 10**9)]
    assert widths == sorted(widths)  # never narrower for a bigger graph
    assert size_aware_ef(10**6) > vi.EF_FLOOR
    assert size_aware_ef(10**12) == vi.EF_CAP


def test_default_params_follow_the_size_and_an_explicit_width_is_kept() -> None:
    assert HnswParams().ef_search is None
    for n in (0, 5_000, 10**6, 10**8):
        assert HnswParams().ef_for(n) == size_aware_ef(n)
        assert HnswParams(ef_search=48).ef_for(n) == 48


@pytest.mark.parametrize("bad", [0, -3, 1.5, True, "64"])
def test_a_bad_ef_search_fails_at_construction(bad: object) -> None:
    with pytest.raises(ConfigurationError, match="ef_search"):
        HnswParams(ef_search=bad)  # type: ignore[arg-type]


def _graph(params: HnswParams, n: int = 40, dim: int = 8) -> HnswIndex:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, dim)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    index = HnswIndex(dim, params)
    index.add(np.arange(n, dtype=np.int64), x)
    return index


def test_hnsw_index_searches_with_the_width_for_its_size(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(vi, "EF_FROM", 10)  # a 40-vector graph counts as "large"
    index = _graph(HnswParams())
    index.knn(np.ones(8, dtype=np.float32) / np.sqrt(8), 4)
    assert index._index.ef == size_aware_ef(40) > vi.EF_FLOOR

    explicit = _graph(HnswParams(ef_search=7))
    explicit.knn(np.ones(8, dtype=np.float32) / np.sqrt(8), 4)
    assert explicit._index.ef == 7
    explicit.knn(np.ones(8, dtype=np.float32) / np.sqrt(8), 12)
    assert explicit._index.ef == 12  # never narrower than k


def test_redis_query_width_follows_the_whole_index_not_the_scope() -> None:
    vec = np.ones(4, dtype=np.float32) / 2
    # One scope of 50k in a 10M-entry cache: the graph (shared by all scopes) has 10M nodes.
    query = queries.knn_query("s", vec, 4, HnswParams(), (50_000, 10_000_000))
    assert query.ef_runtime == size_aware_ef(10_000_000)
    assert (
        queries.knn_query("s", vec, 4, HnswParams(ef_search=20), (50_000, 10**7)).ef_runtime == 20
    )
    # Exact plans carry no width.
    assert queries.knn_query("s", vec, 4, HnswParams(), (10, 10**7)).ef_runtime is None
