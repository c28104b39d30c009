"""The reranking stage: a pair scorer reorders the fused top hits.

:class:`ScorerReranker` takes any :class:`PairScorer` (query, texts -> one relevance score each)
and may blend the scorer's order with the fused order (``fused_weight``).
:class:`CrossEncoderScorer` is semcache's own scorer: the verifier's kind of model (the packaged
all-MiniLM-L6-v2 with a LoRA adapter and a one-logit classification head, in the adapter file
format of :mod:`semcache.embedders.adapter`) trained on (query, passage) relevance, on ONNX
Runtime when it is installed, else torch. What the trained reranker gains and costs on the shared
sets: docs/BENCHMARKS.md, "Retrieval reranker".
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from semcache.errors import ConfigurationError
from semcache.retrieval.documents import ScoredChunk

if TYPE_CHECKING:
    from semcache.matching.verifier import PairScorer as ProbabilityScorer

__all__ = [
    "SHIPPED_FUSED_WEIGHT",
    "CrossEncoderReranker",
    "CrossEncoderScorer",
    "PairScorer",
    "ScorerReranker",
    "blend",
    "default_reranker",
]

#: The shipped reranker's blend with the fused order, chosen on validation queries
#: (docs/BENCHMARKS.md, "Retrieval reranker").
SHIPPED_FUSED_WEIGHT = 0.7


@runtime_checkable
class PairScorer(Protocol):
    """Scores how relevant each text is to the query; higher is more relevant."""

    def score(self, query: str, texts: Sequence[str]) -> list[float]: ...


class ScorerReranker:
    """Rescores the first ``depth`` fused hits with ``scorer``, best first; the hits past
    ``depth`` follow in their fused order (their scores are not comparable, so they stay below).

    With ``fused_weight`` 0 (the default) the head is ordered by the scorer alone and each hit
    carries the scorer's score. Above 0, each head hit's score is a blend of its two ranks,
    ``w * (1 - fused_rank / n) + (1 - w) * (1 - scorer_rank / n)`` (ranks from 0, ``n`` the head's
    length, ties to the fused order): a reranker that knows less than the first stage on some
    corpus then moves hits only where it is confident enough to outvote it.
    """

    def __init__(self, scorer: PairScorer, *, depth: int = 20, fused_weight: float = 0.0) -> None:
        if depth < 1:
            raise ConfigurationError(f"reranker depth must be >= 1, got {depth}")
        if not 0.0 <= fused_weight < 1.0:
            raise ConfigurationError(f"fused_weight must be in [0, 1), got {fused_weight}")
        self.scorer = scorer
        self.depth = depth
        self.fused_weight = fused_weight

    def rerank(self, query: str, hits: Sequence[ScoredChunk]) -> list[ScoredChunk]:
        head, tail = list(hits[: self.depth]), list(hits[self.depth :])
        if not head:
            return []
        scores = [float(s) for s in self.scorer.score(query, [h.chunk.indexed_text for h in head])]
        if len(scores) != len(head):
            raise ConfigurationError(f"scorer gave {len(scores)} scores for {len(head)} texts")
        return [ScoredChunk(head[i].chunk, s) for i, s in blend(scores, self.fused_weight)] + tail


class _Predict:
    """A :class:`PairScorer` over anything with ``predict(list of (query, text) pairs)``."""

    def __init__(self, model: Any) -> None:
        self.model = model

    def score(self, query: str, texts: Sequence[str]) -> list[float]:
        return [float(s) for s in self.model.predict([(query, t) for t in texts])]


class CrossEncoderReranker(ScorerReranker):
    """A :class:`ScorerReranker` over a ready-built ``sentence_transformers.CrossEncoder`` (or any
    object whose ``predict(list of (query, text) pairs)`` returns one score per pair); it
    rescores every hit it is given."""

    def __init__(self, model: Any, *, fused_weight: float = 0.0) -> None:
        super().__init__(_Predict(model), depth=sys.maxsize, fused_weight=fused_weight)
        self.model = model


def blend(scores: Sequence[float], fused_weight: float) -> list[tuple[int, float]]:
    """(fused position, new score) of each head hit, best first; see :class:`ScorerReranker`."""
    n = len(scores)
    by_scorer = sorted(range(n), key=lambda i: (-scores[i], i))
    if fused_weight == 0.0:
        return [(i, scores[i]) for i in by_scorer]
    rank = {i: r for r, i in enumerate(by_scorer)}
    w = fused_weight
    mixed = [w * (1 - i / n) + (1 - w) * (1 - rank[i] / n) for i in range(n)]
    return [(i, mixed[i]) for i in sorted(range(n), key=lambda i: (-mixed[i], i))]


class CrossEncoderScorer:
    """A :class:`PairScorer`: a cross-encoder's probability that each text answers the query.

    Args:
        model: anything with ``probabilities(list of (query, text) pairs, batch_size)``, e.g.
            :class:`~semcache.matching.onnx_verifier.OnnxPairScorer`.
        batch_size: pairs per forward pass.
    """

    def __init__(self, model: ProbabilityScorer, *, batch_size: int = 32) -> None:
        if batch_size < 1:
            raise ConfigurationError(f"batch_size must be >= 1, got {batch_size}")
        self.model = model
        self.batch_size = batch_size

    @classmethod
    def load(
        cls,
        path: str | Path,
        *,
        sha256: str | None = None,
        max_length: int = 256,
        prefer_onnx: bool = True,
        int8: bool = True,
        threads: int = 1,
        cache_dir: str | Path | None = None,
    ) -> CrossEncoderScorer:
        """Load a cross-encoder adapter file (``bench/train_reranker.py`` writes one), offline.

        ``max_length``: tokens per (query, passage) pair. On ONNX Runtime (``int8``: its int8
        copy) when it works here, else torch with ``threads`` threads (process-wide).

        Raises:
            AdapterError: the file is missing, altered (``sha256``) or not a cross-encoder.
            ModelLoadError: it does not fit the packaged base model.
        """
        from semcache.embedders.adapter import read_adapter
        from semcache.matching.onnx_verifier import pair_scorer

        adapter = read_adapter(path, sha256=sha256)
        return cls(
            pair_scorer(
                adapter,
                what="reranker",
                max_length=max_length,
                prefer_onnx=prefer_onnx,
                int8=int8,
                threads=threads,
                cache_dir=cache_dir,
            )
        )

    def score(self, query: str, texts: Sequence[str]) -> list[float]:
        if not texts:
            return []
        out = self.model.probabilities([(query, t) for t in texts], self.batch_size)
        return [float(x) for x in out]


def default_reranker(
    *,
    depth: int = 20,
    fused_weight: float = SHIPPED_FUSED_WEIGHT,
    prefer_onnx: bool = True,
    int8: bool = True,
    threads: int = 1,
    cache_dir: str | Path | None = None,
) -> ScorerReranker:
    """The reranker shipped in the package (sha256-checked, offline), over the fused top
    ``depth`` hits: ``HybridRetriever(store, embedder, reranker=default_reranker())``.

    Off unless passed: on the shared sets it adds +0.002 to +0.010 nDCG@10 for about 0.4-0.9 s
    per query on one CPU thread (docs/BENCHMARKS.md, "Retrieval reranker"). The first call
    exports it to ONNX (seconds, once).
    """
    from semcache.embedders.shipped import RERANKER

    scorer = CrossEncoderScorer.load(
        RERANKER.path,
        sha256=RERANKER.sha256,
        prefer_onnx=prefer_onnx,
        int8=int8,
        threads=threads,
        cache_dir=cache_dir,
    )
    return ScorerReranker(scorer, depth=depth, fused_weight=fused_weight)
