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

from semcache._failopen import MISSING, Bypass, FailOpen, Lookup, may_store, vector_of
from semcache.cache import SemanticCache
from semcache.errors import BackendError, ConfigurationError, NotCacheableError
from semcache.keys import Scope
from semcache.llm.genai import report_response
from semcache.llm.responses import JsonCodec
from semcache.models import Entry
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

#: The answer function's span: a chat call to a model the RAG cache does not know.
_CHAT = {"gen_ai.operation.name": "chat"}


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
    """An answer, whether it came from the cache, and the sources it was built from.

    ``degraded`` is set when retrieval failed (the store was unreachable, say): the answer
    function then got no context, and the answer was not cached.
    """

    answer: Any
    cached: bool
    sources: list[dict[str, str]]
    entry_id: str | None = None
    degraded: bool = False


class RagCache:
    """Wraps a RAG answer function ``fn(question, context) -> answer`` with a semantic cache.

    Args:
        cache: where answers are cached (its policy decides hits).
        retriever: finds context on a miss.
        indexer: used by :meth:`upsert` / :meth:`delete` to change documents (and invalidate).
        k: chunks of context per question.
        scope: the cache scope of answers (include the LLM and prompt template in it).
        citations: the document -> entry index; in memory if omitted.

    Every cache or retrieval failure fails open (:mod:`semcache._failopen`): a lookup failure is
    a miss, a store failure leaves the answer uncached, and a retrieval failure calls ``fn`` with
    no context (``RagAnswer.degraded``). Errors of ``fn`` itself propagate. Answers must be JSON
    values to be cached.
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
        self._fo = FailOpen(cache)
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
        q = self._fo.query(question, self.scope)
        found = None if isinstance(q, Bypass) else self._fo.find(q, check=self._stale)
        if (cached := _served(found)) is not None:
            return cached
        vector = self._reusable(found)
        with self._fo.failures.trap(None, "retrieval") as trap:
            hits = self.retriever.retrieve(question, self.k, vector=vector)
        if trap.failed:
            return RagAnswer(
                answer=self._call(fn, question, []), cached=False, sources=[], degraded=True
            )
        result = self._call(fn, question, hits)
        sources = retrieval_fingerprint(hits)
        entry = None
        if may_store(q, found) and (value := self._storable(result)) is not MISSING:
            entry = self._fo.put(q, value, metadata={SOURCES_KEY: sources}, vector=vector_of(found))
            if entry is not None:
                self._cite(entry.id, sources)
        return RagAnswer(answer=result, cached=False, sources=sources, entry_id=_id(entry))

    async def aanswer(
        self, question: str, fn: Callable[[str, list[ScoredChunk]], Awaitable[Any]]
    ) -> RagAnswer:
        """:meth:`answer` for an async answer function; no step blocks the event loop (the
        retrieval store and the citation index run in worker threads)."""
        q = self._fo.query(question, self.scope)
        found = None if isinstance(q, Bypass) else await self._fo.afind(q, check=self._stale)
        if (cached := _served(found)) is not None:
            return cached
        vector = self._reusable(found)
        with self._fo.failures.trap(None, "retrieval") as trap:
            hits = await self.retriever.aretrieve(question, self.k, vector=vector)
        if trap.failed:
            answer = await self._acall(fn, question, [])
            return RagAnswer(answer=answer, cached=False, sources=[], degraded=True)
        result = await self._acall(fn, question, hits)
        sources = retrieval_fingerprint(hits)
        entry = None
        if may_store(q, found) and (value := self._storable(result)) is not MISSING:
            meta = {SOURCES_KEY: sources}
            entry = await self._fo.aput(q, value, metadata=meta, vector=vector_of(found))
            if entry is not None:
                await asyncio.to_thread(self._cite, entry.id, sources)
        return RagAnswer(answer=result, cached=False, sources=sources, entry_id=_id(entry))

    # -- the answer function: the upstream call ---------------------------------------------------

    def _call(self, fn: AnswerFn, question: str, hits: list[ScoredChunk]) -> Any:
        with self.cache.telemetry.upstream(_CHAT) as up:
            result = fn(question, hits)
            report_response(up, result)
            return result

    async def _acall(
        self,
        fn: Callable[[str, list[ScoredChunk]], Awaitable[Any]],
        question: str,
        hits: list[ScoredChunk],
    ) -> Any:
        with self.cache.telemetry.upstream(_CHAT) as up:
            result = await fn(question, hits)
            report_response(up, result)
            return result

    # -- steps shared by both paths -------------------------------------------------------------

    def _stale(self, entry: Entry) -> str | None:
        """Refuse (and delete) a cached answer citing a document that changed or went."""
        sources = entry.metadata.get(SOURCES_KEY, [])
        current = self.retriever.store.doc_hashes(cited_documents(sources))
        if not stale_documents(sources, current):
            return None
        self._drop([entry.id])
        return "stale_sources"

    def _reusable(self, found: Lookup | None) -> Any:
        """The question's vector for the retriever, if it embeds with the cache's model."""
        return vector_of(found) if self._same_model else None

    def _storable(self, result: Any) -> Any:
        """The answer if it can be stored as JSON, else ``MISSING`` (a counted refusal)."""
        try:
            return JsonCodec().encode(result)
        except NotCacheableError as e:
            log.info("semcache: RAG answer not cached: %s", e)
            self._fo.refused("not_serialisable")
            return MISSING

    def _cite(self, entry_id: str, sources: list[dict[str, str]]) -> None:
        """Record the answer's citations; without them it could outlive its documents, so an
        answer whose citations cannot be recorded is deleted."""
        with self._fo.failures.trap(None, "store") as trap:
            self.citations.add(entry_id, cited_documents(sources))
        if trap.failed:
            self.cache._discard(entry_id)

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


def _served(found: Lookup | None) -> RagAnswer | None:
    """The cached answer of a hit, with the sources it was built from."""
    if found is None or found.result is None or (entry := found.result.entry) is None:
        return None
    sources = list(entry.metadata.get(SOURCES_KEY, []))
    return RagAnswer(answer=entry.response, cached=True, sources=sources, entry_id=entry.id)


def _id(entry: Entry | None) -> str | None:
    return None if entry is None else entry.id
