"""Hybrid retrieval behind the cache: chunking, dense HNSW with int8 rescoring, BM25, fusion.

Heavy dependencies (hnswlib, bm25s, PyStemmer) are imported when a store or index is built.
"""

from semcache.retrieval.adaptive import AgreementFusion
from semcache.retrieval.base import (
    BinaryRescored,
    DenseMode,
    Float32Search,
    Int8Rescored,
    MemoryUse,
    RetrievalStore,
)
from semcache.retrieval.bm25 import Bm25Index, Bm25Params
from semcache.retrieval.chunking import ChunkingConfig, RecursiveSplitter, TokenCounter
from semcache.retrieval.documents import Chunk, Document, ScoredChunk, content_hash
from semcache.retrieval.fusion import RRF, Fusion, MinMax, WeightedFusion, ZScore
from semcache.retrieval.ingest import Indexer, IngestReport
from semcache.retrieval.quantization import BinaryQuantizer, Int8Quantizer, Projection
from semcache.retrieval.rag import CitationIndex, RagAnswer, RagCache
from semcache.retrieval.rerank import (
    CrossEncoderReranker,
    CrossEncoderScorer,
    PairScorer,
    ScorerReranker,
    default_reranker,
)
from semcache.retrieval.retriever import HybridRetriever, Reranker
from semcache.retrieval.store import EmbeddedRetrievalStore, EmbeddedStoreConfig
from semcache.retrieval.vector_cache import VectorCache

__all__ = [
    "RRF",
    "AgreementFusion",
    "BinaryQuantizer",
    "BinaryRescored",
    "Bm25Index",
    "Bm25Params",
    "Chunk",
    "ChunkingConfig",
    "CitationIndex",
    "CrossEncoderReranker",
    "CrossEncoderScorer",
    "DenseMode",
    "Document",
    "EmbeddedRetrievalStore",
    "EmbeddedStoreConfig",
    "Float32Search",
    "Fusion",
    "HybridRetriever",
    "Indexer",
    "IngestReport",
    "Int8Quantizer",
    "Int8Rescored",
    "MemoryUse",
    "MinMax",
    "PairScorer",
    "Projection",
    "RagAnswer",
    "RagCache",
    "RecursiveSplitter",
    "Reranker",
    "RetrievalStore",
    "ScoredChunk",
    "ScorerReranker",
    "TokenCounter",
    "VectorCache",
    "WeightedFusion",
    "ZScore",
    "content_hash",
    "default_reranker",
]
