"""Hybrid retrieval: dense and BM25 candidates, fused, optionally reranked."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from semcache.embedders.base import Embedder
from semcache.embedders.shipped import warn_if_tuned_for_prompts
from semcache.errors import ConfigurationError, InvalidInputError
from semcache.retrieval.adaptive import AgreementFusion
from semcache.retrieval.base import DenseMode, Int8Rescored, RetrievalStore
from semcache.retrieval.documents import ScoredChunk
from semcache.retrieval.fusion import Fusion, Ranking
from semcache.telemetry import Telemetry

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray

__all__ = ["HybridRetriever", "Reranker"]


@runtime_checkable
class Reranker(Protocol):
    """Reorders fused hits (e.g. with a cross-encoder); may rescore and may drop hits."""

    def rerank(self, query: str, hits: Sequence[ScoredChunk]) -> list[ScoredChunk]: ...


class HybridRetriever:
    """Dense (HNSW, quantized rescoring) and sparse (BM25) retrieval over one store, fused.

    Args:
        store: the chunks and their indexes.
        embedder: embeds queries; must be the model the store was built with.
        fusion: how the (sparse, dense) rankings combine, in that order; by default
            :class:`AgreementFusion` (dense leads, BM25 counts as far as the two agree).
        dense: the dense search mode.
        candidates: how many hits each retriever contributes before fusion (and the reranker
            sees), at least ``k``.
        reranker: applied to the fused candidates, if given.
        sparse_enabled / dense_enabled: switch either side off (for evaluation).
        telemetry: where the ``semcache.retrieval`` stage (span and duration) is recorded.
    """

    def __init__(
        self,
        store: RetrievalStore,
        embedder: Embedder,
        *,
        fusion: Fusion | None = None,
        dense: DenseMode | None = None,
        candidates: int = 100,
        reranker: Reranker | None = None,
        sparse_enabled: bool = True,
        dense_enabled: bool = True,
        telemetry: Telemetry | None = None,
    ) -> None:
        if candidates < 1:
            raise ConfigurationError(f"candidates must be >= 1, got {candidates}")
        if not (sparse_enabled or dense_enabled):
            raise ConfigurationError("enable the sparse or the dense retriever (or both)")
        self.store = store
        self.embedder = embedder
        self.fusion = fusion or AgreementFusion()
        self.dense_mode = dense or Int8Rescored()
        self.candidates = candidates
        self.reranker = reranker
        self.sparse_enabled = sparse_enabled
        self.dense_enabled = dense_enabled
        self.telemetry = telemetry or Telemetry()
        store.bind(embedder.fingerprint)
        warn_if_tuned_for_prompts(embedder.fingerprint, "the HybridRetriever")

    def embed(self, query: str) -> NDArray[np.float32]:
        vector: NDArray[np.float32] = self.embedder.embed([query])[0]
        return vector

    def rankings(
        self, query: str, k: int, *, vector: NDArray[np.float32] | None = None
    ) -> list[Ranking]:
        """The (sparse, dense) rankings of ``k`` chunk ids each (an empty one when disabled)."""
        sparse = self.store.sparse(query, k) if self.sparse_enabled else []
        dense: Ranking = []
        if self.dense_enabled:
            vec = self.embed(query) if vector is None else vector
            dense = self.store.dense(vec, k, self.dense_mode)
        return [sparse, dense]

    def retrieve(
        self, query: str, k: int = 10, *, vector: NDArray[np.float32] | None = None
    ) -> list[ScoredChunk]:
        """The best ``k`` chunks for ``query``, best first.

        Scores are the fusion's (or the reranker's); with one retriever switched off, that
        retriever's own scores (cosine or BM25).
        """
        if not isinstance(query, str) or not query.strip():
            raise InvalidInputError("a retrieval query must be a non-empty string")
        if k < 1:
            raise InvalidInputError(f"k must be >= 1, got {k}")
        with self.telemetry.stage("retrieval"):
            return self._retrieve(query, k, vector)

    def _retrieve(
        self, query: str, k: int, vector: NDArray[np.float32] | None
    ) -> list[ScoredChunk]:
        pool = max(k, self.candidates)
        sparse, dense = self.rankings(query, pool, vector=vector)
        if self.sparse_enabled and self.dense_enabled:
            fused = self.fusion.fuse([sparse, dense])
        else:
            fused = list(sparse if self.sparse_enabled else dense)
        keep = fused[:pool] if self.reranker is not None else fused[:k]
        chunks = self.store.chunks(cid for cid, _ in keep)
        hits = [ScoredChunk(chunks[cid], score) for cid, score in keep if cid in chunks]
        if self.reranker is not None:
            hits = self.reranker.rerank(query, hits)[:k]
        return hits

    async def aretrieve(
        self, query: str, k: int = 10, *, vector: NDArray[np.float32] | None = None
    ) -> list[ScoredChunk]:
        """:meth:`retrieve` in a worker thread."""
        return await asyncio.to_thread(self.retrieve, query, k, vector=vector)
