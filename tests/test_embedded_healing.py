"""The embedded backend heals or fails cleanly: bad values, failed transactions, corrupt files.

Real SQLite and hnswlib throughout. Each reopen of a corrupted HNSW snapshot runs in a child
process, so a crash inside hnswlib fails its test instead of killing pytest.
"""

from __future__ import annotations

import json
import logging
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import closing, suppress
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from semcache import (
    BackendError,
    CachePolicy,
    EmbeddedBackend,
    HnswParams,
    InvalidInputError,
    ModelFingerprint,
    NotCacheableError,
    SemanticCache,
    cached,
)
from semcache.backends import snapshots
from semcache.llm.requests import PromptRequest
from semcache.models import NewEntry
from semcache.testing import HashingEmbedder

DIM = 16
FP = ModelFingerprint(model="test-model", dim=DIM)
LONE = "split emoji: \ud83d, a low half \udc00, then the rest \U0001f600"


def _unit(seed: int, n: int) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _entry(i: int, scope: str = "s", **changes: Any) -> NewEntry:
    fields: dict[str, Any] = {
        "scope_key": scope,
        "text_key": f"t{i}",
        "prompt": f"p{i}",
        "response": {"answer": i},
        "created_at": float(i),
        "metadata": {"n": i},
    }
    fields.update(changes)
    return NewEntry(**fields)


def _no_write_pending(db: Path) -> None:
    """Another connection can take the write lock at once (timeout 0): nothing is held open."""
    with closing(sqlite3.connect(db, timeout=0, isolation_level=None)) as other:
        other.execute("BEGIN IMMEDIATE")
        other.execute("INSERT OR REPLACE INTO meta VALUES ('probe', '1')")
        other.execute("DELETE FROM meta WHERE key = 'probe'")
        other.execute("COMMIT")


# -- lone surrogates ----------------------------------------------------------------------------


def test_lone_surrogates_are_stored_and_served_back_equal(tmp_path: Path) -> None:
    vecs = _unit(0, 3)
    response = {"text": LONE, "parts": [LONE, "plain"], LONE: "as a key"}
    metadata = {"note": LONE}
    with EmbeddedBackend(tmp_path) as b:
        b.bind(FP)
        b.put(_entry(0, response=response, metadata=metadata), vecs[0])
        got = b.get_exact("s", "t0", now=0.0)
        assert got is not None
        assert (got.response, dict(got.metadata)) == (response, metadata)
        _no_write_pending(tmp_path / "entries.sqlite3")
        b.put(_entry(1, response="naïve café ☕"), vecs[1])  # later stores succeed
        assert b.count() == 2
    with EmbeddedBackend(tmp_path) as b:  # and survive a reopen
        b.bind(FP)
        again = b.search("s", vecs[0], 1, now=0.0)[0].entry
        assert (again.response, dict(again.metadata)) == (response, metadata)
    with closing(sqlite3.connect(tmp_path / "entries.sqlite3")) as raw:
        columns = dict(raw.execute("SELECT text_key, response FROM entries").fetchall())
    assert "\\ud83d" in columns["t0"]  # escaped, so UTF-8 can hold it
    assert "☕" in columns["t1"]  # other text is not escaped


def test_a_lone_surrogate_response_never_stops_caching(tmp_path: Path) -> None:
    """Through the decorator: served back equal (or not stored), and later stores still work."""
    calls: list[str] = []

    def upstream(prompt: str) -> str:
        calls.append(prompt)
        return LONE if "emoji" in prompt else f"answer to {prompt}"

    with SemanticCache(embedder=HashingEmbedder(dim=DIM), backend=EmbeddedBackend(tmp_path)) as c:
        ask = cached(c, request=PromptRequest())(upstream)
        assert ask("tell me an emoji") == LONE
        assert ask("tell me an emoji") == LONE  # a hit with the same string, or upstream again
        _no_write_pending(tmp_path / "entries.sqlite3")
        assert ask("what is the weather") == "answer to what is the weather"
        before = len(calls)
        assert ask("what is the weather") == "answer to what is the weather"
        assert len(calls) == before  # the later store worked: a hit


