"""semcache: a semantic cache and hybrid-retrieval middleware for LLM applications.

``import semcache`` is light: torch, redis and litellm are imported only by the components that
need them, when they are built.
"""

from semcache._clock import Clock, ManualClock, SystemClock
from semcache.backends import Backend, EmbeddedBackend, HnswParams, MemoryBackend, RedisBackend
from semcache.backends.breaker import BreakerParams
from semcache.backends.redis.connection import RedisConnection
from semcache.cache import Query, SemanticCache
from semcache.embedders.base import DEFAULT_MODEL, Embedder
from semcache.embedders.default import default_embedder
from semcache.embedders.onnx import OnnxEmbedder
from semcache.embedders.sentence_transformers import SentenceTransformerEmbedder
from semcache.errors import (
    BackendError,
    BackendUnavailableError,
    ConfigurationError,
    CorruptEntryError,
    EmbeddingError,
    FingerprintMismatchError,
    InvalidInputError,
    MissingDependencyError,
    ModelLoadError,
    NotCacheableError,
    SemcacheError,
)
from semcache.keys import Scope, normalize_text, text_key
from semcache.llm.decorator import cached
from semcache.llm.options import CallOptions, CallOutcome, cache_options
from semcache.llm.requests import ChatRequest, PromptRequest, Request, RequestAdapter
from semcache.llm.responses import Codec, JsonCodec, ModelCodec, ResponseInfo
from semcache.matching.adaptive import AdaptiveConfig, AdaptiveThresholds
from semcache.matching.guards import LexicalGuard
from semcache.matching.verifier import CrossEncoderVerifier, VerifierBand, VerifierStats
from semcache.measure.calibration import (
    CalibrationReport,
    band_from_calibration,
    policy_from_calibration,
)
from semcache.models import (
    Candidate,
    Entry,
    LookupResult,
    ModelFingerprint,
    NewEntry,
    Outcome,
    Tier,
)
from semcache.policy import DEFAULT_MIN_SIMILARITY, CachePolicy, Guard
from semcache.retrieval import (
    RRF,
    BinaryRescored,
    ChunkingConfig,
    Document,
    EmbeddedRetrievalStore,
    Float32Search,
    HybridRetriever,
    Indexer,
    Int8Rescored,
    RagCache,
    WeightedFusion,
)
from semcache.stats import CacheInfo
from semcache.telemetry import Telemetry, TokenPrice

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_MIN_SIMILARITY",
    "DEFAULT_MODEL",
    "RRF",
    "AdaptiveConfig",
    "AdaptiveThresholds",
    "Backend",
    "BackendError",
    "BackendUnavailableError",
    "BinaryRescored",
    "BreakerParams",
    "CacheInfo",
    "CachePolicy",
    "CalibrationReport",
    "CallOptions",
    "CallOutcome",
    "Candidate",
    "ChatRequest",
    "ChunkingConfig",
    "Clock",
    "Codec",
    "ConfigurationError",
    "CorruptEntryError",
    "CrossEncoderVerifier",
    "Document",
    "EmbeddedBackend",
    "EmbeddedRetrievalStore",
    "Embedder",
    "EmbeddingError",
    "Entry",
    "FingerprintMismatchError",
    "Float32Search",
    "Guard",
    "HnswParams",
    "HybridRetriever",
    "Indexer",
    "Int8Rescored",
    "InvalidInputError",
    "JsonCodec",
    "LexicalGuard",
    "LookupResult",
    "ManualClock",
    "MemoryBackend",
    "MissingDependencyError",
    "ModelCodec",
    "ModelFingerprint",
    "ModelLoadError",
    "NewEntry",
    "NotCacheableError",
    "OnnxEmbedder",
    "Outcome",
    "PromptRequest",
    "Query",
    "RagCache",
    "RedisBackend",
    "RedisConnection",
    "Request",
    "RequestAdapter",
    "ResponseInfo",
    "Scope",
    "SemanticCache",
    "SemcacheError",
    "SentenceTransformerEmbedder",
    "SystemClock",
    "Telemetry",
    "Tier",
    "TokenPrice",
    "VerifierBand",
    "VerifierStats",
    "WeightedFusion",
    "__version__",
    "band_from_calibration",
    "cache_options",
    "cached",
    "default_embedder",
    "normalize_text",
    "policy_from_calibration",
    "text_key",
]
