"""Installing semcache as LiteLLM's cache, and the proxy callback that reports what it did.

LiteLLM's pre-call hook cannot answer a request (a returned response is ignored), so semcache
goes in through LiteLLM's own cache: ``litellm.cache`` becomes a ``Cache`` whose backend is a
:class:`~semcache_litellm.cache.SemcacheLiteLLMCache`. LiteLLM then handles the per-request
controls ``no-cache`` and ``no-store`` (semcache decides ``s-maxage`` in the lookup), streaming
a hit back as chunks, and its ``x-litellm-cache-key`` header; the callback turns an HTTP
``Cache-Control: no-cache`` request header into the ``no-cache`` control and adds an
``x-semcache`` header per response.
"""

from __future__ import annotations

import importlib
import json
import logging
from collections.abc import Mapping
from typing import Any

import litellm
from litellm.caching.caching import Cache
from litellm.integrations.custom_logger import CustomLogger
from litellm.types.caching import CachingSupportedCallTypes, LiteLLMCacheType

from semcache.cache import SemanticCache
from semcache.errors import ConfigurationError
from semcache_litellm.cache import SemcacheLiteLLMCache
from semcache_litellm.controls import header_no_cache
from semcache_litellm.outcomes import header
from semcache_litellm.settings import LiteLLMCacheSettings

__all__ = [
    "CACHED_CALL_TYPES",
    "SemcacheProxyHandler",
    "build_semantic_cache",
    "describe",
    "install",
    "show_info_logs",
]

log = logging.getLogger("semcache.litellm")

#: Chat and text completions. Embeddings, rerank and transcription are not cached
#: semantically: a paraphrase's embedding is not the original's.
CACHED_CALL_TYPES: list[CachingSupportedCallTypes] = [
    "completion",
    "acompletion",
    "text_completion",
    "atext_completion",
]


def build_semantic_cache(settings: LiteLLMCacheSettings) -> SemanticCache:
    """The cache the settings describe: the user's factory, or MiniLM over an embedded store."""
    if settings.factory is not None:
        module_name, _, attr = settings.factory.partition(":")
        try:
            factory = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as e:
            raise ConfigurationError(
                f"cannot load semcache factory {settings.factory!r}: {e}"
            ) from e
        cache = factory()
        if not isinstance(cache, SemanticCache):
            raise ConfigurationError(
                f"{settings.factory} returned a {type(cache).__name__}, not a SemanticCache"
            )
        return cache
    from semcache.backends.embedded import EmbeddedBackend
    from semcache.embedders.base import DEFAULT_MODEL
    from semcache.embedders.sentence_transformers import SentenceTransformerEmbedder
    from semcache.embedders.shipped import embedder_adapter
    from semcache.matching.verifier import default_verifier

    assert settings.path is not None  # checked by the settings
    shipped = settings.model is None and settings.tuned
    return SemanticCache(
        embedder=SentenceTransformerEmbedder(
            settings.model or DEFAULT_MODEL, adapter=embedder_adapter() if shipped else None
        ),
        verifier=default_verifier(threads=1) if shipped else None,
        backend=EmbeddedBackend(settings.path),
        policy=settings.policy(),
    )


