"""Ingestion: documents in, chunks embedded in batches (with a progress bar) and indexed.

Re-ingesting a document whose content hash changed replaces its chunks; an unchanged one is
skipped; deleting removes its chunks.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from semcache.embedders.base import Embedder
from semcache.embedders.shipped import warn_if_tuned_for_prompts
from semcache.errors import ConfigurationError
from semcache.retrieval.base import RetrievalStore
from semcache.retrieval.chunking import RecursiveSplitter
from semcache.retrieval.documents import Chunk, Document
from semcache.retrieval.vector_cache import VectorCache

if TYPE_CHECKING:
    from numpy.typing import NDArray

__all__ = ["Indexer", "IngestReport"]


@dataclass(frozen=True, slots=True, kw_only=True)
class IngestReport:
    """What one :meth:`Indexer.upsert` did, by document id."""

    added: tuple[str, ...] = ()
    replaced: tuple[str, ...] = ()
    unchanged: tuple[str, ...] = ()
    chunks: int = 0

    @property
    def changed(self) -> tuple[str, ...]:
        """Documents whose previous version (and anything derived from it) is gone."""
        return self.replaced


class Indexer:
    """Chunks, embeds and stores documents.

    Args:
        store: where chunks go; bound to the embedder's fingerprint here.
        embedder: embeds chunk texts (title header included).
        splitter: the chunker; by default token-aware with the embedder's tokenizer and window.
        batch_size: texts per ``embed`` call (one progress-bar step).
        window: documents per store write (bounds memory on large corpora).
        progress: show tqdm bars on stderr.
        vector_cache: reuse embeddings computed before for the same model and texts.
    """

    def __init__(
        self,
        store: RetrievalStore,
        embedder: Embedder,
        splitter: RecursiveSplitter | None = None,
        *,
        batch_size: int = 64,
        window: int = 20_000,
        progress: bool = False,
        vector_cache: VectorCache | None = None,
    ) -> None:
        if batch_size < 1 or window < 1:
            raise ConfigurationError(
                f"batch_size and window must be >= 1, got {batch_size} and {window}"
            )
        self.store = store
        self.embedder = embedder
        self.splitter = splitter or RecursiveSplitter.for_embedder(embedder)
        self.batch_size = batch_size
        self.window = window
        self.progress = progress
        self.vector_cache = vector_cache
        store.bind(embedder.fingerprint)
        warn_if_tuned_for_prompts(embedder.fingerprint, "the Indexer")

    def upsert(self, documents: Iterable[Document]) -> IngestReport:
        """Index new and changed documents; skip those whose content hash is already stored."""
        latest: dict[str, Document] = {}
        for doc in documents:
            latest[doc.id] = doc
        docs = list(latest.values())
        current = self.store.doc_hashes([d.id for d in docs])
        todo = [d for d in docs if current.get(d.id) != d.hash]
        added = tuple(d.id for d in todo if d.id not in current)
        replaced = tuple(d.id for d in todo if d.id in current)
        unchanged = tuple(d.id for d in docs if current.get(d.id) == d.hash)
        total = 0
        for start in range(0, len(todo), self.window):
            part = todo[start : start + self.window]
            chunks = self.chunk(part)
            vectors = self.embed([c.indexed_text for c in chunks])
            self.store.replace(part, chunks, vectors)
            total += len(chunks)
        return IngestReport(added=added, replaced=replaced, unchanged=unchanged, chunks=total)

    def delete(self, doc_ids: Iterable[str]) -> list[str]:
        """Remove documents; returns the ids that existed."""
        ids = list(dict.fromkeys(doc_ids))
        existing = [i for i in ids if i in self.store.doc_hashes(ids)]
        self.store.delete(existing)
        return existing

    def chunk(self, docs: Sequence[Document]) -> list[Chunk]:
        from tqdm import tqdm

        out: list[Chunk] = []
        for doc in tqdm(docs, desc="chunk", unit="doc", file=sys.stderr, disable=not self.progress):
            out.extend(self.splitter.chunk(doc))
        return out

    def embed(self, texts: Sequence[str]) -> NDArray[np.float32]:
        """Embed in batches, through the vector cache when one is set."""
        dim = self.embedder.fingerprint.dim
        if not texts:
            return np.empty((0, dim), dtype=np.float32)
        key = None
        if self.vector_cache is not None:
            key = VectorCache.key(self.embedder.fingerprint, texts)
            cached = self.vector_cache.load(key, len(texts))
            if cached is not None:
                return cached
        from tqdm import tqdm

        out = np.empty((len(texts), dim), dtype=np.float32)
        # Longest first, so each batch pads to similar lengths; rows go back to input order.
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        steps = range(0, len(texts), self.batch_size)
        bar = tqdm(steps, desc="embed", unit="batch", file=sys.stderr, disable=not self.progress)
        for start in bar:
            rows = order[start : start + self.batch_size]
            out[rows] = self.embedder.embed([texts[i] for i in rows])
        if self.vector_cache is not None and key is not None:
            self.vector_cache.save(key, out)
        return out
