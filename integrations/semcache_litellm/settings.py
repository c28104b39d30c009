"""The ``callback_settings.semcache`` section of a LiteLLM proxy config, validated."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from semcache.errors import ConfigurationError
from semcache.policy import (
    DEFAULT_LOOKUP_BUDGET,
    DEFAULT_MIN_SIMILARITY,
    DEFAULT_VOLATILE_TTL,
    CachePolicy,
    VolatilePolicy,
)

__all__ = ["TENANT_MODES", "VOLATILE_MODES", "LiteLLMCacheSettings"]

#: Who may be served whose entries: ``key`` (the default) isolates every API key (and its team
#: and organisation); ``team`` shares entries across the keys of one team; ``end_user`` also
#: isolates each end user of a key.
TENANT_MODES = ("key", "team", "end_user")

#: What to do with volatile prompts ("current BTC price"): cap their entries' age, bypass the
#: cache, or treat them like any other (:class:`semcache.policy.VolatilePolicy`).
VOLATILE_MODES = ("cap_ttl", "bypass", "off")

_ENV_PREFIX = "os.environ/"


@dataclass(frozen=True, slots=True, kw_only=True)
class LiteLLMCacheSettings:
    """How semcache runs behind LiteLLM.

    Attributes:
        path: directory of the embedded store (SQLite + HNSW); created if missing.
        model: the sentence-transformers model (name or local path) that embeds prompts.
        tuned: with the packaged model (``model`` unset), the matcher shipped in the package:
            its LoRA-tuned embedder and its verifier (docs/model_card.md); ``false``: the plain
            model, no verifier. A store written with one refuses the other.
        min_similarity: cosine similarity a semantic hit needs.
        ttl: seconds an entry lives (a request's ``cache: {ttl: ...}`` overrides it).
        max_entries: size bound; past it the entries worth least (GDSF: tokens a hit saves,
            uses, recency) are evicted.
        lookup_budget: seconds a lookup may take before the call goes upstream as a miss
            (``None``: no budget).
        namespace: a label separating applications that share one store.
        tenant: one of :data:`TENANT_MODES`.
        max_messages: conversations with more non-system messages bypass the cache (counted,
            and shown in the ``x-semcache`` header); ``None`` for no limit.
        store_tool_calls: also store responses that call tools.
        volatile: one of :data:`VOLATILE_MODES` (default ``cap_ttl``).
        volatile_ttl: seconds a volatile prompt's answer is reused at most, for ``cap_ttl``.
        debug_headers: add the cache-wide counters as an ``x-semcache-counters`` header.
        factory: ``"module:function"`` returning a ready :class:`semcache.SemanticCache`; when
            set, ``path``, ``model``, ``min_similarity``, ``ttl``, ``max_entries``,
            ``lookup_budget``, ``volatile`` and ``volatile_ttl`` are unused.
    """

    path: str | None = None
    model: str | None = None
    tuned: bool = True
    min_similarity: float = DEFAULT_MIN_SIMILARITY
    ttl: float | None = None
    max_entries: int | None = 100_000
    lookup_budget: float | None = DEFAULT_LOOKUP_BUDGET
    namespace: str = ""
    tenant: str = "key"
    max_messages: int | None = 16
    store_tool_calls: bool = False
    volatile: str = "cap_ttl"
    volatile_ttl: float = DEFAULT_VOLATILE_TTL
    debug_headers: bool = False
    factory: str | None = None

    def __post_init__(self) -> None:
        if self.factory is None and not self.path:
            raise ConfigurationError(
                "callback_settings.semcache needs `path` (a directory for the store) "
                "or `factory` ('module:function' returning a SemanticCache)"
            )
        if self.factory is not None and ":" not in self.factory:
            raise ConfigurationError(
                f"factory must look like 'module:function', got {self.factory!r}"
            )
        if self.tenant not in TENANT_MODES:
            raise ConfigurationError(f"tenant must be one of {TENANT_MODES}, got {self.tenant!r}")
        if self.volatile not in VOLATILE_MODES:
            raise ConfigurationError(
                f"volatile must be one of {VOLATILE_MODES}, got {self.volatile!r}"
            )
        if self.max_messages is not None and self.max_messages < 1:
            raise ConfigurationError(f"max_messages must be >= 1 or None, got {self.max_messages}")
        self.policy()  # validates min_similarity, ttl, max_entries, lookup_budget, volatile_ttl

    def policy(self) -> CachePolicy:
        volatile = {
            "cap_ttl": VolatilePolicy(max_ttl=self.volatile_ttl),
            "bypass": VolatilePolicy(action="bypass", max_ttl=self.volatile_ttl),
            "off": None,
        }[self.volatile]
        return CachePolicy(
            min_similarity=self.min_similarity,
            ttl=self.ttl,
            max_entries=self.max_entries,
            lookup_budget=self.lookup_budget,
            volatile=volatile,
        )

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any]) -> LiteLLMCacheSettings:
        """Build from a YAML mapping; ``"os.environ/NAME"`` values are read from the environment.

        Raises:
            ConfigurationError: an unknown key, a wrong type, an unset variable or a bad value.
        """
        if not isinstance(raw, Mapping):
            raise ConfigurationError(
                f"callback_settings.semcache must be a mapping, got {type(raw).__name__}"
            )
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(raw) - set(known))
        if unknown:
            raise ConfigurationError(
                f"unknown semcache setting(s) {unknown}; allowed: {sorted(known)}"
            )
        values = {name: _coerce(name, _resolve_env(name, v)) for name, v in raw.items()}
        return cls(**values)


def _resolve_env(name: str, value: Any) -> Any:
    if isinstance(value, str) and value.startswith(_ENV_PREFIX):
        var = value[len(_ENV_PREFIX) :]
        if var not in os.environ:
            raise ConfigurationError(f"semcache setting {name!r} reads ${var}, which is not set")
        return os.environ[var]
    return value


_FLOATS = {"min_similarity", "ttl", "volatile_ttl", "lookup_budget"}
_INTS = {"max_entries", "max_messages"}
_BOOLS = {"store_tool_calls", "debug_headers", "tuned"}


def _coerce(name: str, value: Any) -> Any:
    """YAML and environment variables give strings; turn them into the field's type."""
    if value is None:
        return None
    try:
        if name in _FLOATS:
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        if name in _INTS:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError
            return int(value)
    except (TypeError, ValueError):
        raise ConfigurationError(
            f"semcache setting {name!r} must be a number, got {value!r}"
        ) from None
    if name in _BOOLS:
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in ("true", "1", "yes"):
            return True
        if text in ("false", "0", "no"):
            return False
        raise ConfigurationError(f"semcache setting {name!r} must be true or false, got {value!r}")
    if not isinstance(value, str):
        raise ConfigurationError(f"semcache setting {name!r} must be a string, got {value!r}")
    return value
