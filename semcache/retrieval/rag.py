"""RAG behind the cache: on a miss, retrieve context, call the answer function, store the answer
with the retrieval fingerprint; when a cited document changes or goes, its answers go too.

Two mechanisms keep cached answers honest:

* a :class:`CitationIndex` (document id -> cache entry ids) lets :meth:`RagCache.upsert` and
  :meth:`RagCache.delete` delete every answer that cited a changed document, at once;
* every hit is checked against the store's current content hashes, so an answer citing a
  document changed behind the cache's back (another process, a lost index) is never served.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import sqlite3
import threading
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from semcache.cache import SemanticCache
from semcache.errors import BackendError, ConfigurationError, SemcacheError
from semcache.keys import Scope
from semcache.retrieval.documents import Document, ScoredChunk
from semcache.retrieval.ingest import Indexer, IngestReport
from semcache.retrieval.retriever import HybridRetriever

__all__ = [
    "SOURCES_KEY",
    "CitationIndex",
    "RagAnswer",
    "RagCache",
    "retrieval_fingerprint",
    "stale_documents",
]

log = logging.getLogger("semcache")

SOURCES_KEY = "rag_sources"
"""The entry-metadata key holding the retrieval fingerprint."""

AnswerFn = Callable[[str, list[ScoredChunk]], Any]


def retrieval_fingerprint(hits: Sequence[ScoredChunk]) -> list[dict[str, str]]:
    """The chunks an answer was built from: ids and content hashes, JSON-ready."""
    return [
        {
            "chunk": h.chunk.id,
            "chunk_hash": h.chunk.hash,
            "doc": h.chunk.doc_id,
            "doc_hash": h.chunk.doc_hash,
        }
        for h in hits
    ]


def cited_documents(sources: Sequence[Mapping[str, Any]]) -> list[str]:
    return list(dict.fromkeys(str(s["doc"]) for s in sources))


def stale_documents(sources: Sequence[Mapping[str, Any]], current: Mapping[str, str]) -> list[str]:
    """Cited documents whose stored hash differs from the cited one, or that are gone."""
    stale = [str(s["doc"]) for s in sources if current.get(str(s["doc"])) != s.get("doc_hash")]
    return list(dict.fromkeys(stale))


class CitationIndex:
    """Which cache entries cite which documents, in SQLite (a file, or memory with ``None``)."""

    def __init__(self, path: str | Path | None = None) -> None:
        self._lock = threading.Lock()
        target = str(path) if path is not None else ":memory:"
        try:
            self._db = sqlite3.connect(target, check_same_thread=False, isolation_level=None)
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS citations (doc_id TEXT NOT NULL, "
                "entry_id TEXT NOT NULL, PRIMARY KEY (doc_id, entry_id))"
            )
            self._db.execute("CREATE INDEX IF NOT EXISTS by_entry ON citations (entry_id)")
        except sqlite3.DatabaseError as e:
            raise BackendError(f"cannot open the citation index at {target}: {e}") from e

    def add(self, entry_id: str, doc_ids: Iterable[str]) -> None:
        with self._lock:
            self._db.executemany(
                "INSERT OR IGNORE INTO citations VALUES (?, ?)", [(d, entry_id) for d in doc_ids]
            )

    def citing(self, doc_ids: Iterable[str]) -> list[str]:
        """Entry ids citing any of ``doc_ids``."""
        ids = list(dict.fromkeys(doc_ids))
        out: dict[str, None] = {}
        with self._lock:
            for start in range(0, len(ids), 500):
                part = ids[start : start + 500]
                marks = ",".join("?" * len(part))
                for (entry_id,) in self._db.execute(
                    f"SELECT DISTINCT entry_id FROM citations WHERE doc_id IN ({marks})", part
                ):
                    out.setdefault(entry_id, None)
        return list(out)

    def forget(self, entry_ids: Iterable[str]) -> None:
        with self._lock:
            self._db.executemany(
                "DELETE FROM citations WHERE entry_id = ?", [(e,) for e in entry_ids]
            )

    def close(self) -> None:
        with self._lock:
            self._db.close()


@dataclass(frozen=True, slots=True, kw_only=True)
class RagAnswer:
    """An answer, whether it came from the cache, and the sources it was built from."""

    answer: Any
    cached: bool
    sources: list[dict[str, str]]
    entry_id: str | None = None


class RagCache:
    """Wraps a RAG answer function ``fn(question, context) -> answer`` with a semantic cache.

    Args:
        cache: where answers are cached (its policy decides hits).
        retriever: finds context on a miss.
        indexer: used by :meth:`upsert` / :meth:`delete` to change documents (and invalidate).
        k: chunks of context per question.
        scope: the cache scope of answers (include the LLM and prompt template in it).
        citations: the document -> entry index; in memory if omitted.

    Lookup and store failures fail open (logged; the answer function runs uncached).
    """

    def __init__(
        self,
        *,
        cache: SemanticCache,
        retriever: HybridRetriever,
        indexer: Indexer | None = None,
        k: int = 5,
        scope: Scope | None = None,
        citations: CitationIndex | None = None,
    ) -> None:
        self.cache = cache
        self.retriever = retriever
        self.indexer = indexer
        self.k = k
        self.scope = scope or Scope(namespace="rag")
        self.citations = citations or CitationIndex()
        self._same_model = cache.embedder.fingerprint.key() == retriever.embedder.fingerprint.key()

    # -- the decorator -------------------------------------------------------------------------

    def __call__(self, fn: AnswerFn) -> Callable[[str], Any]:
        """Decorate ``fn(question, context)``; the result takes only the question."""
        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def awrapper(question: str) -> Any:
                return (await self.aanswer(question, fn)).answer

            return awrapper

        @functools.wraps(fn)
        def wrapper(question: str) -> Any:
            return self.answer(question, fn).answer

        return wrapper

    def answer(self, question: str, fn: AnswerFn) -> RagAnswer:
        """A cached answer with current sources, or retrieve, call ``fn`` and store."""
        cached, vector = self._lookup(question)
        if cached is not None:
            return cached
        hits = self.retriever.retrieve(question, self.k, vector=vector)
        result = fn(question, hits)
        return self._store(question, result, hits, vector)

    async def aanswer(
        self, question: str, fn: Callable[[str, list[ScoredChunk]], Awaitable[Any]]
    ) -> RagAnswer:
        """:meth:`answer` for an async answer function; blocking steps run in threads."""
        cached, vector = await asyncio.to_thread(self._lookup, question)
        if cached is not None:
            return cached
        hits = await self.retriever.aretrieve(question, self.k, vector=vector)
        result = await fn(question, hits)
        return await asyncio.to_thread(self._store, question, result, hits, vector)

    # -- steps shared by both paths -------------------------------------------------------------

    def _lookup(self, question: str) -> tuple[RagAnswer | None, Any]:
        """A servable cached answer (or ``None``) and the question's vector, if computed."""
        vector = None
        try:
            q = self.cache.query(question, self.scope)
            with self.cache.telemetry.span("semcache.rag.lookup") as span:
                result, vector = self.cache.find(q)
                entry = result.entry
                if entry is not None:
                    sources = list(entry.metadata.get(SOURCES_KEY, []))
                    current = self.retriever.store.doc_hashes(cited_documents(sources))
                    if stale_documents(sources, current):
                        self._drop([entry.id])
                        result = type(result)(
                            entry=None,
                            tier=None,
                            similarity=result.similarity,
                            threshold=result.threshold,
                            reason="stale_sources",
                        )
                self.cache.record_result(span, result)
        except SemcacheError as e:
            log.warning("semcache: RAG cache lookup failed, answering uncached: %s", e)
            return None, vector
        if result.entry is None:
            return None, vector if self._same_model else None
        return RagAnswer(
            answer=result.entry.response, cached=True, sources=sources, entry_id=result.entry.id
        ), None

    def _store(self, question: str, result: Any, hits: list[ScoredChunk], vector: Any) -> RagAnswer:
        sources = retrieval_fingerprint(hits)
        try:
            entry = self.cache.store(
                question,
                result,
                self.scope,
                metadata={SOURCES_KEY: sources},
                vector=vector if self._same_model else None,
            )
            self.citations.add(entry.id, cited_documents(sources))
        except (SemcacheError, TypeError, ValueError) as e:
            log.warning("semcache: could not cache a RAG answer: %s", e)
            return RagAnswer(answer=result, cached=False, sources=sources)
        return RagAnswer(answer=result, cached=False, sources=sources, entry_id=entry.id)

    # -- document changes ----------------------------------------------------------------------

    def _drop(self, entry_ids: Sequence[str]) -> int:
        removed = sum(1 for e in entry_ids if self.cache.delete(e))
        self.citations.forget(entry_ids)
        return removed

    def invalidate(self, doc_ids: Iterable[str]) -> int:
        """Delete every cached answer citing these documents; returns how many."""
        return self._drop(self.citations.citing(doc_ids))

    def upsert(self, documents: Iterable[Document]) -> tuple[IngestReport, int]:
        """Index documents; answers citing a changed one are deleted. Returns the ingest report
        and how many cached answers were invalidated."""
        report = self._indexer().upsert(documents)
        return report, self.invalidate(report.replaced)

    def delete(self, doc_ids: Iterable[str]) -> tuple[list[str], int]:
        """Remove documents and the answers citing them; returns (removed ids, answers deleted)."""
        removed = self._indexer().delete(doc_ids)
        return removed, self.invalidate(removed)

    def _indexer(self) -> Indexer:
        if self.indexer is None:
            raise ConfigurationError("RagCache was built without an indexer; pass indexer=")
        return self.indexer