def test_a_prompt_with_a_lone_surrogate_is_refused_cleanly(tmp_path: Path) -> None:
    with EmbeddedBackend(tmp_path) as b:
        b.bind(FP)
        with pytest.raises(InvalidInputError, match="prompt"):
            b.put(_entry(0, prompt=LONE), _unit(1, 1)[0])
        assert b.count() == 0
        _no_write_pending(tmp_path / "entries.sqlite3")
        b.put(_entry(1), _unit(1, 1)[0])
        assert b.count() == 1


# -- failures inside put_many's transaction -----------------------------------------------------


class _Exploding:
    """A value SQLite asks to adapt itself while binding the INSERT, and which raises then."""

    def __conform__(self, protocol: object) -> object:
        raise RuntimeError("test: failed inside the transaction")


_BAD_ENTRIES: dict[str, tuple[Callable[[], tuple[NewEntry, np.ndarray]], type[Exception]]] = {
    "foreign exception while binding": (
        lambda: (_entry(9, created_at=_Exploding()), _unit(2, 1)[0]),
        RuntimeError,
    ),
    "type SQLite cannot bind": (
        lambda: (_entry(9, expires_at=object()), _unit(2, 1)[0]),
        BackendError,
    ),
    "metadata not JSON": (
        lambda: (_entry(9, metadata={"f": object()}), _unit(2, 1)[0]),
        NotCacheableError,
    ),
    "NaN in the response": (
        lambda: (_entry(9, response=float("nan")), _unit(2, 1)[0]),
        NotCacheableError,
    ),
    "vector of the wrong shape": (
        lambda: (_entry(9), np.ones(DIM + 1, np.float32)),
        InvalidInputError,
    ),
}


@pytest.mark.parametrize("case", list(_BAD_ENTRIES))
def test_a_failed_batch_rolls_back_and_the_store_stays_usable(tmp_path: Path, case: str) -> None:
    build, raised = _BAD_ENTRIES[case]
    bad, bad_vec = build()
    vecs = _unit(3, 4)
    with EmbeddedBackend(tmp_path) as b:
        b.bind(FP)
        b.put(_entry(0), vecs[0])
        with pytest.raises(raised):
            b.put_many([_entry(1), bad], [vecs[1], bad_vec])  # the bad one comes last
        assert b.get_exact("s", "t1", now=0.0) is None  # the good one was rolled back too
        assert b.count() == 1
        assert not b._db.in_transaction
        _no_write_pending(tmp_path / "entries.sqlite3")
        b.put_many([_entry(2), _entry(3)], [vecs[2], vecs[3]])
        assert b.count() == 3
        assert b.search("s", vecs[2], 1, now=0.0)[0].entry.prompt == "p2"
    with EmbeddedBackend(tmp_path) as b:
        b.bind(FP)
        assert b.count() == 3


# -- corrupt HNSW snapshots ---------------------------------------------------------------------

_GRAPHS = HnswParams(exact_up_to=8)  # 60 entries per scope: each scope has a graph on disk
_PER_SCOPE = 60

