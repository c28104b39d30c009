"""BM25 persisted with the embedded retrieval store (real SQLite, real bm25s).

Whether BM25 was rebuilt is read from ``store.bm25_builds`` (counts builds from SQLite; a load
of ``bm25.npz`` does not count) and from the file's bytes, never from a timing.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from semcache.retrieval import (
    ChunkingConfig,
    Document,
    EmbeddedRetrievalStore,
    EmbeddedStoreConfig,
    Indexer,
    RecursiveSplitter,
)
from semcache.retrieval.bm25 import Bm25Params
from semcache.testing import HashingEmbedder

DOCS = [
    Document(id="cats", title="Cats", text="Cats are small carnivorous mammals that purr."),
    Document(id="dogs", title="Dogs", text="Dogs are loyal animals that bark at strangers."),
    Document(id="rust", title="Rust", text="Rust is a systems programming language."),
]


def _ingest(path: Path, docs: list[Document]) -> list[tuple[str, float]]:
    """Fill a store, run one sparse query (builds and saves BM25), close; that query's result."""
    with EmbeddedRetrievalStore(path) as store:
        splitter = RecursiveSplitter(ChunkingConfig(max_tokens=32, overlap_tokens=4))
        Indexer(store, HashingEmbedder(), splitter).upsert(docs)
        result = store.sparse("loyal dogs bark", 3)
        assert store.bm25_builds == 1
        return result


def test_restart_loads_bm25_instead_of_rebuilding(tmp_path: Path) -> None:
    before = _ingest(tmp_path / "s", DOCS)
    saved = (tmp_path / "s" / "bm25.npz").read_bytes()
    with EmbeddedRetrievalStore(tmp_path / "s") as store:
        assert store.sparse("loyal dogs bark", 3) == before
        assert store.bm25_builds == 0  # loaded, not rebuilt
    assert (tmp_path / "s" / "bm25.npz").read_bytes() == saved  # nor rewritten


def test_ingest_then_close_saves_bm25_for_the_next_start(tmp_path: Path) -> None:
    _ingest(tmp_path / "s", DOCS[:2])
    with EmbeddedRetrievalStore(tmp_path / "s") as store:
        splitter = RecursiveSplitter(ChunkingConfig(max_tokens=32, overlap_tokens=4))
        Indexer(store, HashingEmbedder(), splitter).upsert(DOCS)  # a change, no sparse query
    with EmbeddedRetrievalStore(tmp_path / "s") as store:
        assert [c for c, _ in store.sparse("programming language", 3)] == ["rust#0"]
        assert store.bm25_builds == 0  # close() saved the changed index


@pytest.mark.parametrize("damage", ["flip", "truncate", "sidecar"])
def test_corrupt_bm25_file_is_rebuilt_and_logged(
    tmp_path: Path, damage: str, caplog: pytest.LogCaptureFixture
) -> None:
    before = _ingest(tmp_path / "s", DOCS)
    path = tmp_path / "s" / "bm25.npz"
    if damage == "flip":
        raw = bytearray(path.read_bytes())
        raw[len(raw) // 2] ^= 0xFF
        path.write_bytes(bytes(raw))
    elif damage == "truncate":
        path.write_bytes(path.read_bytes()[:100])
    else:
        (tmp_path / "s" / "bm25.npz.sha256").write_text("{not json")
    with (
        caplog.at_level(logging.WARNING, logger="semcache"),
        EmbeddedRetrievalStore(tmp_path / "s") as store,
    ):
        assert store.sparse("loyal dogs bark", 3) == before
        assert store.bm25_builds == 1
    assert any("bm25.npz" in r.getMessage() for r in caplog.records)
    with EmbeddedRetrievalStore(tmp_path / "s") as store:  # healed: the rebuild was saved
        assert store.sparse("loyal dogs bark", 3) == before
        assert store.bm25_builds == 0


def test_stale_bm25_file_is_not_trusted(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A file from before a write (as after a crash before the save) is rebuilt, not served."""
    _ingest(tmp_path / "s", DOCS[:2])
    old = (tmp_path / "s" / "bm25.npz").read_bytes(), (tmp_path / "s" / "bm25.npz.sha256")
    old_sidecar = old[1].read_bytes()
    _ingest(tmp_path / "s", DOCS)  # adds "rust"; generation moves on
    (tmp_path / "s" / "bm25.npz").write_bytes(old[0])  # put the old, intact pair back
    old[1].write_bytes(old_sidecar)
    with (
        caplog.at_level(logging.INFO, logger="semcache"),
        EmbeddedRetrievalStore(tmp_path / "s") as store,
    ):
        assert [c for c, _ in store.sparse("programming language", 3)] == ["rust#0"]
        assert store.bm25_builds == 1
    assert any("generation" in r.getMessage() for r in caplog.records)


def test_other_bm25_params_are_not_trusted(tmp_path: Path) -> None:
    _ingest(tmp_path / "s", DOCS)
    config = EmbeddedStoreConfig(bm25=Bm25Params(k1=0.9))
    with EmbeddedRetrievalStore(tmp_path / "s", config) as store:
        assert store.sparse("loyal dogs bark", 3)
        assert store.bm25_builds == 1


def test_in_memory_store_writes_no_file(tmp_path: Path) -> None:
    with EmbeddedRetrievalStore(None) as store:
        splitter = RecursiveSplitter(ChunkingConfig(max_tokens=32, overlap_tokens=4))
        Indexer(store, HashingEmbedder(), splitter).upsert(DOCS)
        assert store.sparse("cats purr", 2)[0][0] == "cats#0"
        assert store.bm25_builds == 1
