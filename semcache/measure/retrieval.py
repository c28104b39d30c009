"""Retrieval evaluation on a BEIR dataset: quality, latency and memory per retrieval mode.

Chunks are ranked, then mapped to documents (a document ranks where its best chunk does),
which is how chunked retrieval is scored against document-level judgements.
"""

from __future__ import annotations

import math
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from semcache.embedders.base import Embedder
from semcache.errors import ConfigurationError
from semcache.measure.beir import BeirDataset
from semcache.measure.metrics import mrr_at_k, ndcg_at_k, paired_bootstrap, percentile, recall_at_k
from semcache.retrieval.adaptive import AgreementFusion
from semcache.retrieval.base import BinaryRescored, Float32Search, Int8Rescored, MemoryUse
from semcache.retrieval.chunking import ChunkingConfig, RecursiveSplitter
from semcache.retrieval.fusion import RRF, Fusion, MinMax, Ranking, WeightedFusion
from semcache.retrieval.ingest import Indexer
from semcache.retrieval.store import EmbeddedRetrievalStore, EmbeddedStoreConfig
from semcache.retrieval.vector_cache import VectorCache

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray

__all__ = ["EvalSettings", "ModeResult", "RetrievalEval", "evaluate", "to_documents"]


@dataclass(frozen=True, slots=True, kw_only=True)
class EvalSettings:
    """How to build the index and which modes to compare."""

    chunking: ChunkingConfig = field(default_factory=ChunkingConfig)
    oversample: float = 4.0
    binary: BinaryRescored = field(default_factory=BinaryRescored)
    fusion: Fusion = field(default_factory=RRF)
    weighted: WeightedFusion = field(
        default_factory=lambda: WeightedFusion(weights=(0.5, 0.5), normalization=MinMax())
    )
    store: EmbeddedStoreConfig = field(
        default_factory=lambda: EmbeddedStoreConfig(float32_index=True, binary_index=True)
    )
    adaptive: Fusion = field(default_factory=AgreementFusion)
    max_queries: int | None = None
    bootstrap_rounds: int = 10_000
    seed: int = 0

    def __post_init__(self) -> None:
        if self.bootstrap_rounds < 1:
            raise ConfigurationError(f"bootstrap_rounds must be >= 1, got {self.bootstrap_rounds}")


SINGLE_MODES = ("bm25", "dense-fp32", "dense-int8-rescored")


@dataclass(frozen=True, slots=True, kw_only=True)
class ModeResult:
    """One retrieval mode's scores (means over queries), search latency and footprint.

    ``vs_best`` is the mean per-query nDCG@10 difference to the better single retriever (the
    best of BM25, dense float32 and dense int8 by mean nDCG@10), with a seeded paired
    bootstrap interval ``vs_best_low`` to ``vs_best_high`` (95%, resampling queries).
    """

    name: str
    ndcg_at_10: float
    recall_at_100: float
    mrr_at_10: float
    latency_p50_ms: float
    latency_p95_ms: float
    ram_bytes: int
    disk_bytes: int
    ram_bytes_per_vector: float
    disk_bytes_per_vector: float
    vs_best: float = math.nan
    vs_best_low: float = math.nan
    vs_best_high: float = math.nan


@dataclass(frozen=True, slots=True, kw_only=True)
class RetrievalEval:
    dataset: str
    split: str
    documents: int
    chunks: int
    queries: int
    chunking: ChunkingConfig
    ingest_seconds: float
    embed_p50_ms: float
    modes: list[ModeResult]
    memory: list[MemoryUse]
    best_single: str = ""


def to_documents(ranking: Ranking, doc_of: Callable[[str], str], k: int) -> list[str]:
    """Document ids in the order their first (best) chunk appears, at most ``k``."""
    seen: dict[str, None] = {}
    for chunk_id, _ in ranking:
        seen.setdefault(doc_of(chunk_id), None)
        if len(seen) >= k:
            break
    return list(seen)


