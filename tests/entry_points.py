"""Every way into the cache, sync and async, behind one small interface for parametrised tests.

Each entry point wraps a real :class:`SemanticCache` the way a user would (the decorator, the
LiteLLM plugin as LiteLLM calls it, LangChain's LLM cache on a chat model, the cached retriever,
the RAG cache) and counts the calls that reach its upstream (the LLM or the wrapped retriever).
``ask(text)`` returns what the caller gets; ``last`` is what the upstream last returned.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from langchain_core.callbacks import CallbackManagerForRetrieverRun
from langchain_core.documents import Document as LcDocument
from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.retrievers import BaseRetriever

from semcache import SemanticCache, cached
from semcache.embedders.base import Embedder
from semcache.retrieval import (
    Document,
    EmbeddedRetrievalStore,
    HybridRetriever,
    Indexer,
    RagCache,
    ScoredChunk,
)
from semcache_langchain import CachedRetriever, SemanticLLMCache
from semcache_litellm.cache import SemcacheLiteLLMCache
from semcache_litellm.settings import LiteLLMCacheSettings

Ask = Callable[[str], Any] | Callable[[str], Awaitable[Any]]


class EntryPoint:
    """One way into the cache. Subclasses set :attr:`ask` (sync or async)."""

    name = ""
    is_async = False
    #: failures one request counts, by fault, where not 1: when the lookup fails as the store
    #: would (backend down, embedder raising), 2 where the host calls lookup and store
    #: separately (each fails); elsewhere the store is skipped.
    failures: dict[str, int] = {}  # noqa: RUF012 - read only

    def __init__(self, cache: SemanticCache, tmp_path: Path) -> None:
        self.cache = cache
        self.upstream = 0
        self.last: Any = None

    def answer(self) -> str:
        self.upstream += 1
        return f"answer number {self.upstream}"

    def same(self, got: Any) -> bool:
        """Whether the caller got what the upstream last returned."""
        return bool(got == self.last)


# -- the decorator --------------------------------------------------------------------------------


def _messages(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


class DecoratorSync(EntryPoint):
    name = "decorator"

    def __init__(self, cache: SemanticCache, tmp_path: Path) -> None:
        super().__init__(cache, tmp_path)

        @cached(cache, coalesce=False)
        def chat(*, model: str, messages: list[dict[str, str]]) -> dict[str, str]:
            self.last = {"content": self.answer()}
            return self.last

        self.fn = chat

    def ask(self, text: str) -> Any:
        return self.fn(model="gpt-x", messages=_messages(text))


class DecoratorAsync(EntryPoint):
    name = "decorator-async"
    is_async = True

    def __init__(self, cache: SemanticCache, tmp_path: Path) -> None:
        super().__init__(cache, tmp_path)

        @cached(cache, coalesce=False)
        async def chat(*, model: str, messages: list[dict[str, str]]) -> dict[str, str]:
            self.last = {"content": self.answer()}
            return self.last

        self.fn = chat

    async def ask(self, text: str) -> Any:
        return await self.fn(model="gpt-x", messages=_messages(text))


class DecoratorStreamAsync(EntryPoint):
    name = "decorator-stream-async"
    is_async = True

    def __init__(self, cache: SemanticCache, tmp_path: Path) -> None:
        super().__init__(cache, tmp_path)

        @cached(cache, coalesce=False)
        async def chat(*, model: str, messages: list[dict[str, str]]) -> Any:
            self.last = [f"{word} " for word in self.answer().split()]
            for chunk in self.last:
                yield chunk

        self.fn = chat

    async def ask(self, text: str) -> Any:
        return [chunk async for chunk in self.fn(model="gpt-x", messages=_messages(text))]


# -- LiteLLM: the plugin's methods, called as LiteLLM calls them around a completion ---------------


def _completion(content: str) -> dict[str, Any]:
    return {
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "model": "gpt-x",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8},
    }


class LiteLLMSync(EntryPoint):
    name = "litellm"
    failures = {"backend_down": 2, "embedder_raises": 2}  # noqa: RUF012

    def __init__(self, cache: SemanticCache, tmp_path: Path) -> None:
        super().__init__(cache, tmp_path)
        self.plugin = SemcacheLiteLLMCache(cache, LiteLLMCacheSettings(path=str(tmp_path)))

    def _request(self, text: str) -> dict[str, Any]:
        return {"model": "gpt-x", "messages": _messages(text), "litellm_call_id": str(uuid.uuid4())}

    def _stored(self, response: dict[str, Any]) -> dict[str, Any]:
        return {"timestamp": 0.0, "response": json.dumps(response)}

    def ask(self, text: str) -> Any:
        request = self._request(text)
        hit = self.plugin.get_cache("litellm-key", **request)
        if hit is not None:
            return hit["response"]
        self.last = _completion(self.answer())
        self.plugin.set_cache("litellm-key", self._stored(self.last), **request)
        return self.last


class LiteLLMAsync(LiteLLMSync):
    name = "litellm-async"
    is_async = True

    async def ask(self, text: str) -> Any:  # type: ignore[override]
        request = self._request(text)
        hit = await self.plugin.async_get_cache("litellm-key", **request)
        if hit is not None:
            return hit["response"]
        self.last = _completion(self.answer())
        await self.plugin.async_set_cache("litellm-key", self._stored(self.last), **request)
        return self.last


# -- LangChain ------------------------------------------------------------------------------------


class CountingChat(BaseChatModel):
    """A chat model whose answers number its calls (the LangChain upstream)."""

    owner: Any

    @property
    def _llm_type(self) -> str:
        return "counting-chat"

    def _generate(self, messages: list[BaseMessage], *args: Any, **kwargs: Any) -> ChatResult:
        self.owner.last = self.owner.answer()
        return ChatResult(generations=[ChatGeneration(message=AIMessage(self.owner.last))])


class LangChainLLMCache(EntryPoint):
    name = "langchain-llm-cache"
    failures = {"backend_down": 2, "embedder_raises": 2}  # noqa: RUF012

    def __init__(self, cache: SemanticCache, tmp_path: Path) -> None:
        super().__init__(cache, tmp_path)
        self.model = CountingChat(owner=self, cache=SemanticLLMCache(cache))

    def ask(self, text: str) -> Any:
        return self.model.invoke(text).content


class LangChainLLMCacheAsync(LangChainLLMCache):
    name = "langchain-llm-cache-async"
    is_async = True

    async def ask(self, text: str) -> Any:  # type: ignore[override]
        return (await self.model.ainvoke(text)).content


class CountingRetriever(BaseRetriever):
    """A retriever whose one document numbers its calls (the cached retriever's upstream)."""

    owner: Any

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun
    ) -> list[LcDocument]:
        self.owner.last = self.owner.answer()
        return [LcDocument(page_content=self.owner.last, metadata={"n": self.owner.upstream})]