class SemcacheProxyHandler(CustomLogger):
    """The proxy callback: adds ``x-semcache`` headers and notices a replaced ``litellm.cache``.

    ``x-semcache`` is ``hit; tier=semantic; similarity=0.9412``, ``miss; ...``,
    ``bypass; reason=...`` or ``error; reason=...``; with ``debug_headers`` the cache-wide
    counters follow as JSON in ``x-semcache-counters``.
    """

    def __init__(
        self,
        backend: SemcacheLiteLLMCache,
        litellm_cache: Cache,
        settings: LiteLLMCacheSettings,
    ) -> None:
        super().__init__()
        self.backend = backend
        self.litellm_cache = litellm_cache
        self.settings = settings
        self._warned = False

    @property
    def cache(self) -> SemanticCache:
        return self.backend.semantic

    async def async_pre_call_hook(
        self, user_api_key_dict: Any, cache: Any, data: dict[str, Any], call_type: Any
    ) -> None:
        """Turn ``Cache-Control: no-cache`` into the body's ``no-cache`` control (if the key is
        allowed it); warn once if ``litellm.cache`` is no longer semcache."""
        if litellm.cache is not self.litellm_cache and not self._warned:
            self._warned = True
            log.error(
                "semcache: litellm.cache was replaced after semcache installed itself (is "
                "`cache: true` set in litellm_settings? remove it); requests bypass semcache"
            )
        allowed = getattr(user_api_key_dict, "allowed_cache_controls", None)
        if header_no_cache(_request_headers(data), allowed):
            control = data.get("cache")
            data["cache"] = {**(control if isinstance(control, Mapping) else {}), "no-cache": True}

    async def async_post_call_response_headers_hook(
        self,
        data: dict[str, Any],
        user_api_key_dict: Any,
        response: Any,
        request_headers: dict[str, str] | None = None,
        litellm_call_info: dict[str, object] | None = None,
    ) -> dict[str, str] | None:
        headers: dict[str, str] = {}
        outcome = self.backend.outcomes.pop(data.get("litellm_call_id"))
        if outcome is not None:
            headers["x-semcache"] = header(outcome)
        elif _no_cache(data):
            headers["x-semcache"] = "bypass; reason=no-cache"
        if self.settings.debug_headers:
            info = self.cache.info()
            counters = {name: getattr(info, name) for name in info.__dataclass_fields__}
            headers["x-semcache-counters"] = json.dumps(counters, separators=(",", ":"))
        return headers or None


def _request_headers(data: Mapping[str, Any]) -> object:
    """The HTTP request headers the proxy keeps in ``proxy_server_request`` (lower-case)."""
    request = data.get("proxy_server_request")
    return request.get("headers") if isinstance(request, Mapping) else None


def _no_cache(data: Mapping[str, Any]) -> bool:
    control = data.get("cache")
    return isinstance(control, Mapping) and control.get("no-cache") is True


def install(settings: LiteLLMCacheSettings | Mapping[str, Any]) -> SemcacheProxyHandler:
    """Build the semantic cache, make it ``litellm.cache``'s backend, return the callback.

    Also works outside the proxy: after ``install(...)``, ``litellm.acompletion`` calls are
    cached (the sync ``litellm.completion`` lookup is given only the messages by LiteLLM, so it
    cannot be scoped and bypasses).
    """
    if not isinstance(settings, LiteLLMCacheSettings):
        settings = LiteLLMCacheSettings.from_mapping(settings)
    semantic = build_semantic_cache(settings)
    backend = SemcacheLiteLLMCache(semantic, settings)
    litellm_cache = Cache(type=LiteLLMCacheType.LOCAL, supported_call_types=list(CACHED_CALL_TYPES))
    litellm_cache.cache = backend
    if litellm.cache is not None:
        log.warning("semcache: replacing the existing litellm.cache (%r)", litellm.cache.type)
    litellm.cache = litellm_cache
    log.info("semcache: installed as litellm.cache (%s)", describe(semantic, settings))
    return SemcacheProxyHandler(backend, litellm_cache, settings)


def describe(cache: SemanticCache, settings: LiteLLMCacheSettings) -> str:
    """One line for the log: where entries live, the threshold and how many there are."""
    where = f"store {settings.path}" if settings.factory is None else f"factory {settings.factory}"
    return (
        f"{where}, backend {type(cache.backend).__name__}, "
        f"min_similarity {cache.policy.min_similarity}, {cache.info().entries} entries"
    )


def show_info_logs() -> None:
    """Let semcache's INFO lines reach stderr when nothing configured logging (the proxy
    configures only LiteLLM's own loggers); a configured handler is left alone."""
    logger = logging.getLogger("semcache")
    if logger.hasHandlers():
        return
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s - %(name)s:%(levelname)s: %(message)s"))
    logger.addHandler(handler)
    if logger.getEffectiveLevel() > logging.INFO:
        logger.setLevel(logging.INFO)
