"""semcache: a semantic cache and hybrid-retrieval middleware for LLM applications.

``import semcache`` is light: torch, redis and litellm are imported only by the components that
need them, when they are built.
"""

from semcache._clock import Clock, ManualClock, SystemClock
from semcache.backends import Backend, EmbeddedBackend, HnswParams, MemoryBackend
from semcache.cache import Query, SemanticCache
from semcache.embeddings import (
    DEFAULT_MODEL,
    Embedder,
    ModelFingerprint,
    SentenceTransformerEmbedder,
)
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
from semcache.middleware import CallOptions, cache_options, cached
from semcache.models import Candidate, Entry, LookupResult, NewEntry, Outcome, Tier
from semcache.policy import DEFAULT_MIN_SIMILARITY, CachePolicy, Guard
from semcache.requests import ChatRequest, PromptRequest, Request, RequestAdapter
from semcache.responses import Codec, JsonCodec, ModelCodec, ResponseInfo
from semcache.stats import CacheInfo
from semcache.telemetry import Telemetry

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_MIN_SIMILARITY",
    "DEFAULT_MODEL",
    "Backend",
    "BackendError",
    "BackendUnavailableError",
    "CacheInfo",
    "CachePolicy",
    "CallOptions",
    "Candidate",
    "ChatRequest",
    "Clock",
    "Codec",
    "ConfigurationError",
    "CorruptEntryError",
    "EmbeddedBackend",
    "Embedder",
    "EmbeddingError",
    "Entry",
    "FingerprintMismatchError",
    "Guard",
    "HnswParams",
    "InvalidInputError",
    "JsonCodec",
    "LookupResult",
    "ManualClock",
    "MemoryBackend",
    "MissingDependencyError",
    "ModelCodec",
    "ModelFingerprint",
    "ModelLoadError",
    "NewEntry",
    "NotCacheableError",
    "Outcome",
    "PromptRequest",
    "Query",
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
    "__version__",
    "cache_options",
    "cached",
    "normalize_text",
    "text_key",
]
