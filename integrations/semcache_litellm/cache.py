"""A LiteLLM ``BaseCache`` backed by a :class:`semcache.SemanticCache`.

LiteLLM calls ``async_get_cache(key, **request)`` before a call and ``async_set_cache(key,
{"timestamp", "response"}, **request)`` after it. The ``key`` is LiteLLM's hash of the whole
request, prompt included, so it is not used: the scope and the text come from the request
(:func:`semcache_litellm.request.plan_request`). A request's ``s-maxage`` is decided in the
lookup (:mod:`semcache_litellm.controls`): LiteLLM checks it only after a hit was counted. Every
semcache failure is a miss (lookups) or a skipped store, logged and counted once
(:mod:`semcache._failopen`): the request always reaches the model.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Mapping
from typing import Any

from litellm.caching.base_cache import BaseCache
from pydantic import BaseModel

from semcache._failopen import Bypass, FailOpen, Lookup
from semcache.cache import Query, SemanticCache
from semcache.errors import SemcacheError
from semcache.llm.responses import inspect_response, refusal_reason
from semcache.models import CallOutcome, Entry, Outcome
from semcache_litellm.controls import max_age, stale_check, stored_at
from semcache_litellm.outcomes import OutcomeLog, header
from semcache_litellm.request import plan_request, tags_of
from semcache_litellm.settings import LiteLLMCacheSettings

__all__ = ["SemcacheLiteLLMCache"]

log = logging.getLogger("semcache.litellm")


def _response_json(value: Any) -> dict[str, Any] | None:
    """LiteLLM's stored value is ``{"timestamp", "response"}`` with the response as JSON text."""
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json")
    if isinstance(value, str | bytes):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            return None
    return value if isinstance(value, dict) else None


def _ttl(kwargs: Mapping[str, Any]) -> float | None:
    ttl = kwargs.get("ttl")
    try:
        value = float(ttl) if ttl is not None else None
    except (TypeError, ValueError):
        return None
    return value if value is not None and value > 0 else None


