"""The embedded backend on real hnswlib and SQLite: persistence, recall, growth, threads."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from semcache import (
    EmbeddedBackend,
    FingerprintMismatchError,
    HnswParams,
    InvalidInputError,
    MemoryBackend,
    ModelFingerprint,
)
from semcache.models import NewEntry

FP = ModelFingerprint(model="test-model", dim=32)
#: Scopes past 8 entries get an HNSW graph: these tests exercise the graphs with few entries.
GRAPH = HnswParams(exact_up_to=8)


def _unit(rng: np.random.Generator, n: int, dim: int = 32) -> np.ndarray:
    x = rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _entry(i: int, scope: str = "s") -> NewEntry:
    return NewEntry(
        scope_key=scope,
        text_key=f"t{i}",
        prompt=f"p{i}",
        response={"answer": i},
        created_at=float(i),
        metadata={"n": i},
    )


def _fill(backend: EmbeddedBackend | MemoryBackend, vectors: np.ndarray, scope: str = "s") -> None:
    for i, v in enumerate(vectors):
        backend.put(_entry(i, scope), v)


def test_reopen_after_close_keeps_entries(tmp_path: Path) -> None:
    vecs = _unit(np.random.default_rng(0), 50)
    with EmbeddedBackend(tmp_path, hnsw=GRAPH) as b:
        b.bind(FP)
        _fill(b, vecs)
    assert (tmp_path / "hnsw" / "s.bin").exists()
    with EmbeddedBackend(tmp_path, hnsw=GRAPH) as b:
        b.bind(FP)
        assert b.count() == 50
        top = b.search("s", vecs[7], 1, now=0.0)
        assert top[0].entry.prompt == "p7"
        assert top[0].entry.response == {"answer": 7}
        assert top[0].similarity == pytest.approx(1.0, abs=1e-5)


_CHILD = """
import json, sys
import numpy as np
from semcache import EmbeddedBackend, HnswParams, ModelFingerprint
from semcache.models import NewEntry
path, mode = sys.argv[1], sys.argv[2]
fp = ModelFingerprint(model="test-model", dim=32)
b = EmbeddedBackend(path, hnsw=HnswParams(exact_up_to=8))
b.bind(fp)
rng = np.random.default_rng(1)
vecs = rng.standard_normal((40, 32)).astype(np.float32)
vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
if mode == "write":
    for i, v in enumerate(vecs):
        b.put(NewEntry(scope_key="s", text_key=f"t{i}", prompt=f"p{i}", response=i,
                       created_at=0.0), v)
    b.delete([str(b.get_exact("s", "t3", 0.0).id)])
    # no close(): the process ends as if it crashed, with no HNSW snapshot written
    import os
    os._exit(0)
