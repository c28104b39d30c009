"""semcache as the LiteLLM proxy's cache. Needs ``pip install 'semcache-middleware[litellm]'``.

In the proxy's ``config.yaml``::

    litellm_settings:
      callbacks: ["semcache_litellm.proxy_handler"]
    callback_settings:
      semcache:
        path: /var/lib/semcache

``proxy_handler`` is built when LiteLLM first reads it (at config load), from
``litellm.callback_settings["semcache"]``; it installs the cache as ``litellm.cache`` and logs
one INFO line saying so. Do not also set ``litellm_settings.cache: true``: LiteLLM would build
its own cache (Redis unless ``cache_params`` says otherwise), failing or replacing semcache.
"""

from __future__ import annotations

from typing import Any

from semcache.errors import ConfigurationError, MissingDependencyError

try:
    import litellm
except ImportError:
    raise MissingDependencyError("litellm", "litellm") from None

from semcache_litellm.cache import SemcacheLiteLLMCache
from semcache_litellm.outcomes import CallOutcome, OutcomeLog
from semcache_litellm.proxy import (
    CACHED_CALL_TYPES,
    SemcacheProxyHandler,
    build_semantic_cache,
    install,
    show_info_logs,
)
from semcache_litellm.request import GENERATION_PARAMS, plan_request, tags_of, tenant_of
from semcache_litellm.settings import TENANT_MODES, LiteLLMCacheSettings

__all__ = [
    "CACHED_CALL_TYPES",
    "GENERATION_PARAMS",
    "TENANT_MODES",
    "CallOutcome",
    "LiteLLMCacheSettings",
    "OutcomeLog",
    "SemcacheLiteLLMCache",
    "SemcacheProxyHandler",
    "build_semantic_cache",
    "install",
    "plan_request",
    "tags_of",
    "tenant_of",
]

# LiteLLM loads callbacks by attribute name, so the proxy's handler has to be reachable as a
# module attribute; it is built on first access (config load), once per process.
_handlers: dict[str, SemcacheProxyHandler] = {}


def __getattr__(name: str) -> Any:
    if name != "proxy_handler":
        raise AttributeError(f"module 'semcache_litellm' has no attribute {name!r}")
    if name not in _handlers:
        raw = (litellm.callback_settings or {}).get("semcache")
        if raw is None:
            raise ConfigurationError(
                "semcache_litellm.proxy_handler needs a `callback_settings: semcache:` section "
                "in the proxy config (at least `path:`)"
            )
        show_info_logs()
        _handlers[name] = install(raw)
    return _handlers[name]
