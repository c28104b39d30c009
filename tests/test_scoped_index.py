"""Bounded memory on the embedded backend: exact small scopes, HNSW large ones, caps with eviction.

Real hnswlib and SQLite throughout; the exact oracle is :class:`MemoryBackend`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest

from semcache import (
    CachePolicy,
    ConfigurationError,
    EmbeddedBackend,
    HnswParams,
    MemoryBackend,
    ModelFingerprint,
    NotCacheableError,
    Scope,
    SemanticCache,
)
from semcache.backends.embedded import LocalBackend
from semcache.backends.scoped_index import (
    REBUILD_UP_TO,
    ScopedIndexes,
    layout,
    over_cap,
    rebuild_due,
    reuses_slots,
)
from semcache.backends.vector_index import HnswIndex
from semcache.models import NewEntry
from semcache.testing import HashingEmbedder, ManualClock

if TYPE_CHECKING:
    from collections.abc import Iterator

    from numpy.typing import NDArray

DIM = 32
FP = ModelFingerprint(model="test-model", dim=DIM)


def _unit(rng: np.random.Generator, n: int, dim: int = DIM) -> NDArray[np.float32]:
    x = rng.standard_normal((n, dim)).astype(np.float32)
    out: NDArray[np.float32] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def _entry(i: int, scope: str = "s", *, at: float | None = None, pad: int = 0) -> NewEntry:
    return NewEntry(
        scope_key=scope,
        text_key=f"t{i}",
        prompt=f"p{i:04d}" + "x" * pad,
        response={"answer": i},
        created_at=float(i) if at is None else at,
    )


def _top(backend: LocalBackend, scope: str, q: NDArray[np.float32]) -> tuple[str, float]:
    hit = backend.search(scope, q, 1, 0.0)[0]
    return hit.entry.text_key, hit.similarity


# -- pure decisions ---------------------------------------------------------------------------


def test_layout_promotes_past_the_threshold_and_demotes_at_half() -> None:
    assert layout("exact", 2048, 2048) == "exact"
    assert layout("exact", 2049, 2048) == "hnsw"
    assert layout("hnsw", 1025, 2048) == "hnsw"  # the gap stops flapping at the boundary
    assert layout("hnsw", 1024, 2048) == "exact"
    assert layout("exact", 10**6, None) == "exact"  # no graphs at all (MemoryBackend)


def test_over_cap() -> None:
    assert over_cap(5, 1, None) == 0
    assert over_cap(5, 1, 6) == 0
    assert over_cap(6, 1, 6) == 1
    assert over_cap(6, 100, 6) == 6  # more incoming than the cap: everything held goes
    assert over_cap(0, 100, 6) == 0


def test_rebuild_due_once_deleted_slots_pass_a_quarter_of_the_live_ones() -> None:
    assert not rebuild_due(0, 100)
    assert not rebuild_due(25, 100)
    assert rebuild_due(26, 100)


def test_a_graph_past_the_rebuild_size_is_rebuilt_once_into_one_that_reuses_slots() -> None:
    """Large graphs never pause for a rebuild: past REBUILD_UP_TO they reuse deleted slots."""
    assert rebuild_due(0, REBUILD_UP_TO + 1)  # the one rebuild, into a slot-reusing graph
    assert not rebuild_due(10 * REBUILD_UP_TO, REBUILD_UP_TO + 1, reuses=True)
    assert reuses_slots(REBUILD_UP_TO + 1)
    assert not reuses_slots(REBUILD_UP_TO)


def test_caps_are_validated(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="max_scopes"):
        EmbeddedBackend(tmp_path, max_scopes=0)
    with pytest.raises(ConfigurationError, match="max_bytes"):
        MemoryBackend(max_bytes=-1)
    with pytest.raises(ConfigurationError, match="max_resident"):
        HnswParams(max_resident=0)


# -- layout: exact small scopes, graphs for large ones ----------------------------------------


def test_many_small_scopes_build_no_graphs(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    sizes = rng.integers(1, 6, size=300)
    entries = [_entry(j, f"scope{i}") for i, n in enumerate(sizes) for j in range(n)]
    vecs = _unit(rng, len(entries))
    with EmbeddedBackend(tmp_path) as b:
        b.bind(FP)
        b.put_many(entries, list(vecs))
        stats = b.stats()
        assert (stats.scopes, stats.exact_scopes, stats.graph_scopes) == (300, 300, 0)
        assert stats.resident_graphs == 0
        assert stats.exact_vectors == len(entries)
        for k in (0, 17, len(entries) - 1):
            e = entries[k]
            assert _top(b, e.scope_key, vecs[k])[0] == e.text_key
    assert not list((tmp_path / "hnsw").glob("*.bin"))
    with EmbeddedBackend(tmp_path) as b:  # exact scopes are rebuilt from SQLite on open
        b.bind(FP)
        assert b.stats().exact_scopes == 300
        assert _top(b, entries[17].scope_key, vecs[17])[0] == entries[17].text_key


def test_promotion_keeps_the_top_hit_identical_to_brute_force(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    data, queries = _unit(rng, 120), _unit(rng, 40)
    oracle = MemoryBackend()
    oracle.bind(FP)
    with EmbeddedBackend(tmp_path, hnsw=HnswParams(exact_up_to=32)) as b:
        b.bind(FP)
        for i, v in enumerate(data):
            b.put(_entry(i), v)
            oracle.put(_entry(i), v)
            kind = b.stats()
            assert (kind.graph_scopes, kind.exact_scopes) == ((1, 0) if i >= 32 else (0, 1))
            if i in (31, 32, 33, 119):  # just before, at and after promotion, and at the end
                for q in queries:
                    got, want = _top(b, "s", q), _top(oracle, "s", q)
                    assert got[0] == want[0]
                    assert got[1] == pytest.approx(want[1], abs=1e-5)
        assert oracle.stats().graph_scopes == 0  # the memory backend never builds one


def test_a_shrinking_scope_is_demoted_and_an_empty_one_freed(tmp_path: Path) -> None:
    vecs = _unit(np.random.default_rng(2), 40)
    snapshot = tmp_path / "hnsw" / "s.bin"
    with EmbeddedBackend(tmp_path, hnsw=HnswParams(exact_up_to=16)) as b:
        b.bind(FP)
        ids = [b.put(_entry(i), v).id for i, v in enumerate(vecs)]
        b.put(_entry(0, "other"), vecs[0])
        b.flush()
        assert snapshot.exists()
        assert b.stats().graph_scopes == 1
        b.delete(ids[:31])  # 9 left: above half of 16, still a graph
        assert b.stats().graph_scopes == 1
        b.delete(ids[31:32])  # 8 left: back to exact, and the snapshot goes on the next save
        stats = b.stats()
        assert (stats.graph_scopes, stats.exact_scopes, stats.resident_graphs) == (0, 2, 0)
        assert _top(b, "s", vecs[35])[0] == "t35"
        b.flush()
        assert not snapshot.exists()
        b.clear("s")
        assert b.stats().scopes == 1  # the emptied scope is gone
        assert b.search("s", vecs[35], 3, 0.0) == []
        b.delete([b.get_exact("other", "t0", 0.0).id])  # type: ignore[union-attr]
        assert b.stats().scopes == 0


def test_a_graph_snapshot_of_a_scope_now_small_is_removed_on_open(tmp_path: Path) -> None:
    vecs = _unit(np.random.default_rng(6), 20)
    with EmbeddedBackend(tmp_path, hnsw=HnswParams(exact_up_to=8)) as b:  # as before: a graph
        b.bind(FP)
        b.put_many([_entry(i) for i in range(20)], list(vecs))
    assert (tmp_path / "hnsw" / "s.bin").exists()
    with EmbeddedBackend(tmp_path) as b:  # 20 entries are exact under the default threshold
        b.bind(FP)
        assert (b.stats().exact_scopes, b.stats().graph_scopes) == (1, 0)
        assert _top(b, "s", vecs[13])[0] == "t13"
    assert not (tmp_path / "hnsw" / "s.bin").exists()


def test_resident_graphs_are_capped_and_a_reloaded_graph_searches_the_same(
    tmp_path: Path,
) -> None:
    rng = np.random.default_rng(3)
    scopes = [f"g{i}" for i in range(5)]
    data = {s: _unit(rng, 30) for s in scopes}
    queries = _unit(rng, 10)
    params = HnswParams(exact_up_to=8, max_resident=2)
    with EmbeddedBackend(tmp_path, hnsw=params) as b:
        b.bind(FP)
        first: dict[str, list[list[tuple[str, float]]]] = {}
        for s in scopes:
            b.put_many([_entry(i, s) for i in range(30)], list(data[s]))
            assert b.stats().resident_graphs <= 2
            first[s] = [[(c.entry.text_key, c.similarity) for c in b.search(s, q, 5, 0.0)]
                        for q in queries]  # fmt: skip
        stats = b.stats()
        assert (stats.graph_scopes, stats.resident_graphs) == (5, 2)
        assert len(list((tmp_path / "hnsw").glob("*.bin"))) >= 3  # unloaded graphs wait on disk
        for s in reversed(scopes):  # each of g2..g0 is loaded back from its snapshot
            again = [[(c.entry.text_key, c.similarity) for c in b.search(s, q, 5, 0.0)]
                     for q in queries]  # fmt: skip
            assert again == first[s]
            assert b.stats().resident_graphs == 2
        b.put(_entry(99, "g4"), data["g0"][0])  # a write to a graph on disk loads it first
        assert _top(b, "g4", data["g0"][0])[0] == "t99"
    with EmbeddedBackend(tmp_path, hnsw=params) as b:
        b.bind(FP)
        assert b.stats().resident_graphs == 0  # graphs are loaded on first use, not on open
        assert _top(b, "g1", data["g1"][7])[0] == "t7"
        assert b.count() == 151


def test_a_graph_keeps_deleted_slots_and_counts_them_again_once_reloaded(tmp_path: Path) -> None:
    vecs = _unit(np.random.default_rng(8), 11)
    index = HnswIndex(DIM, HnswParams(), reuse_deleted=False)
    index.add(np.arange(10, dtype=np.int64), vecs[:10])
    index.remove(3)
    index.remove(4)
    index.add(np.array([10], dtype=np.int64), vecs[10:])  # a new slot: none is reused
    assert (len(index), index.deleted) == (9, 2)
    index.save(tmp_path / "g.bin")
    loaded = HnswIndex(DIM, HnswParams(), tmp_path / "g.bin", reuse_deleted=False)
    assert (len(loaded), loaded.deleted) == (11, 0)  # hnswlib lists deleted labels too
    loaded.remove(3)  # as reconciling with the entry store does
    loaded.remove(4)
    assert (len(loaded), loaded.deleted) == (9, 2)


class _Vectors:
    """The vectors of one scope in a dict: a :class:`VectorSource` for :class:`ScopedIndexes`."""

    def __init__(self) -> None:
        self.by_id: dict[int, NDArray[np.float32]] = {}

    def scope_ids(self, scope_key: str) -> set[int]:
        return set(self.by_id)

    def scope_vectors(
        self, scope_key: str, ids: list[int] | None = None
    ) -> Iterator[tuple[NDArray[np.int64], NDArray[np.float32]]]:
        keys = sorted(self.by_id) if ids is None else ids
        yield np.array(keys, dtype=np.int64), np.stack([self.by_id[i] for i in keys])


def _self_recall(indexes: ScopedIndexes, vectors: dict[int, NDArray[np.float32]]) -> float:
    """How often an entry's own vector finds it as the top hit of its scope."""
    return float(np.mean([indexes.knn("s", v, 1)[0][0] == i for i, v in vectors.items()]))


