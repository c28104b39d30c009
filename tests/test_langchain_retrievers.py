"""semcache_langchain retrievers: the standard retriever suite, and the cache wrapper."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("langchain_core")
pytest.importorskip("langchain_tests")
pytest.importorskip("bm25s")

from langchain_core.callbacks import CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever
from langchain_tests.integration_tests import RetrieversIntegrationTests
from pydantic import ValidationError

from semcache import CachePolicy, EmbeddedBackend, SemanticCache, SentenceTransformerEmbedder
from semcache_langchain import CachedRetriever, SemcacheRetriever

pytestmark = pytest.mark.model

FACTS = [
    ("The Eiffel Tower is in Paris, the capital of France.", "travel"),
    ("Mount Fuji is the highest mountain in Japan.", "travel"),
    ("Python lists are mutable sequences; tuples are immutable.", "code"),
    ("A hash map gives average constant-time lookups by key.", "code"),
    ("Photosynthesis turns light, water and carbon dioxide into sugar.", "science"),
    ("Water boils at 100 degrees Celsius at sea level.", "science"),
]


def _documents() -> list[Document]:
    return [
        Document(page_content=text, metadata={"topic": topic}, id=f"fact-{i}")
        for i, (text, topic) in enumerate(FACTS)
    ]


@pytest.fixture(scope="module")
def hybrid_retriever(st_embedder: SentenceTransformerEmbedder) -> SemcacheRetriever:
    return SemcacheRetriever.from_documents(_documents(), st_embedder)


class TestSemcacheRetrieverStandard(RetrieversIntegrationTests):
    _base: SemcacheRetriever

    @pytest.fixture(autouse=True)
    def _built(self, hybrid_retriever: SemcacheRetriever) -> None:
        type(self)._base = hybrid_retriever

    @property
    def retriever_constructor(self) -> type[SemcacheRetriever]:
        return SemcacheRetriever

    @property
    def retriever_constructor_params(self) -> dict[str, Any]:
        return {"retriever": self._base.retriever}

    @property
    def retriever_query_example(self) -> str:
        return "Which city is the Eiffel Tower in?"


def test_search_types_and_filters(hybrid_retriever: SemcacheRetriever) -> None:
    query = "Which city is the Eiffel Tower in?"
    for search_type in ("hybrid", "similarity", "bm25"):
        docs = hybrid_retriever.invoke(query, k=2, search_type=search_type)
        assert docs[0].id == "fact-0#0", search_type
        assert docs[0].metadata["topic"] == "travel"
        assert docs[0].metadata["doc_id"] == "fact-0"
    science = hybrid_retriever.invoke(query, k=3, filter={"topic": "science"})
    assert [d.metadata["topic"] for d in science] == ["science", "science"]
    either = hybrid_retriever.invoke(query, k=6, filter={"topic": ["code", "science"]})
    assert {d.metadata["topic"] for d in either} == {"code", "science"}


async def test_async_matches_sync(hybrid_retriever: SemcacheRetriever) -> None:
    query = "immutable sequences in Python"
    sync = hybrid_retriever.invoke(query, k=3, filter={"topic": "code"})
    assert await hybrid_retriever.ainvoke(query, k=3, filter={"topic": "code"}) == sync


def test_settings_are_validated(hybrid_retriever: SemcacheRetriever) -> None:
    with pytest.raises(ValidationError, match="search_type must be one of"):
        SemcacheRetriever(retriever=hybrid_retriever.retriever, search_type="mmr")
    with pytest.raises(ValidationError, match="k and fetch_k must be >= 1"):
        SemcacheRetriever(retriever=hybrid_retriever.retriever, k=0)


# -- the cache in front of any retriever -------------------------------------------------------


class KeywordRetriever(BaseRetriever):
    """A small real retriever: documents sharing the most words with the query. Counts calls."""

    docs: list[Document]
    calls: int = 0

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun, k: int = 2
    ) -> list[Document]:
        self.calls += 1
        words = set(query.lower().split())
        ranked = sorted(self.docs, key=lambda d: -len(words & set(d.page_content.lower().split())))
        return ranked[:k]


@pytest.fixture
def semantic(st_embedder: SentenceTransformerEmbedder, tmp_path: Path) -> Iterator[SemanticCache]:
    # Paraphrases here score 0.91-0.94: below the 0.95 default, so the adapter tests use 0.9.
    with SemanticCache(
        embedder=st_embedder,
        backend=EmbeddedBackend(tmp_path / "c"),
        policy=CachePolicy(min_similarity=0.9),
    ) as cache:
        yield cache


def test_cached_retriever_hit_skips_the_wrapped_retriever(semantic: SemanticCache) -> None:
    inner = KeywordRetriever(docs=_documents())
    cached = CachedRetriever(retriever=inner, cache=semantic)
    first = cached.invoke("What is the capital of France?")
    assert inner.calls == 1
    again = cached.invoke("what's the capital city of France?")
    assert inner.calls == 1
    assert again == first
    assert [d.id for d in again] == [d.id for d in first]
    cached.invoke("what's the capital city of France?", k=1)  # k is part of the scope
    assert inner.calls == 2
    assert semantic.info().hits == 1


async def test_cached_retriever_async(semantic: SemanticCache) -> None:
    inner = KeywordRetriever(docs=_documents())
    cached = CachedRetriever(retriever=inner, cache=semantic, scope_name="facts-v1")
    first = await cached.ainvoke("how high is Mount Fuji")
    assert await cached.ainvoke("What is the height of Mount Fuji?") == first
    assert inner.calls == 1
    other_index = CachedRetriever(retriever=inner, cache=semantic, scope_name="facts-v2")
    await other_index.ainvoke("how high is Mount Fuji")
    assert inner.calls == 2


def test_cached_retriever_fails_open(semantic: SemanticCache, tmp_path: Path) -> None:
    import sqlite3

    inner = KeywordRetriever(docs=_documents())
    cached = CachedRetriever(retriever=inner, cache=semantic)
    with sqlite3.connect(tmp_path / "c" / "entries.sqlite3") as db:
        db.execute("DROP TABLE entries")
    docs = cached.invoke("what is the capital of France")
    assert inner.calls == 1
    assert docs[0].id == "fact-0"
    assert semantic.info().errors == 2  # the lookup and the store
