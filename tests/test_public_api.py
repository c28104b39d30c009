"""The flat API is pinned: adding or removing a public name is a decision made here (httpx's
``test_exported_members``). Everything else is imported from its module."""

from __future__ import annotations

import importlib.metadata
import importlib.resources

import pytest

import semcache

PUBLIC = [
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
    "GDSF",
    "GuardError",
    "HnswParams",
    "ImportFormatError",
    "InvalidInputError",
    "JsonCodec",
    "LRU",
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
    "export_entries",
    "import_entries",
    "default_verifier",
    "policy_from_calibration",
]

#: Flat names kept for one release: each warns and names its module.
DEPRECATED = {
    "RRF": "semcache.retrieval",
    "BinaryRescored": "semcache.retrieval",
    "ChunkingConfig": "semcache.retrieval",
    "Document": "semcache.retrieval",
    "EmbeddedRetrievalStore": "semcache.retrieval",
    "Float32Search": "semcache.retrieval",
    "HybridRetriever": "semcache.retrieval",
    "Indexer": "semcache.retrieval",
    "Int8Rescored": "semcache.retrieval",
    "RagCache": "semcache.retrieval",
    "WeightedFusion": "semcache.retrieval",
}


def test_all_is_exactly_the_pinned_list() -> None:
    assert sorted(semcache.__all__) == sorted(PUBLIC)


@pytest.mark.parametrize("name", PUBLIC)
def test_every_public_name_resolves(name: str) -> None:
    assert getattr(semcache, name) is not None
    assert name in dir(semcache)


def test_calibration_helpers_are_the_measure_ones() -> None:
    from semcache.measure import calibration

    assert semcache.policy_from_calibration is calibration.policy_from_calibration
    assert semcache.band_from_calibration is calibration.band_from_calibration


@pytest.mark.parametrize(("name", "module"), sorted(DEPRECATED.items()))
def test_deprecated_flat_name_warns_and_resolves(name: str, module: str) -> None:
    """The one test that uses the deprecated flat names (pytest turns warnings into errors)."""
    new = getattr(importlib.import_module(module), name)
    with pytest.warns(DeprecationWarning, match=f"use 'from {module} import {name}'"):
        assert getattr(semcache, name) is new
    namespace: dict[str, object] = {}
    with pytest.warns(DeprecationWarning, match=f"from {module} import {name}"):
        exec(f"from semcache import {name}", namespace)
    assert namespace[name] is new
    assert name not in semcache.__all__
    assert name not in dir(semcache)


def test_dropped_plumbing_is_gone_from_the_flat_api() -> None:
    for name in ("Query", "NewEntry", "text_key", "normalize_text", "SystemClock", "Guard"):
        with pytest.raises(AttributeError, match=name):
            getattr(semcache, name)


def test_version_comes_from_the_distribution() -> None:
    from semcache._version import VERSION

    assert importlib.metadata.version("semcache-middleware") == VERSION
    assert semcache.__version__ is VERSION


def test_package_ships_py_typed() -> None:
    assert importlib.resources.files("semcache").joinpath("py.typed").is_file()