def test_a_graph_churned_many_times_its_size_finds_its_vectors_as_a_fresh_one_does() -> None:
    dim, n = 384, 1000
    rng = np.random.default_rng(7)
    centers = rng.standard_normal((5, dim)).astype(np.float32)

    def near_duplicates(count: int) -> NDArray[np.float32]:  # as paraphrased prompts are
        x = centers[rng.integers(5, size=count)]
        x += 0.01 / np.sqrt(dim) * rng.standard_normal((count, dim)).astype(np.float32)
        out: NDArray[np.float32] = x / np.linalg.norm(x, axis=1, keepdims=True)
        return out

    store = _Vectors()
    churned = ScopedIndexes(dim, HnswParams(exact_up_to=64), None, store)
    store.by_id = dict(enumerate(near_duplicates(n)))
    churned.add("s", np.arange(n, dtype=np.int64), np.stack(list(store.by_id.values())))
    for new_id in range(n, 4 * n):  # each step replaces an entry: its old label goes
        old_id = int(rng.choice(list(store.by_id)))
        del store.by_id[old_id]
        churned.remove("s", [old_id])
        store.by_id[new_id] = near_duplicates(1)[0]
        churned.add("s", np.array([new_id], dtype=np.int64), store.by_id[new_id][None, :])
    fresh = ScopedIndexes(dim, HnswParams(exact_up_to=64), None, store)
    fresh.add("s", *next(store.scope_vectors("s")))
    assert churned.counts().graph_scopes == fresh.counts().graph_scopes == 1
    assert (churned.rebuilds, fresh.rebuilds) == (12, 0)  # 3,000 removals, a rebuild per 250
    assert _self_recall(churned, store.by_id) >= _self_recall(fresh, store.by_id) - 0.01


