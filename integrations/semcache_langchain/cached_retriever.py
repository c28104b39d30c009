"""A semantic cache in front of any LangChain retriever."""

from __future__ import annotations

from typing import Any

from langchain_core.callbacks import (
    AsyncCallbackManagerForRetrieverRun,
    CallbackManagerForRetrieverRun,
)
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever
from pydantic import ConfigDict

from semcache._failopen import MISSING, Bypass, FailOpen, may_store, result_of, vector_of
from semcache.cache import SemanticCache
from semcache.errors import NotCacheableError
from semcache.keys import Scope
from semcache_langchain.codec import documents_from_json, documents_to_json

__all__ = ["CachedRetriever"]


class CachedRetriever(BaseRetriever):
    """Serves a paraphrase of an earlier query with that query's documents.

    On a hit the wrapped retriever is not called. On a miss it is, and its documents (page
    content, metadata, id; metadata must be JSON) are stored. Keyword arguments given to
    ``invoke`` (``k=3``, a filter...) are part of the scope, as is ``scope_name``.

    Attributes:
        retriever: the retriever to put the cache in front of.
        cache: the semantic cache.
        scope_name: names the wrapped retriever's index in the scope (default: its class
            name); change it when the index is rebuilt with other content, or clear the cache.
        namespace: separates applications sharing one store.
        min_similarity: the threshold; the cache policy's when ``None``.
        ttl: seconds an entry lives; the policy's when ``None``.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    retriever: BaseRetriever
    cache: SemanticCache
    scope_name: str | None = None
    namespace: str = ""
    min_similarity: float | None = None
    ttl: float | None = None

    def _scope(self, kwargs: dict[str, Any]) -> Scope:
        label = self.scope_name or type(self.retriever).__name__
        return Scope(model=f"retriever:{label}", params=kwargs, namespace=self.namespace)

    @property
    def _fo(self) -> FailOpen:
        return FailOpen(self.cache)

    def _encode(self, docs: list[Document]) -> list[dict[str, Any]] | None:
        try:
            return documents_to_json(docs)
        except NotCacheableError:
            self._fo.refused("not_serialisable")
            return None

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun, **kwargs: Any
    ) -> list[Document]:
        fo = self._fo
        q = fo.query(query, self._scope(kwargs))
        found = None if isinstance(q, Bypass) else fo.find(q, min_similarity=self.min_similarity)
        if (hit := fo.decode(result_of(found), documents_from_json)) is not MISSING:
            return hit
        with self.cache.telemetry.stage("retrieval"):
            docs = self.retriever.invoke(
                query, config={"callbacks": run_manager.get_child()}, **kwargs
            )
        if may_store(q, found) and (value := self._encode(docs)) is not None:
            fo.put(q, value, ttl=self.ttl, vector=vector_of(found))
        return docs

    async def _aget_relevant_documents(
        self, query: str, *, run_manager: AsyncCallbackManagerForRetrieverRun, **kwargs: Any
    ) -> list[Document]:
        fo = self._fo
        q = fo.query(query, self._scope(kwargs))
        found = (
            None if isinstance(q, Bypass) else await fo.afind(q, min_similarity=self.min_similarity)
        )
        if (hit := await fo.adecode(result_of(found), documents_from_json)) is not MISSING:
            return hit
        with self.cache.telemetry.stage("retrieval"):
            docs = await self.retriever.ainvoke(
                query, config={"callbacks": run_manager.get_child()}, **kwargs
            )
        if may_store(q, found) and (value := self._encode(docs)) is not None:
            await fo.aput(q, value, ttl=self.ttl, vector=vector_of(found))
        return docs