class SemcacheLiteLLMCache(BaseCache):
    """Serves LiteLLM's cache calls from a semcache :class:`SemanticCache`.

    The async methods (the proxy's) await the cache's native async path; the sync ones (the
    SDK's ``litellm.completion``) block. Both share every decision and fail open through
    :mod:`semcache._failopen`.

    Args:
        cache: the semantic cache (its embedder, backend and policy).
        settings: tenant mode, namespace, message limit, tool-call storage.
        outcomes: where each call's outcome is left for the response-headers hook.
    """

    def __init__(
        self,
        cache: SemanticCache,
        settings: LiteLLMCacheSettings,
        outcomes: OutcomeLog | None = None,
    ) -> None:
        super().__init__(default_ttl=0)
        self.semantic = cache
        self.settings = settings
        self.outcomes = outcomes or OutcomeLog()
        self._fo = FailOpen(cache)

    # -- lookups ---------------------------------------------------------------------------------

    def get_cache(self, key: str, **kwargs: Any) -> Any:
        """The stored ``{"timestamp", "response"}`` for a hit, else ``None``."""
        q = self._key(kwargs)
        found = None if isinstance(q, Bypass) else self._fo.find(q, check=_fresh(kwargs))
        return self._answer(kwargs, q, found)

    async def async_get_cache(self, key: str, **kwargs: Any) -> Any:
        q = self._key(kwargs)
        found = None if isinstance(q, Bypass) else await self._fo.afind(q, check=_fresh(kwargs))
        return self._answer(kwargs, q, found)

    def _key(self, kwargs: Mapping[str, Any]) -> Query | Bypass:
        """The lookup's key, or why there is none (counted)."""

        def build() -> Query | str:
            request = plan_request(kwargs, self.settings)
            return request.bypass or self.semantic._query(request.text, request.scope)

        return self._fo.key(build)

    def _answer(self, kwargs: Mapping[str, Any], q: Query | Bypass, found: Lookup | None) -> Any:
        """Record the call's outcome for its headers; the stored value on a hit."""
        outcome = _outcome(q, found)
        self.outcomes.put(kwargs.get("litellm_call_id"), outcome)
        log.debug("semcache: %s", header(outcome))
        if found is None or found.result is None or found.result.entry is None:
            return None
        metadata = kwargs.get("metadata")
        if isinstance(metadata, dict):
            metadata["semantic-similarity"] = found.result.similarity
        entry = found.result.entry
        if not isinstance(entry.response, Mapping):
            return entry.response
        # the timestamp the age check used, so LiteLLM's own check agrees with it
        return {**entry.response, "timestamp": stored_at(entry)}

    # -- stores ----------------------------------------------------------------------------------

    def set_cache(self, key: str, value: Any, **kwargs: Any) -> None:
        """Store a response LiteLLM got from the model, unless it must not be served again."""
        if (planned := self._storable(value, kwargs)) is not None:
            self._fo.put(*planned[:2], ttl=_ttl(kwargs), metadata=planned[2], tags=planned[3])

    async def async_set_cache(self, key: str, value: Any, **kwargs: Any) -> None:
        if (planned := self._storable(value, kwargs)) is not None:
            await self._fo.aput(
                *planned[:2], ttl=_ttl(kwargs), metadata=planned[2], tags=planned[3]
            )

    def _storable(
        self, value: Any, kwargs: Mapping[str, Any]
    ) -> tuple[Query, dict[str, Any], dict[str, int], tuple[str, ...]] | None:
        """The key, the entry, its token counts and tags for a storable response; ``None`` if
        not (a refusal is counted; a request the lookup bypassed is not counted again)."""
        q = self._fo.rekey(lambda: self._planned(kwargs))
        if q is None:
            return None
        with self._fo.failures.trap(None, "store"):
            planned = self._entry(q, value)
            return None if planned is None else (*planned, tags_of(kwargs))
        return None

    def _planned(self, kwargs: Mapping[str, Any]) -> Query | None:
        request = plan_request(kwargs, self.settings)
        return None if request.bypass else self.semantic._query(request.text, request.scope)

    def _entry(self, q: Query, value: Any) -> tuple[Query, dict[str, Any], dict[str, int]] | None:
        stored = value if isinstance(value, Mapping) else {"response": value}
        response = _response_json(stored.get("response"))
        if response is None:
            log.debug("semcache: not storing a %s response", type(stored.get("response")).__name__)
            self._fo.refused("not_json")
            return None
        info = inspect_response(response)
        refusal = refusal_reason(info, store_tool_calls=self.settings.store_tool_calls)
        if refusal is not None:
            log.debug("semcache: not storing (%s)", refusal)
            self._fo.refused(refusal)
            return None
        entry = {"timestamp": stored.get("timestamp"), "response": response}
        tokens = {"prompt_tokens": info.prompt_tokens, "completion_tokens": info.completion_tokens}
        return q, entry, tokens

    async def async_set_cache_pipeline(self, cache_list: Any, **kwargs: Any) -> None:
        """LiteLLM's bulk write, used for embedding responses only: not cached semantically.

        An embedding of a paraphrase is not the embedding of the original text, so these are
        never stored (``semcache_litellm.install`` leaves embeddings out of the cached call
        types; this is the guard if they are put back).
        """
        for _ in cache_list or ():
            self._fo.refused("embedding")

    async def batch_cache_write(self, key: str, value: Any, **kwargs: Any) -> None:
        await self.async_set_cache(key, value, **kwargs)

    # -- lifecycle -------------------------------------------------------------------------------

    async def disconnect(self) -> None:
        """Called by the proxy on shutdown: flush and close the store."""
        await self.semantic.aclose()

    async def test_connection(self) -> dict[str, Any]:
        try:
            info = await asyncio.to_thread(self.semantic.info)
        except SemcacheError as e:
            return {"status": "failed", "message": "semcache is unavailable", "error": str(e)}
        if info.entries < 0:
            return {"status": "failed", "message": "semcache backend did not answer", "error": None}
        return {"status": "success", "message": f"semcache: {info.entries} entries"}


def _fresh(kwargs: Mapping[str, Any]) -> Callable[[Entry], str | None] | None:
    """Refuses an entry older than the request's ``s-maxage`` (a miss, reason ``stale``)."""
    return stale_check(max_age(kwargs.get("cache")))


def _outcome(q: Query | Bypass, found: Lookup | None) -> CallOutcome:
    """What the cache did, for the ``x-semcache`` header."""
    if isinstance(q, Bypass):
        return CallOutcome(outcome=Outcome.BYPASS, reason=q.reason, error=q.error)
    assert found is not None
    result = found.result
    if result is None:
        reason = type(found.error).__name__ if found.error is not None else ""
        return CallOutcome(outcome=Outcome.MISS, reason=reason, error=True)
    return CallOutcome(
        outcome=Outcome.HIT if result.hit else Outcome.MISS,
        tier=result.tier.value if result.tier else None,
        similarity=result.similarity,
        reason=result.reason,
    )