# -- caps ----------------------------------------------------------------------------------------


def test_scope_cap_evicts_the_least_recently_used_scope(tmp_path: Path) -> None:
    vecs = _unit(np.random.default_rng(4), 8)
    with EmbeddedBackend(tmp_path, max_scopes=3) as b:
        b.bind(FP)
        b.put_many([_entry(0, "a"), _entry(1, "a")], [vecs[0], vecs[1]])
        b.put(_entry(2, "b"), vecs[2])
        b.put(_entry(3, "c"), vecs[3])
        b.touch(b.get_exact("a", "t0", 0.0).id, now=100.0)  # type: ignore[union-attr]
        b.put(_entry(4, "d"), vecs[4])  # b is now the least recently used scope
        assert b.get_exact("b", "t2", 0.0) is None
        assert b.get_exact("a", "t1", 0.0) is not None
        assert (b.stats().scopes, b.stats().evictions, b.count()) == (3, 1, 4)
        b.put(_entry(5, "a"), vecs[5])  # an existing scope: nothing to evict
        assert b.stats().evictions == 1
        assert b.evict(10**6) == 1  # the caps' evictions are reported once by evict()
        assert b.evict(10**6) == 0
    with EmbeddedBackend(tmp_path, max_scopes=3) as b:  # recency survives a reopen
        b.bind(FP)
        b.put(_entry(6, "e"), vecs[6])
        assert b.get_exact("c", "t3", 0.0) is None  # c (t=3) was older than d (4) and a (100)
        assert b.stats().scopes == 3


