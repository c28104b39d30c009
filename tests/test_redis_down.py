"""With Redis gone, every request path degrades and none raises to the caller.

A Redis Stack server of the test's own holds both the cache and the retrieval store; it is
killed mid-test. The decorator answers from the LLM, the RAG cache answers without context
(``degraded``), the LangChain retriever returns no documents, and each failure is counted.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from redis_server import RedisStackServer

from semcache import CachePolicy, RedisBackend, SemanticCache, cached
from semcache.backends.breaker import BreakerParams
from semcache.backends.redis import RedisConnection
from semcache.errors import BackendUnavailableError
from semcache.retrieval import Document, HybridRetriever, Indexer, RagCache, ScoredChunk
from semcache.retrieval.redis_store import RedisRetrievalStore
from semcache.testing import HashingEmbedder
from semcache_langchain import SemcacheRetriever

pytestmark = [
    pytest.mark.redis,
    pytest.mark.filterwarnings("ignore::DeprecationWarning:langchain_core.*"),
]

FAST = RedisConnection(socket_timeout=0.25, connect_timeout=0.25)
DOCS = [
    Document(id="tea", text="Green tea is brewed from unoxidised leaves."),
    Document(id="paris", text="Paris is the capital of France."),
]


class Stack:
    """A cache and a retrieval store on one Redis server that the test can kill."""

    def __init__(self, tmp_path: Path) -> None:
        self.server = RedisStackServer(tmp_path / "redis")
        self.server.start()
        self.embedder = HashingEmbedder()
        breaker = BreakerParams(failure_threshold=2, reset_seconds=60)
        self.cache = SemanticCache(
            embedder=self.embedder,
            backend=RedisBackend(self.server.url, name="down", connection=FAST, breaker=breaker),
            policy=CachePolicy(min_similarity=0.9),
        )
        self.store = RedisRetrievalStore.from_url(
            self.server.url, name="down", connection=FAST, breaker=breaker
        )
        Indexer(self.store, self.embedder).upsert(DOCS)
        self.retriever = HybridRetriever(self.store, self.embedder)

    def kill(self) -> None:
        self.server.stop(kill=True)

    def close(self) -> None:
        self.cache.close()
        self.store.close()
        self.server.stop()


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    s = Stack(tmp_path)
    yield s
    s.close()


def test_decorated_calls_answer_from_the_llm(stack: Stack) -> None:
    calls: list[str] = []

    @cached(stack.cache)
    def chat(*, model: str, messages: list[dict[str, str]]) -> str:
        calls.append(messages[-1]["content"])
        return f"answer {len(calls)}"

    ask = [{"role": "user", "content": "how is green tea made"}]
    assert chat(model="m", messages=ask) == "answer 1"
    assert chat(model="m", messages=ask) == "answer 1"  # a hit
    stack.kill()
    for n in (2, 3, 4):
        assert chat(model="m", messages=ask) == f"answer {n}"
    # Each failed lookup counts once; its store is skipped (the backend is known to be down).
    assert stack.cache.info().errors == 3


def test_rag_answers_without_context_when_retrieval_is_down(stack: Stack) -> None:
    seen: list[list[ScoredChunk]] = []

    def llm(question: str, context: list[ScoredChunk]) -> str:
        seen.append(context)
        return f"answer with {len(context)} chunks"

    rag = RagCache(cache=stack.cache, retriever=stack.retriever, k=1)
    first = rag.answer("how is green tea made", llm)
    assert not first.cached
    assert [h.chunk.doc_id for h in seen[0]] == ["tea"]
    stack.kill()
    down = rag.answer("how is green tea made", llm)
    assert down.degraded
    assert not down.cached
    assert down.answer == "answer with 0 chunks"
    assert seen[-1] == []
    assert stack.cache.info().errors == 2  # the lookup and the retrieval


def test_langchain_retriever_returns_nothing_when_the_store_is_down(stack: Stack) -> None:
    retriever = SemcacheRetriever(retriever=stack.retriever, k=1)
    assert [d.metadata["doc_id"] for d in retriever.invoke("green tea leaves")] == ["tea"]
    stack.kill()
    assert retriever.invoke("green tea leaves") == []
    with pytest.raises(BackendUnavailableError):  # the direct API raises; invoke degrades
        retriever.search("green tea leaves")


async def test_async_paths_degrade_too(stack: Stack) -> None:
    retriever = SemcacheRetriever(retriever=stack.retriever, k=1)
    rag = RagCache(cache=stack.cache, retriever=stack.retriever, k=1)

    async def llm(question: str, context: list[ScoredChunk]) -> Any:
        return len(context)

    assert (await rag.aanswer("how is green tea made", llm)).answer == 1
    stack.kill()
    assert await retriever.ainvoke("green tea leaves") == []
    down = await rag.aanswer("how is green tea made", llm)
    assert down.degraded
    assert down.answer == 0
