"""The RAG middleware: answers cached with their sources, invalidated when a source changes."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from semcache import CachePolicy, MemoryBackend, SemanticCache
from semcache.errors import ConfigurationError
from semcache.retrieval import (
    ChunkingConfig,
    CitationIndex,
    Document,
    EmbeddedRetrievalStore,
    HybridRetriever,
    Indexer,
    RagCache,
    RecursiveSplitter,
    ScoredChunk,
)
from semcache.retrieval.rag import SOURCES_KEY, stale_documents
from semcache.testing import HashingEmbedder

DOCS = [
    Document(id="paris", text="Paris is the capital of France."),
    Document(id="berlin", text="Berlin is the capital of Germany."),
    Document(id="tea", text="Green tea is brewed from unoxidised leaves."),
]


class Setup:
    def __init__(self, tmp_path: Path) -> None:
        emb = HashingEmbedder()
        self.store = EmbeddedRetrievalStore(tmp_path / "store")
        splitter = RecursiveSplitter(ChunkingConfig(max_tokens=64))
        self.indexer = Indexer(self.store, emb, splitter)
        self.indexer.upsert(DOCS)
        self.cache = SemanticCache(
            embedder=emb, backend=MemoryBackend(), policy=CachePolicy(min_similarity=0.95)
        )
        self.rag = RagCache(
            cache=self.cache,
            retriever=HybridRetriever(self.store, emb, candidates=3),
            indexer=self.indexer,
            k=1,
            citations=CitationIndex(tmp_path / "citations.sqlite3"),
        )
        self.calls: list[tuple[str, list[str]]] = []

    def llm(self, question: str, context: list[ScoredChunk]) -> str:
        """Stands in for the LLM: answers with the text of the retrieved context."""
        self.calls.append((question, [h.chunk.doc_id for h in context]))
        return " ".join(h.chunk.text for h in context)


@pytest.fixture
def setup(tmp_path: Path) -> Setup:
    return Setup(tmp_path)


def test_miss_retrieves_and_stores_then_hits(setup: Setup) -> None:
    answer = setup.rag(setup.llm)
    assert answer("What is the capital of France?") == "Paris is the capital of France."
    assert setup.calls == [("What is the capital of France?", ["paris"])]
    again = setup.rag.answer("what is the capital of france?", setup.llm)
    assert again.cached is True
    assert again.answer == "Paris is the capital of France."
    assert again.sources == [
        {
            "chunk": "paris#0",
            "chunk_hash": again.sources[0]["chunk_hash"],
            "doc": "paris",
            "doc_hash": DOCS[0].hash,
        }
    ]
    assert len(setup.calls) == 1
    entry = setup.cache.backend.get(again.entry_id or "")
    assert entry is not None
    assert entry.metadata[SOURCES_KEY] == again.sources


def test_changing_a_cited_document_invalidates_its_answers(setup: Setup) -> None:
    answer = setup.rag(setup.llm)
    answer("What is the capital of France?")
    answer("What is the capital of Germany?")
    assert setup.cache.backend.count() == 2
    _, dropped = setup.rag.upsert([Document(id="tea", text="Black tea is fully oxidised.")])
    assert dropped == 0  # nobody cited "tea"
    moved = Document(id="paris", text="Paris is the capital of France, on the Seine.")
    report, dropped = setup.rag.upsert([moved])
    assert report.replaced == ("paris",)
    assert dropped == 1
    assert setup.cache.backend.count() == 1
    assert answer("What is the capital of France?") == moved.text
    assert len(setup.calls) == 3  # France asked again; Germany still cached
    answer("What is the capital of Germany?")
    assert len(setup.calls) == 3


def test_deleting_a_cited_document_invalidates_its_answers(setup: Setup) -> None:
    answer = setup.rag(setup.llm)
    answer("What is the capital of Germany?")
    removed, dropped = setup.rag.delete(["berlin"])
    assert (removed, dropped) == (["berlin"], 1)
    assert setup.cache.backend.count() == 0


def test_a_change_made_behind_the_caches_back_is_caught_at_lookup(setup: Setup) -> None:
    answer = setup.rag(setup.llm)
    answer("What is the capital of France?")
    # Changed through the indexer directly: the citation index is not told.
    setup.indexer.upsert([Document(id="paris", text="Paris is the capital of France (updated).")])
    result = setup.rag.answer("What is the capital of France?", setup.llm)
    assert result.cached is False
    assert result.answer == "Paris is the capital of France (updated)."
    assert setup.cache.backend.count() == 1  # the stale answer was replaced, not kept
    assert setup.cache.info().misses == 2


def test_async_answer_functions(setup: Setup) -> None:
    async def llm(question: str, context: list[ScoredChunk]) -> str:
        await asyncio.sleep(0)
        return setup.llm(question, context)

    answer = setup.rag(llm)
    assert asyncio.run(answer("What is the capital of Germany?")) == DOCS[1].text
    assert asyncio.run(answer("What is the capital of Germany?")) == DOCS[1].text
    assert len(setup.calls) == 1


def test_stale_documents_is_a_pure_comparison() -> None:
    sources = [
        {"doc": "a", "doc_hash": "1"},
        {"doc": "b", "doc_hash": "2"},
        {"doc": "a", "doc_hash": "1"},
    ]
    assert stale_documents(sources, {"a": "1", "b": "2"}) == []
    assert stale_documents(sources, {"a": "9"}) == ["a", "b"]


def test_upsert_needs_an_indexer(setup: Setup) -> None:
    bare = RagCache(cache=setup.cache, retriever=setup.rag.retriever)
    with pytest.raises(ConfigurationError, match="indexer"):
        bare.upsert(DOCS)
