"""semcache: a semantic cache and hybrid-retrieval middleware for LLM applications.

The flat API is what an application needs: the cache, the decorator and its per-call options,
the policy, embedders, backends, the guards and verifiers it constructs, telemetry, the result
types it reads and the exception tree. Everything else is imported from its module
(``semcache.retrieval``, ``semcache.testing``, ``semcache.keys``, ``semcache.models``...);
``tests/test_public_api.py`` pins this list.

``import semcache`` is light: torch, redis and litellm are imported only by the components that
need them, when they are built; the offline tooling (``semcache.measure``) only when a
calibration helper is first used.
"""

from __future__ import annotations

import importlib
import warnings
from typing import TYPE_CHECKING, Any

from semcache._version import VERSION as __version__
from semcache.backends import Backend, EmbeddedBackend, HnswParams, MemoryBackend, RedisBackend
from semcache.backends.breaker import BreakerParams
from semcache.backends.eviction import GDSF, LRU
from semcache.backends.redis import RedisConnection
from semcache.cache import SemanticCache
from semcache.embedders import (
    Embedder,
    OnnxEmbedder,
    SentenceTransformerEmbedder,
    default_embedder,
)
from semcache.embedders.window import TextWindow
from semcache.errors import (
    AdapterError,
    BackendError,
    BackendUnavailableError,
    ConfigurationError,
    CorruptEntryError,
    EmbeddingError,
    FingerprintMismatchError,
    GuardError,
    ImportFormatError,
    InvalidInputError,
    LookupTimeoutError,
    MissingDependencyError,
    ModelLoadError,
    NotCacheableError,
    SemcacheError,
)
from semcache.keys import Scope
from semcache.llm.decorator import cached
from semcache.llm.options import cache_options
from semcache.llm.requests import ChatRequest, PromptRequest, Request
from semcache.llm.responses import JsonCodec, ModelCodec
from semcache.matching.adaptive import AdaptiveConfig, AdaptiveThresholds
from semcache.matching.explore import AnswerMatch, Exploration
from semcache.matching.guards import LexicalGuard, UnreadTextGuard, default_guards
from semcache.matching.learned_redis import RedisLearnedState
from semcache.matching.learned_state import SqliteLearnedState
from semcache.matching.verifier import CrossEncoderVerifier, VerifierBand, default_verifier
from semcache.models import CallOutcome, Entry, LookupResult, ModelFingerprint, Outcome, Tier
from semcache.ops.transfer import export_entries, import_entries
from semcache.policy import CachePolicy, VolatilePolicy
from semcache.selector import Selector
from semcache.stats import CacheInfo
from semcache.telemetry import Telemetry, TokenPrice

if TYPE_CHECKING:
    from semcache.measure.calibration import band_from_calibration, policy_from_calibration

__all__ = [
    "GDSF",
    "LRU",
    "AdapterError",
    "AdaptiveConfig",
    "AdaptiveThresholds",
    "AnswerMatch",
    "Backend",
    "BackendError",
    "BackendUnavailableError",
    "BreakerParams",
    "CacheInfo",
    "CachePolicy",
    "CallOutcome",
    "ChatRequest",
    "ConfigurationError",
    "CorruptEntryError",
    "CrossEncoderVerifier",
    "EmbeddedBackend",
    "Embedder",
    "EmbeddingError",
    "Entry",
    "Exploration",
    "FingerprintMismatchError",
    "GuardError",
    "HnswParams",
    "ImportFormatError",
    "InvalidInputError",
    "JsonCodec",
    "LexicalGuard",
    "LookupResult",
    "LookupTimeoutError",
    "MemoryBackend",
    "MissingDependencyError",
    "ModelCodec",
    "ModelFingerprint",
    "ModelLoadError",
    "NotCacheableError",
    "OnnxEmbedder",
    "Outcome",
    "PromptRequest",
    "RedisBackend",
    "RedisConnection",
    "RedisLearnedState",
    "Request",
    "Scope",
    "Selector",
    "SemanticCache",
    "SemcacheError",
    "SentenceTransformerEmbedder",
    "SqliteLearnedState",
    "Telemetry",
    "TextWindow",
    "Tier",
    "TokenPrice",
    "UnreadTextGuard",
    "VerifierBand",
    "VolatilePolicy",
    "__version__",
    "band_from_calibration",
    "cache_options",
    "cached",
    "default_embedder",
    "default_guards",
    "default_verifier",
    "export_entries",
    "import_entries",
    "policy_from_calibration",
]

# Public, loaded on first use: they read calibration reports, which live with the offline
# tooling in semcache.measure, and the request path never imports that.
_LAZY = {
    "band_from_calibration": "semcache.measure.calibration",
    "policy_from_calibration": "semcache.measure.calibration",
}

# Flat names kept for one release, with a DeprecationWarning naming their module.
_DEPRECATED = {
    name: "semcache.retrieval"
    for name in (
        "RRF",
        "BinaryRescored",
        "ChunkingConfig",
        "Document",
        "EmbeddedRetrievalStore",
        "Float32Search",
        "HybridRetriever",
        "Indexer",
        "Int8Rescored",
        "RagCache",
        "WeightedFusion",
    )
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    if name in _DEPRECATED:
        module = _DEPRECATED[name]
        warnings.warn(
            f"'from semcache import {name}' is deprecated and will be removed in the next "
            f"release; use 'from {module} import {name}'",
            DeprecationWarning,
            stacklevel=2,
        )
        return getattr(importlib.import_module(module), name)
    raise AttributeError(f"module 'semcache' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