_REOPEN = """
import json, logging, sys
import numpy as np
from semcache import EmbeddedBackend, HnswParams, ModelFingerprint
warnings = []
class Keep(logging.Handler):
    def emit(self, record):
        warnings.append(record.getMessage())
logging.getLogger("semcache").addHandler(Keep(logging.WARNING))
path = sys.argv[1]
vecs = np.load(sys.argv[2])
b = EmbeddedBackend(path, hnsw=HnswParams(exact_up_to=8))
b.bind(ModelFingerprint(model="test-model", dim=16))
found = {}
for scope, block in (("a", vecs[:60]), ("b", vecs[60:])):
    found[scope] = [[c.entry.prompt for c in b.search(scope, v, 3, 0.0)] for v in block]
count = b.count()
b.close()
print(json.dumps({"found": found, "count": count, "warnings": warnings}))
"""


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict[str, Any]]:
    """A closed store with two scopes of 60 entries and their graph snapshots, the vectors
    (a .npy file) and the top-3 prompts of each stored vector by brute force."""
    root = tmp_path_factory.mktemp("pristine")
    store, vec_file = root / "store", root / "vectors.npy"
    vecs = _unit(4, 2 * _PER_SCOPE)
    np.save(vec_file, vecs)
    expected: dict[str, Any] = {}
    with EmbeddedBackend(store, hnsw=_GRAPHS) as b:
        b.bind(FP)
        for s, scope in enumerate(("a", "b")):
            block = vecs[s * _PER_SCOPE : (s + 1) * _PER_SCOPE]
            b.put_many([_entry(i, scope) for i in range(_PER_SCOPE)], list(block))
            top = np.argsort(-(block @ block.T), axis=1, kind="stable")[:, :3]
            expected[scope] = [[f"p{i}" for i in row] for row in top.tolist()]
    for scope in ("a", "b"):
        assert snapshots.verified(store / "hnsw" / f"{scope}.bin")
    return store, vec_file, expected


def _flip(data: bytearray, offset: int, values: bytes) -> None:
    """XOR bytes in at ``offset`` (every byte changes: no value is zero)."""
    for i, v in enumerate(values):
        if offset + i < len(data):
            data[offset + i] ^= v or 0xFF