class LangChainRetriever(EntryPoint):
    name = "langchain-cached-retriever"

    def __init__(self, cache: SemanticCache, tmp_path: Path) -> None:
        super().__init__(cache, tmp_path)
        self.retriever = CachedRetriever(retriever=CountingRetriever(owner=self), cache=cache)

    def same(self, got: Any) -> bool:
        return [d.page_content for d in got] == [self.last]

    def ask(self, text: str) -> Any:
        return self.retriever.invoke(text)


class LangChainRetrieverAsync(LangChainRetriever):
    name = "langchain-cached-retriever-async"
    is_async = True

    async def ask(self, text: str) -> Any:  # type: ignore[override]
        return await self.retriever.ainvoke(text)


# -- RAG ------------------------------------------------------------------------------------------


class Rag(EntryPoint):
    name = "rag"
    #: the retriever embeds the question with the same model: retrieval fails too (and the
    #: answer function runs without context)
    failures = {"embedder_raises": 2}  # noqa: RUF012

    def __init__(self, cache: SemanticCache, tmp_path: Path) -> None:
        super().__init__(cache, tmp_path)
        embedder: Embedder = cache.embedder
        store = EmbeddedRetrievalStore(tmp_path / "docs")
        Indexer(store, embedder).upsert(
            [Document(id="tea", text="Green tea is brewed from unoxidised leaves.")]
        )
        self.rag = RagCache(cache=cache, retriever=HybridRetriever(store, embedder), k=1)

    def llm(self, question: str, context: list[ScoredChunk]) -> str:
        self.last = self.answer()
        return self.last

    def ask(self, text: str) -> Any:
        return self.rag.answer(text, self.llm).answer


class RagAsync(Rag):
    name = "rag-async"
    is_async = True

    async def allm(self, question: str, context: list[ScoredChunk]) -> str:
        return self.llm(question, context)

    async def ask(self, text: str) -> Any:  # type: ignore[override]
        return (await self.rag.aanswer(text, self.allm)).answer


ENTRY_POINTS: list[type[EntryPoint]] = [
    DecoratorSync,
    DecoratorAsync,
    DecoratorStreamAsync,
    LiteLLMSync,
    LiteLLMAsync,
    LangChainLLMCache,
    LangChainLLMCacheAsync,
    LangChainRetriever,
    LangChainRetrieverAsync,
    Rag,
    RagAsync,
]