found = [c.entry.prompt for c in b.search("s", vecs[5], 1, 0.0)]
gone = [c.entry.prompt for c in b.search("s", vecs[3], 1, 0.0)]
print(json.dumps({"count": b.count(), "found": found, "gone": gone}))
"""


def test_entries_survive_a_crash_across_processes(tmp_path: Path) -> None:
    run = [sys.executable, "-c", _CHILD, str(tmp_path)]
    subprocess.run([*run, "write"], check=True)
    assert not (tmp_path / "hnsw" / "s.bin").exists()  # nothing snapshotted before the "crash"
    out = subprocess.run([*run, "read"], check=True, capture_output=True, text=True)
    report = json.loads(out.stdout)
    assert report["count"] == 39
    assert report["found"] == ["p5"]
    assert report["gone"] != ["p3"]


def test_snapshot_is_reconciled_with_later_writes(tmp_path: Path) -> None:
    vecs = _unit(np.random.default_rng(2), 30)
    b = EmbeddedBackend(tmp_path, hnsw=GRAPH)
    b.bind(FP)
    _fill(b, vecs[:20])
    b.flush()  # snapshot holds 0..19
    for i in range(20, 30):
        b.put(_entry(i), vecs[i])
    b.delete([b.get_exact("s", "t4", 0.0).id])  # type: ignore[union-attr]
    b._db.close()  # simulate a crash: no final snapshot
    b._dir_lock.release()  # type: ignore[union-attr]  # ...and the kernel drops the lock
    b2 = EmbeddedBackend(tmp_path, hnsw=GRAPH)
    b2.bind(FP)
    assert b2.count() == 29
    assert b2.search("s", vecs[25], 1, 0.0)[0].entry.prompt == "p25"
    assert all(c.entry.prompt != "p4" for c in b2.search("s", vecs[4], 5, 0.0))


def test_corrupt_snapshot_is_rebuilt_from_sqlite(tmp_path: Path) -> None:
    vecs = _unit(np.random.default_rng(3), 20)
    with EmbeddedBackend(tmp_path, hnsw=GRAPH) as b:
        b.bind(FP)
        _fill(b, vecs)
    (tmp_path / "hnsw" / "s.bin").write_bytes(b"garbage")
    with EmbeddedBackend(tmp_path, hnsw=GRAPH) as b:
        b.bind(FP)
        assert b.search("s", vecs[11], 1, 0.0)[0].entry.prompt == "p11"


def test_fingerprint_mismatch_is_refused(tmp_path: Path) -> None:
    with EmbeddedBackend(tmp_path) as b:
        b.bind(FP)
    with (
        EmbeddedBackend(tmp_path) as b,
        pytest.raises(FingerprintMismatchError, match="test-model"),
    ):
        b.bind(ModelFingerprint(model="other-model", dim=32))
    with EmbeddedBackend(tmp_path) as b, pytest.raises(FingerprintMismatchError):
        b.bind(ModelFingerprint(model="test-model", dim=64))


def test_index_grows_past_initial_capacity(tmp_path: Path) -> None:
    vecs = _unit(np.random.default_rng(4), 300)
    with EmbeddedBackend(tmp_path, hnsw=HnswParams(initial_capacity=16, exact_up_to=8)) as b:
        b.bind(FP)
        _fill(b, vecs)
        assert b.count() == 300
        assert b.search("s", vecs[299], 1, 0.0)[0].entry.prompt == "p299"


def test_deleted_slots_are_reused_and_never_returned(tmp_path: Path) -> None:
    vecs = _unit(np.random.default_rng(5), 40)
    with EmbeddedBackend(tmp_path, hnsw=HnswParams(initial_capacity=8, exact_up_to=8)) as b:
        b.bind(FP)
        _fill(b, vecs[:20])
        b.clear("s")
        assert b.count() == 0
        assert b.search("s", vecs[0], 3, 0.0) == []
        for i in range(20, 40):
            b.put(_entry(i), vecs[i])
        got = b.search("s", vecs[0], 10, 0.0)
        assert got
        assert all(int(c.entry.prompt[1:]) >= 20 for c in got)


def test_hnsw_recall_against_exact_oracle(tmp_path: Path) -> None:
    rng = np.random.default_rng(6)
    data, queries = _unit(rng, 3000, 64), _unit(rng, 100, 64)
    fp = ModelFingerprint(model="test-model", dim=64)
    hnsw, exact = EmbeddedBackend(tmp_path), MemoryBackend()
    for b in (hnsw, exact):
        b.bind(fp)
        _fill(b, data)
    k, found = 10, 0
    for q in queries:
        truth = {c.entry.id for c in exact.search("s", q, k, 0.0)}
        found += len(truth & {c.entry.id for c in hnsw.search("s", q, k, 0.0)})
    assert found / (k * len(queries)) >= 0.95
    hnsw.close()


def test_similarity_is_cosine_in_both_indexes(tmp_path: Path) -> None:
    a = np.zeros(32, np.float32)
    a[0] = 1
    b_ = np.zeros(32, np.float32)
    b_[:2] = [0.6, 0.8]
    for backend in (EmbeddedBackend(tmp_path, hnsw=HnswParams(exact_up_to=0)), MemoryBackend()):
        backend.bind(FP)
        backend.put(_entry(0), b_)
        assert backend.search("s", a, 1, 0.0)[0].similarity == pytest.approx(0.6, abs=1e-6)
        backend.close()


def test_bad_vectors_are_refused_and_nothing_is_stored(tmp_path: Path) -> None:
    with EmbeddedBackend(tmp_path) as b:
        b.bind(FP)
        good = _unit(np.random.default_rng(7), 1)[0]
        nan = good.copy()
        nan[3] = np.nan
        for bad in (nan, good[:16], good * 3, np.zeros(32, np.float32)):
            with pytest.raises(InvalidInputError):
                b.put(_entry(0), bad)
            with pytest.raises(InvalidInputError):
                b.search("s", bad, 1, 0.0)
        assert b.count() == 0


def test_concurrent_writers_and_readers(tmp_path: Path) -> None:
    vecs = _unit(np.random.default_rng(8), 400)
    b = EmbeddedBackend(tmp_path, hnsw=HnswParams(initial_capacity=8, exact_up_to=8))
    b.bind(FP)
    errors: list[BaseException] = []

    def write(lo: int, hi: int) -> None:
        try:
            for i in range(lo, hi):
                b.put(_entry(i, scope=f"s{i % 3}"), vecs[i])
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    def read() -> None:
        try:
            for i in range(200):
                b.search(f"s{i % 3}", vecs[i], 4, 0.0)
        except BaseException as e:  # pragma: no cover
            errors.append(e)

    threads = [threading.Thread(target=write, args=(i * 100, (i + 1) * 100)) for i in range(4)]
    threads += [threading.Thread(target=read) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert b.count() == 400
    for i in (0, 123, 399):
        assert b.search(f"s{i % 3}", vecs[i], 1, 0.0)[0].entry.prompt == f"p{i}"
    b.close()


def test_lru_eviction_keeps_recently_used(tmp_path: Path) -> None:
    vecs = _unit(np.random.default_rng(9), 10)
    with EmbeddedBackend(tmp_path) as b:
        b.bind(FP)
        _fill(b, vecs)  # created_at (and last access) 0..9
        b.touch(b.get_exact("s", "t0", 0.0).id, now=100.0)  # type: ignore[union-attr]
        assert b.evict(5) == 5
        kept = sorted(int(c.entry.prompt[1:]) for c in b.search("s", vecs[0], 10, 0.0))
        assert kept == [0, 6, 7, 8, 9]


def test_put_many_matches_put_and_replaces_within_the_batch(tmp_path: Path) -> None:
    vecs = _unit(np.random.default_rng(10), 6)
    with EmbeddedBackend(tmp_path, hnsw=HnswParams(initial_capacity=2, exact_up_to=2)) as b:
        b.bind(FP)
        b.put(_entry(0), vecs[0])  # replaced by the batch below
        batch = [_entry(0, "s"), _entry(1, "s"), _entry(2, "t"), _entry(1, "s")]
        stored = b.put_many(batch, [vecs[1], vecs[2], vecs[3], vecs[4]])
        assert [e.text_key for e in stored] == ["t0", "t1", "t2", "t1"]
        assert b.count() == 3
        assert b.search("s", vecs[1], 1, 0.0)[0].entry.text_key == "t0"
        assert b.search("s", vecs[4], 1, 0.0)[0].entry.id == stored[3].id
        assert all(c.entry.id != stored[1].id for c in b.search("s", vecs[2], 5, 0.0))
        assert b.search("t", vecs[3], 1, 0.0)[0].entry.text_key == "t2"
        assert b.search("s", vecs[0], 5, 0.0)[0].similarity < 0.99  # the replaced vector is gone
    with EmbeddedBackend(tmp_path) as b:
        b.bind(FP)
        assert b.count() == 3
        with pytest.raises(InvalidInputError):
            b.put_many([_entry(9)], [])
