"""The embedded retrieval store, the indexer and the hybrid retriever (real hnswlib, bm25s)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from semcache.errors import ConfigurationError, FingerprintMismatchError, InvalidInputError
from semcache.retrieval import (
    RRF,
    BinaryRescored,
    ChunkingConfig,
    Document,
    EmbeddedRetrievalStore,
    EmbeddedStoreConfig,
    Float32Search,
    HybridRetriever,
    Indexer,
    Int8Rescored,
    RecursiveSplitter,
    ScoredChunk,
    VectorCache,
)
from semcache.testing import HashingEmbedder

DOCS = [
    Document(id="cats", title="Cats", text="Cats are small carnivorous mammals that purr."),
    Document(id="dogs", title="Dogs", text="Dogs are loyal animals that bark at strangers."),
    Document(id="rust", title="Rust", text="Rust is a systems programming language."),
    Document(id="tea", title="Tea", text="Green tea is brewed from unoxidised leaves."),
]
ALL_INDEXES = EmbeddedStoreConfig(float32_index=True, binary_index=True)


def _indexer(store: EmbeddedRetrievalStore, embedder: HashingEmbedder) -> Indexer:
    splitter = RecursiveSplitter(ChunkingConfig(max_tokens=32, overlap_tokens=4))
    return Indexer(store, embedder, splitter)


def test_upsert_skips_unchanged_replaces_changed_and_deletes(tmp_path: Path) -> None:
    emb = HashingEmbedder()
    with EmbeddedRetrievalStore(tmp_path / "s", ALL_INDEXES) as store:
        indexer = _indexer(store, emb)
        first = indexer.upsert(DOCS)
        assert first.added == ("cats", "dogs", "rust", "tea")
        assert store.count() == 4
        changed = Document(id="rust", title="Rust", text="Rust also means iron oxide corrosion.")
        report = indexer.upsert([*DOCS[:2], changed])
        assert report.unchanged == ("cats", "dogs")
        assert report.replaced == ("rust",)
        assert store.count() == 4
        assert store.doc_hashes(["rust"]) == {"rust": changed.hash}
        assert store.chunks(["rust#0"])["rust#0"].text == changed.text
        assert [c for c, _ in store.sparse("corrosion", 5)] == ["rust#0"]
        assert store.sparse("programming", 5) == []  # the old text is gone from BM25
        for mode in (Float32Search(), Int8Rescored(), BinaryRescored()):
            hits = store.dense(emb.embed(["iron oxide corrosion"])[0], 4, mode)
            assert hits[0][0] == "rust#0"
            assert len({c for c, _ in hits}) == len(hits) == 4
        assert indexer.delete(["tea", "nope"]) == ["tea"]
        assert store.count() == 3
        assert "tea" not in store.doc_hashes()
        vec = emb.embed(["green tea leaves"])[0]
        for mode in (Float32Search(), Int8Rescored(), BinaryRescored()):
            assert all(not c.startswith("tea") for c, _ in store.dense(vec, 10, mode))


def test_long_documents_are_chunked_and_replaced_whole(tmp_path: Path) -> None:
    emb = HashingEmbedder()
    long_text = " ".join(f"Sentence number {i} talks about topic {i}." for i in range(30))
    with EmbeddedRetrievalStore(None) as store:
        indexer = _indexer(store, emb)
        report = indexer.upsert([Document(id="long", text=long_text)])
        assert report.chunks == store.count() > 3
        indexer.upsert([Document(id="long", text="Now it is short.")])
        assert store.count() == 1
        assert set(store.chunks([f"long#{i}" for i in range(10)])) == {"long#0"}


def test_store_reopens_with_the_same_results(tmp_path: Path) -> None:
    emb = HashingEmbedder()
    path = tmp_path / "s"
    vec = emb.embed(["loyal dogs bark"])[0]
    with EmbeddedRetrievalStore(path, ALL_INDEXES) as store:
        _indexer(store, emb).upsert(DOCS)
        before = {m: store.dense(vec, 3, m) for m in (Float32Search(), Int8Rescored())}
        sparse = store.sparse("loyal dogs", 3)
    assert (path / "float32.hnsw").exists()
    assert (path / "int8.i8").stat().st_size == 4 * emb.fingerprint.dim
    with EmbeddedRetrievalStore(path, ALL_INDEXES) as store:
        store.bind(emb.fingerprint)
        assert store.count() == 4
        for mode, hits in before.items():
            again = store.dense(vec, 3, mode)
            assert again[0][0] == hits[0][0] == "dogs#0"
            assert [s for _, s in again] == pytest.approx([s for _, s in hits])
        assert store.sparse("loyal dogs", 3) == sparse
    with pytest.raises(FingerprintMismatchError):
        EmbeddedRetrievalStore(path).bind(HashingEmbedder(dim=32, name="other").fingerprint)


def test_quantizers_recalibrate_as_the_corpus_grows(tmp_path: Path) -> None:
    emb = HashingEmbedder()
    more = [Document(id=f"d{i}", text=f"document {i} about subject {i % 7}") for i in range(40)]
    with EmbeddedRetrievalStore(tmp_path / "s") as store:
        indexer = _indexer(store, emb)
        indexer.upsert(more[:2])
        assert store.calibrated_on == 2
        indexer.upsert(more[2:3])  # 3 < 2 * 2: appended with the current ranges
        assert store.calibrated_on == 2
        indexer.upsert(more[3:])
        assert store.calibrated_on == 40
        vec = emb.embed([more[25].text])[0]
        assert store.dense(vec, 1, Int8Rescored())[0][0] == "d25#0"


def test_modes_need_their_index() -> None:
    emb = HashingEmbedder()
    with EmbeddedRetrievalStore(None) as store:  # compact index only (the default)
        _indexer(store, emb).upsert(DOCS)
        vec = emb.embed(["tea"])[0]
        with pytest.raises(ConfigurationError, match="float32_index"):
            store.dense(vec, 3, Float32Search())
        with pytest.raises(ConfigurationError, match="binary_index"):
            store.dense(vec, 3, BinaryRescored())
        with pytest.raises(InvalidInputError):
            store.dense(np.ones(64, dtype=np.float32), 3, Int8Rescored())  # not unit length
    with pytest.raises(ConfigurationError):
        EmbeddedStoreConfig(compact_fraction=None)


class _Reverse:
    """A real (if silly) reranker: reverses the fused order and rescores by position."""

    def rerank(self, query: str, hits: Sequence[ScoredChunk]) -> list[ScoredChunk]:
        return [ScoredChunk(h.chunk, float(i)) for i, h in enumerate(reversed(hits))]


def test_hybrid_retriever_fuses_and_applies_the_reranker() -> None:
    emb = HashingEmbedder()
    with EmbeddedRetrievalStore(None, ALL_INDEXES) as store:
        _indexer(store, emb).upsert(DOCS)
        retriever = HybridRetriever(store, emb, fusion=RRF(k=60), candidates=4)
        hits = retriever.retrieve("systems programming language", k=2)
        assert hits[0].chunk.doc_id == "rust"
        sparse, dense = retriever.rankings("systems programming language", 4)
        expected = RRF(k=60).fuse([sparse, dense])[:2]
        assert [(h.chunk.id, h.score) for h in hits] == expected
        reranked = HybridRetriever(store, emb, candidates=4, reranker=_Reverse())
        out = reranked.retrieve("systems programming language", k=2)
        full = [h.chunk.id for h in retriever.retrieve("systems programming language", k=4)]
        assert [h.chunk.id for h in out] == full[::-1][:2]
        dense_only = HybridRetriever(store, emb, sparse_enabled=False, dense=Float32Search())
        assert dense_only.retrieve("tea leaves", 1)[0].chunk.doc_id == "tea"
        assert asyncio.run(retriever.aretrieve("systems programming language", 2)) == hits
        with pytest.raises(InvalidInputError):
            retriever.retrieve("  ")


def test_vector_cache_reuses_embeddings(tmp_path: Path) -> None:
    emb = HashingEmbedder()
    cache = VectorCache(tmp_path / "vc")
    with EmbeddedRetrievalStore(None) as store:
        indexer = Indexer(store, emb, vector_cache=cache)
        texts = ["a b c", "d e f"]
        first = indexer.embed(texts)
        calls = emb.calls
        assert np.array_equal(indexer.embed(texts), first)
        assert emb.calls == calls  # served from the cache
        assert len(list((tmp_path / "vc").glob("*.npy"))) == 1


def test_a_failed_write_keeps_the_vector_files_aligned(tmp_path: Path) -> None:
    from semcache.errors import BackendError

    emb = HashingEmbedder()
    with EmbeddedRetrievalStore(tmp_path / "s", ALL_INDEXES) as store:
        indexer = _indexer(store, emb)
        indexer.upsert(DOCS[:2])
        bad = Document(id="bad", text="not stored", metadata={"tags": {"a set"}})  # not JSON
        with pytest.raises(BackendError, match="cannot store chunks"):
            indexer.upsert([bad])
        indexer.upsert(DOCS[2:])
        assert store.count() == 4
        for doc in DOCS:
            vec = emb.embed([f"{doc.title}\n{doc.text}"])[0]
            for mode in (Float32Search(), Int8Rescored(), BinaryRescored()):
                assert store.dense(vec, 1, mode)[0][0] == f"{doc.id}#0"
