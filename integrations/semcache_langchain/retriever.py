"""A LangChain retriever over semcache's hybrid (BM25 + dense) retriever."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from langchain_core.callbacks import (
    AsyncCallbackManagerForRetrieverRun,
    CallbackManagerForRetrieverRun,
)
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever
from pydantic import ConfigDict, field_validator

from semcache._failopen import Failures
from semcache.errors import ConfigurationError, InvalidInputError
from semcache.retrieval.documents import Chunk, ScoredChunk, content_hash
from semcache.retrieval.documents import Document as SourceDocument
from semcache.retrieval.retriever import HybridRetriever

if TYPE_CHECKING:
    from semcache.embedders.base import Embedder

__all__ = ["SEARCH_TYPES", "SemcacheRetriever"]

#: ``hybrid``: BM25 and dense rankings fused (the retriever's fusion and reranker);
#: ``similarity``: dense only (cosine); ``bm25``: keywords only.
SEARCH_TYPES = ("hybrid", "similarity", "bm25")


def _matches(metadata: Mapping[str, Any], where: Mapping[str, Any]) -> bool:
    """Every key equals the filter's value, or is one of them when the filter gives a list."""
    for key, want in where.items():
        have = metadata.get(key)
        if isinstance(want, list | tuple | set | frozenset):
            if have not in want:
                return False
        elif have != want:
            return False
    return True


def _search_type(value: str) -> str:
    if value not in SEARCH_TYPES:
        raise ConfigurationError(f"search_type must be one of {SEARCH_TYPES}, got {value!r}")
    return value


def _document(hit: ScoredChunk) -> Document:
    chunk = hit.chunk
    metadata = {**chunk.metadata, "doc_id": chunk.doc_id, "chunk_id": chunk.id, "score": hit.score}
    if chunk.title:
        metadata["title"] = chunk.title
    return Document(page_content=chunk.text, metadata=metadata, id=chunk.id)


class SemcacheRetriever(BaseRetriever):
    """LangChain's retriever interface over a :class:`semcache.retrieval.HybridRetriever`.

    ``k``, ``search_type`` and ``filter`` are set on the retriever and can be overridden per
    call: ``retriever.invoke("query", k=2, filter={"source": "faq"})``. Each document's
    metadata is its source metadata plus ``doc_id``, ``chunk_id``, ``title`` and ``score``.
    If the store fails (Redis down, say), ``invoke`` returns no documents: the failure is logged
    and counted in the ``semcache.errors`` metric (stage ``retrieval``); :meth:`search` raises.

    Attributes:
        retriever: the hybrid retriever (its store, embedder, fusion, reranker).
        k: documents returned.
        search_type: one of :data:`SEARCH_TYPES`.
        filter: metadata equality filter (a list value means "any of"); applied to the best
            ``fetch_k`` candidates, so fewer than ``k`` documents may come back.
        fetch_k: candidates fetched before filtering.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    retriever: HybridRetriever
    k: int = 4
    search_type: str = "hybrid"
    filter: dict[str, Any] | None = None
    fetch_k: int = 50

    @field_validator("k", "fetch_k")
    @classmethod
    def _positive(cls, value: int) -> int:
        if value < 1:
            raise ConfigurationError(f"k and fetch_k must be >= 1, got {value}")
        return value

    @field_validator("search_type")
    @classmethod
    def _known(cls, value: str) -> str:
        return _search_type(value)

    @classmethod
    def from_documents(
        cls,
        documents: Iterable[Document],
        embedder: Embedder,
        *,
        path: str | Path | None = None,
        **kwargs: Any,
    ) -> SemcacheRetriever:
        """Index LangChain documents in a new embedded store (``path=None``: in memory).

        Documents without an ``id`` get one from their content.
        """
        from semcache.retrieval.ingest import Indexer
        from semcache.retrieval.store import EmbeddedRetrievalStore

        store = EmbeddedRetrievalStore(path)
        sources = [
            SourceDocument(
                id=d.id or content_hash(d.page_content), text=d.page_content, metadata=d.metadata
            )
            for d in documents
        ]
        Indexer(store, embedder).upsert(sources)
        return cls(retriever=HybridRetriever(store, embedder), **kwargs)

    def search(
        self,
        query: str,
        *,
        k: int | None = None,
        search_type: str | None = None,
        filter: Mapping[str, Any] | None = None,
    ) -> list[ScoredChunk]:
        """The scored chunks behind :meth:`invoke`; raises if the store fails."""
        return self._hits(query, *self._plan(query, k, search_type, filter))

    def _plan(
        self,
        query: str,
        k: int | None,
        search_type: str | None,
        filter: Mapping[str, Any] | None,
    ) -> tuple[int, str, Mapping[str, Any] | None]:
        """``k``, the search type and the filter in force; a malformed call raises here."""
        k = self.k if k is None else k
        kind = _search_type(search_type or self.search_type)
        if not isinstance(query, str) or not query.strip():
            raise InvalidInputError("a retrieval query must be a non-empty string")
        if k < 1:
            raise InvalidInputError(f"k must be >= 1, got {k}")
        return k, kind, self.filter if filter is None else filter

    def _hits(
        self, query: str, k: int, kind: str, where: Mapping[str, Any] | None
    ) -> list[ScoredChunk]:
        pool = max(k, self.fetch_k) if where else k
        hybrid = self.retriever
        if kind == "hybrid":
            hits = hybrid.retrieve(query, pool)
        else:
            ranking = (
                hybrid.store.sparse(query, pool)
                if kind == "bm25"
                else hybrid.store.dense(hybrid.embed(query), pool, hybrid.dense_mode)
            )
            chunks: dict[str, Chunk] = hybrid.store.chunks(cid for cid, _ in ranking)
            hits = [ScoredChunk(chunks[cid], score) for cid, score in ranking if cid in chunks]
        if where:
            hits = [h for h in hits if _matches(h.chunk.metadata, where)]
        return hits[:k]

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun, **kwargs: Any
    ) -> list[Document]:
        plan = self._plan(query, **_options(kwargs))
        with Failures(self.retriever.telemetry).trap(None, "retrieval"):
            return [_document(h) for h in self._hits(query, *plan)]
        return []  # the store failed: no documents (recorded as a retrieval error)

    async def _aget_relevant_documents(
        self, query: str, *, run_manager: AsyncCallbackManagerForRetrieverRun, **kwargs: Any
    ) -> list[Document]:
        plan = self._plan(query, **_options(kwargs))
        with Failures(self.retriever.telemetry).trap(None, "retrieval"):
            hits = await asyncio.to_thread(self._hits, query, *plan)
            return [_document(h) for h in hits]
        return []


def _options(kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """The per-call options ``invoke`` passes on (``k``, ``search_type``, ``filter``)."""
    unknown = set(kwargs) - {"k", "search_type", "filter"}
    if unknown:
        raise InvalidInputError(f"unknown retriever options: {sorted(unknown)}")
    return {"k": None, "search_type": None, "filter": None, **kwargs}