def _doc_of(chunk_id: str) -> str:
    return chunk_id.rsplit("#", 1)[0]


def _sizes(memory: Sequence[MemoryUse], names: Sequence[str]) -> tuple[int, int]:
    parts = [m for m in memory if m.name in names]
    return (
        sum(m.nbytes for m in parts if m.resident),
        sum(m.nbytes for m in parts if not m.resident),
    )


def evaluate(
    dataset: BeirDataset,
    embedder: Embedder,
    *,
    settings: EvalSettings | None = None,
    index_dir: str | Path | None = None,
    cache_dir: str | Path | None = None,
    progress: bool = True,
) -> RetrievalEval:
    """Index ``dataset.corpus`` and score BM25, dense float32, int8-rescored, binary and hybrid.

    Args:
        index_dir: where the store lives (memory-mapped files need a directory); RAM if None.
        cache_dir: an embedding cache (model fingerprint + texts), so reruns skip embedding.
    """
    settings = settings or EvalSettings()
    with tempfile.TemporaryDirectory(prefix="semcache-eval-") as tmp:
        store = EmbeddedRetrievalStore(index_dir or tmp, settings.store)
        try:
            return _evaluate(dataset, embedder, store, settings, cache_dir, progress)
        finally:
            store.close()


def _evaluate(
    dataset: BeirDataset,
    embedder: Embedder,
    store: EmbeddedRetrievalStore,
    settings: EvalSettings,
    cache_dir: str | Path | None,
    progress: bool,
) -> RetrievalEval:
    from tqdm import tqdm

    splitter = RecursiveSplitter.for_embedder(embedder, settings.chunking)
    indexer = Indexer(
        store,
        embedder,
        splitter,
        progress=progress,
        vector_cache=VectorCache(cache_dir) if cache_dir else None,
    )
    started = time.perf_counter()
    indexer.upsert(dataset.corpus)
    ingest_seconds = time.perf_counter() - started
    qids = list(dataset.queries)[: settings.max_queries]
    texts = [dataset.queries[q] for q in qids]
    embed_ms: list[float] = []
    vectors: list[NDArray[np.float32]] = []
    for text in tqdm(texts, desc="embed queries", file=sys.stderr, disable=not progress):
        t0 = time.perf_counter()
        vectors.append(embedder.embed([text])[0])
        embed_ms.append((time.perf_counter() - t0) * 1000)
    n_chunks = store.count()
    per_doc = max(1, math.ceil(n_chunks / max(1, len(dataset.corpus))))
    depth = 100 * per_doc  # enough chunks for 100 distinct documents
    int8 = Int8Rescored(oversample=settings.oversample)

    def bm25(q: str, v: NDArray[np.float32]) -> Ranking:
        return store.sparse(q, depth)

    def fp32(q: str, v: NDArray[np.float32]) -> Ranking:
        return store.dense(v, depth, Float32Search())

    def dense_int8(q: str, v: NDArray[np.float32]) -> Ranking:
        return store.dense(v, depth, int8)

    def binary(q: str, v: NDArray[np.float32]) -> Ranking:
        return store.dense(v, depth, settings.binary)

    def hybrid(q: str, v: NDArray[np.float32]) -> Ranking:
        return settings.fusion.fuse([bm25(q, v), dense_int8(q, v)])

    def weighted(q: str, v: NDArray[np.float32]) -> Ranking:
        return settings.weighted.fuse([bm25(q, v), dense_int8(q, v)])

    def adaptive(q: str, v: NDArray[np.float32]) -> Ranking:
        return settings.adaptive.fuse([bm25(q, v), dense_int8(q, v)])

    runs: list[tuple[str, Callable[[str, NDArray[np.float32]], Ranking], list[str]]] = [
        ("bm25", bm25, ["bm25"]),
        ("dense-fp32", fp32, ["hnsw_float32"]),
        ("dense-int8-rescored", dense_int8, ["hnsw_compact", "int8_codes"]),
        ("binary-int8-fp32", binary, ["binary_codes", "int8_codes", "float32_vectors"]),
        ("hybrid-rrf", hybrid, ["bm25", "hnsw_compact", "int8_codes"]),
        ("hybrid-weighted", weighted, ["bm25", "hnsw_compact", "int8_codes"]),
        ("hybrid-adaptive", adaptive, ["bm25", "hnsw_compact", "int8_codes"]),
    ]
    store.sparse("warm up", 1)  # builds the BM25 index before anything is timed
    memory = store.memory()
    per_vector = store.vector_bytes()
    vector_parts = {
        "bm25": (math.nan, math.nan),
        "dense-fp32": (per_vector["float32"], math.nan),
        "dense-int8-rescored": (per_vector.get("compact", math.nan), per_vector["int8"]),
        "binary-int8-fp32": (
            per_vector.get("binary", math.nan),
            per_vector["int8"] + per_vector["float32"],
        ),
    }
    vector_parts["hybrid-rrf"] = vector_parts["dense-int8-rescored"]
    vector_parts["hybrid-weighted"] = vector_parts["dense-int8-rescored"]
    vector_parts["hybrid-adaptive"] = vector_parts["dense-int8-rescored"]
    results: list[ModeResult] = []
    per_query: dict[str, list[float]] = {}
    for name, run, parts in runs:
        ndcg, recall, mrr, times = [], [], [], []
        for qid, text, vec in tqdm(
            list(zip(qids, texts, vectors, strict=True)),
            desc=name,
            file=sys.stderr,
            disable=not progress,
        ):
            t0 = time.perf_counter()
            ranking = run(text, vec)
            times.append((time.perf_counter() - t0) * 1000)
            docs = to_documents(ranking, _doc_of, 100)
            rels = dataset.qrels[qid]
            ndcg.append(ndcg_at_k(docs, rels, 10))
            recall.append(recall_at_k(docs, rels, 100))
            mrr.append(mrr_at_k(docs, rels, 10))
        per_query[name] = ndcg
        ram, disk = _sizes(memory, parts)
        ram_pv, disk_pv = vector_parts[name]
        results.append(
            ModeResult(
                name=name,
                ndcg_at_10=sum(ndcg) / len(ndcg),
                recall_at_100=sum(recall) / len(recall),
                mrr_at_10=sum(mrr) / len(mrr),
                latency_p50_ms=percentile(times, 50),
                latency_p95_ms=percentile(times, 95),
                ram_bytes=ram,
                disk_bytes=disk,
                ram_bytes_per_vector=ram_pv,
                disk_bytes_per_vector=disk_pv,
            )
        )
    results, best = _against_best(results, per_query, settings)
    return RetrievalEval(
        dataset=dataset.name,
        split=dataset.split,
        documents=len(dataset.corpus),
        chunks=n_chunks,
        queries=len(qids),
        chunking=splitter.config,
        ingest_seconds=ingest_seconds,
        embed_p50_ms=percentile(embed_ms, 50),
        modes=results,
        memory=memory,
        best_single=best,
    )


def _against_best(
    results: list[ModeResult], per_query: dict[str, list[float]], settings: EvalSettings
) -> tuple[list[ModeResult], str]:
    """Each mode with its paired difference to the better single retriever, and that name."""
    from dataclasses import replace

    means = {m.name: m.ndcg_at_10 for m in results if m.name in SINGLE_MODES}
    best = max(means, key=lambda n: means[n])
    out = []
    for m in results:
        diff = [a - b for a, b in zip(per_query[m.name], per_query[best], strict=True)]
        low, high = paired_bootstrap(diff, rounds=settings.bootstrap_rounds, seed=settings.seed)
        out.append(replace(m, vs_best=sum(diff) / len(diff), vs_best_low=low, vs_best_high=high))
    return out, best