def _corruption(kind: str, seed: int) -> Callable[[Path], None]:
    """A way to damage the snapshot of scope ``a`` (or its checksum) in place."""

    def damage(hnsw: Path) -> None:
        snap, check = hnsw / "a.bin", hnsw / "a.bin.sha256"
        data = bytearray(snap.read_bytes())
        rng = np.random.default_rng(seed)
        if kind == "truncate":
            del data[[0, 1, 64, len(data) // 2, len(data) - 1][seed] :]
        elif kind == "zero-fill":
            start, length = [(0, len(data)), (0, 96), (len(data) // 2, 4096)][seed]
            data[start : start + length] = bytes(min(length, len(data) - start))
        elif kind == "header-write":  # the header holds the sizes hnswlib trusts
            _flip(
                data, int(rng.integers(0, 96)), rng.integers(1, 256, 8).astype(np.uint8).tobytes()
            )
        elif kind == "random-write":
            for _ in range(int(rng.integers(1, 4))):
                at = int(rng.integers(0, len(data)))
                _flip(
                    data,
                    at,
                    rng.integers(1, 256, int(rng.integers(1, 16))).astype(np.uint8).tobytes(),
                )
        elif kind == "append":
            data += rng.integers(0, 256, 1000).astype(np.uint8).tobytes()
        elif kind == "checksum-missing":
            check.unlink()
        elif kind == "checksum-garbage":
            check.write_bytes(b"\x00not json")
        elif kind == "checksum-of-another":
            shutil.copy(hnsw / "b.bin.sha256", check)
        elif kind == "snapshot-missing":
            snap.unlink()
            return
        elif kind == "other-scope-copied":  # a valid graph, of the wrong scope, with its checksum
            shutil.copy(hnsw / "b.bin", snap)
            shutil.copy(hnsw / "b.bin.sha256", check)
            return
        if kind.startswith("checksum"):
            return
        snap.write_bytes(bytes(data))

    return damage


_CASES = [
    *[("truncate", s) for s in range(5)],
    *[("zero-fill", s) for s in range(3)],
    *[("header-write", s) for s in range(8)],
    *[("random-write", s) for s in range(16)],
    ("append", 0),
    ("checksum-missing", 0),
    ("checksum-garbage", 0),
    ("checksum-of-another", 0),
    ("snapshot-missing", 0),
    ("other-scope-copied", 0),
]


@pytest.mark.parametrize(("kind", "seed"), _CASES, ids=[f"{k}-{s}" for k, s in _CASES])
def test_a_corrupt_snapshot_is_rebuilt_from_sqlite(
    tmp_path: Path, pristine: tuple[Path, Path, dict[str, Any]], kind: str, seed: int
) -> None:
    source, vec_file, expected = pristine
    store = tmp_path / "store"
    shutil.copytree(source, store)
    _corruption(kind, seed)(store / "hnsw")
    child = subprocess.run(
        [sys.executable, "-c", _REOPEN, str(store), str(vec_file)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert child.returncode == 0, f"reopening crashed ({child.returncode}): {child.stderr[-2000:]}"
    report = json.loads(child.stdout)
    assert report["count"] == 2 * _PER_SCOPE
    assert report["found"] == expected
    # A missing snapshot is rebuilt without complaint; a valid snapshot in the wrong place
    # passes its checksum and is reconciled with SQLite like any snapshot.
    if kind not in ("snapshot-missing", "other-scope-copied"):
        assert any("a.bin" in w and "rebuilding" in w for w in report["warnings"])
    assert not any("b.bin" in w for w in report["warnings"])
    assert snapshots.verified(store / "hnsw" / "a.bin")  # healed: rewritten on close


def test_snapshots_carry_a_checksum_checked_before_loading(tmp_path: Path) -> None:
    snap = tmp_path / "x.bin"
    snapshots.write(snap, lambda p: p.write_bytes(b"graph bytes"))
    assert snapshots.verified(snap)
    assert json.loads(snapshots.sidecar(snap).read_text())["size"] == len(b"graph bytes")
    assert not list(tmp_path.glob("*.partial"))
    snap.write_bytes(b"graph bytez")
    opened: list[Path] = []
    assert snapshots.load(snap, opened.append) is None
    assert opened == []  # never handed to the loader
    snapshots.remove(snap)
    assert not snap.exists()
    assert not snapshots.sidecar(snap).exists()
    assert not snapshots.verified(snap)


# -- a corrupt SQLite file ----------------------------------------------------------------------


def _filled_store(path: Path, n: int = 240) -> np.ndarray:
    vecs = _unit(5, n)
    with EmbeddedBackend(path) as b:
        b.bind(FP)
        padding = "x" * 300  # a few entries per page: the table spans many pages
        for scope in ("a", "b"):
            entries = [_entry(i, scope, response={"answer": i, "pad": padding}) for i in range(n)]
            b.put_many(entries, list(vecs))
    return vecs


def _pages(db: Path, names: tuple[str, ...]) -> tuple[int, list[int]]:
    """The page size, and the pages of the named tables and indexes."""
    with closing(sqlite3.connect(db)) as raw:
        size = int(raw.execute("PRAGMA page_size").fetchone()[0])
        marks = ",".join("?" * len(names))
        rows = raw.execute(f"SELECT pageno FROM dbstat WHERE name IN ({marks})", names)
        return size, sorted(int(r[0]) for r in rows)


def _garble(db: Path, pages: list[int], page_size: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    with open(db, "r+b") as f:
        for page in pages:
            f.seek((page - 1) * page_size)
            f.write(rng.integers(0, 256, page_size).astype(np.uint8).tobytes())


def _every_operation(
    path: Path, vecs: np.ndarray, holder: list[EmbeddedBackend]
) -> Iterator[Callable[[], object]]:
    """Open, bind, and read everything back, one step at a time (the backend goes in holder)."""

    def open_and_bind() -> None:
        holder.append(EmbeddedBackend(path))
        holder[0].bind(FP)

    yield open_and_bind
    for scope in ("a", "b"):
        for i in range(len(vecs)):
            yield lambda s=scope, i=i: holder[0].get_exact(s, f"t{i}", 0.0)
            yield lambda s=scope, i=i: holder[0].search(s, vecs[i], 3, 0.0)
    yield lambda: holder[0].evict(0)
    yield lambda: holder[0].close()


@pytest.mark.parametrize("seed", range(4))
def test_a_corrupt_sqlite_page_is_a_clear_backend_error(tmp_path: Path, seed: int) -> None:
    store = tmp_path / "store"
    vecs = _filled_store(store)
    db = store / "entries.sqlite3"
    page_size = _pages(db, ("entries",))[0]
    pages = db.stat().st_size // page_size
    _garble(db, [pages // 2 + seed], page_size, seed)  # one page in the middle
    errors: list[BackendError] = []
    opened: list[EmbeddedBackend] = []
    for step in _every_operation(store, vecs, opened):
        try:
            step()
        except BackendError as e:  # anything else fails the test
            errors.append(e)
            break
    for backend in opened:
        with suppress(BackendError):
            backend.close()
    assert errors, "the corrupt page was never noticed"
    assert str(db) in str(errors[0])
    assert "move" in str(errors[0])
    # The advice works: with the file moved aside, the directory opens empty.
    for name in ("entries.sqlite3", "entries.sqlite3-wal", "entries.sqlite3-shm"):
        if (store / name).exists():
            (store / name).rename(tmp_path / name)
    with EmbeddedBackend(store) as fresh:
        fresh.bind(FP)
        assert fresh.count() == 0
        assert fresh.search("a", vecs[0], 3, 0.0) == []


def test_a_file_that_is_not_a_database_is_refused_at_open(tmp_path: Path) -> None:
    _filled_store(tmp_path, n=10)
    db = tmp_path / "entries.sqlite3"
    _garble(db, [1], 4096, seed=3)  # the header page
    with pytest.raises(BackendError, match="corrupt") as refused:
        EmbeddedBackend(tmp_path)
    assert str(db) in str(refused.value)
    db.rename(tmp_path / "aside.sqlite3")
    with EmbeddedBackend(tmp_path) as fresh:  # the failed open released the directory
        fresh.bind(FP)
        assert fresh.count() == 0


_ENTRY_PAGES = ("entries", "sqlite_autoindex_entries_1", "entries_lru", "entries_expiry")


def test_a_store_corrupt_at_start_up_fails_construction_loudly(tmp_path: Path) -> None:
    store = tmp_path / "store"
    _filled_store(store, n=40)
    db = store / "entries.sqlite3"
    page_size, pages = _pages(db, _ENTRY_PAGES)
    _garble(db, pages, page_size, seed=1)
    with pytest.raises(BackendError, match="move") as failed:
        SemanticCache(embedder=HashingEmbedder(dim=DIM), backend=EmbeddedBackend(store))
    assert str(db) in str(failed.value)


def test_a_page_gone_bad_while_serving_is_a_miss(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = tmp_path / "store"
    policy = CachePolicy(min_similarity=0.8)
    calls: list[str] = []

    def upstream(prompt: str) -> str:
        calls.append(prompt)
        return f"fresh answer to {prompt}"

    with SemanticCache(
        embedder=HashingEmbedder(dim=DIM), backend=EmbeddedBackend(store), policy=policy
    ) as first:
        ask = cached(first, request=PromptRequest(), namespace="n")(upstream)
        for i in range(40):
            ask(f"question number {i}")
    db = store / "entries.sqlite3"
    page_size, pages = _pages(db, _ENTRY_PAGES)
    cache = SemanticCache(
        embedder=HashingEmbedder(dim=DIM), backend=EmbeddedBackend(store), policy=policy
    )
    try:
        ask = cached(cache, request=PromptRequest(), namespace="n")(upstream)
        assert ask("question number 3") == "fresh answer to question number 3"  # a hit
        assert len(calls) == 40
        _garble(db, pages, page_size, seed=2)  # the disk goes bad under the running cache
        with closing(sqlite3.connect(db, isolation_level=None)) as other:
            # Another connection's write: the cache's connection drops its page cache and
            # reads the damaged pages from the file from now on.
            other.execute("INSERT OR REPLACE INTO meta VALUES ('probe', '1')")
        with caplog.at_level(logging.WARNING, logger="semcache"):
            assert ask("question number 5") == "fresh answer to question number 5"
        assert len(calls) == 41  # a miss: upstream answered
        assert any(str(db) in r.getMessage() for r in caplog.records)
    finally:
        cache.close()