def test_byte_cap_evicts_lru_entries_first_and_refuses_an_entry_too_large(
    tmp_path: Path,
) -> None:
    vecs = _unit(np.random.default_rng(5), 10)
    probe = MemoryBackend()
    probe.bind(FP)
    probe.put(_entry(0, "s0"), vecs[0])
    size = probe.stats().stored_bytes  # the size of each _entry(i, "sN") below
    assert size > DIM * 4
    with EmbeddedBackend(tmp_path, max_bytes=3 * size + size // 2) as b:
        b.bind(FP)
        for i in range(3):
            b.put(_entry(i, f"s{i % 2}"), vecs[i])
        b.touch(b.get_exact("s0", "t0", 0.0).id, now=50.0)  # type: ignore[union-attr]
        b.put(_entry(3, "s1"), vecs[3])  # room is made first: t1 (the LRU entry) goes
        assert b.get_exact("s1", "t1", 0.0) is None
        assert {e for e in ("t0", "t2") if b.get_exact("s0", e, 0.0)} == {"t0", "t2"}
        assert b.stats().stored_bytes == 3 * size
        assert b.stats().evictions == 1
        with pytest.raises(NotCacheableError, match="max_bytes"):
            b.put(_entry(4, pad=4 * size), vecs[4])
        assert b.count() == 3  # nothing was evicted for the refused entry
        b.put(_entry(2, "s0"), vecs[5])  # a replacement adds no bytes
        assert (b.stats().stored_bytes, b.stats().evictions) == (3 * size, 1)
    with EmbeddedBackend(tmp_path, max_bytes=3 * size + size // 2) as b:
        b.bind(FP)
        assert b.stats().stored_bytes == 3 * size  # recounted from SQLite on open


def test_the_cache_counts_evictions_by_the_caps() -> None:
    clock = ManualClock(start=1000.0)
    cache = SemanticCache(
        embedder=HashingEmbedder(dim=DIM),
        backend=MemoryBackend(max_scopes=2),
        policy=CachePolicy(max_entries=1000),
        clock=clock,
    )
    for tenant in ("a", "b", "c", "d"):
        clock.advance(1)
        cache.store(f"question from {tenant}", tenant, Scope(model="m", tenant=tenant))
    assert cache.info().evictions == 2
    assert cache.backend.count() == 2
    assert cache.lookup("question from d", Scope(model="m", tenant="d")).hit
    assert not cache.lookup("question from a", Scope(model="m", tenant="a")).hit


def test_a_large_graph_reuses_slots_and_never_pauses_for_a_rebuild() -> None:
    """A scope loaded past REBUILD_UP_TO at once gets a slot-reusing graph: churn rebuilds
    nothing (a rebuild of a large graph would block the store for seconds or minutes)."""
    dim, n = 8, REBUILD_UP_TO + 100
    rng = np.random.default_rng(3)
    store = _Vectors()
    store.by_id = dict(enumerate(_unit(rng, n, dim)))
    indexes = ScopedIndexes(dim, HnswParams(exact_up_to=64), None, store)
    indexes.add("s", *next(store.scope_vectors("s")))
    for old_id in range(n // 2):  # half the entries replaced: far past REBUILD_AFTER
        indexes.remove("s", [old_id])
        new_id = n + old_id
        store.by_id[new_id] = _unit(rng, 1, dim)[0]
        indexes.add("s", np.array([new_id], dtype=np.int64), store.by_id[new_id][None, :])
    assert indexes.rebuilds == 0
    assert indexes.counts().graph_scopes == 1
