"""A LiteLLM ``BaseCache`` backed by a :class:`semcache.SemanticCache`.

LiteLLM calls ``async_get_cache(key, **request)`` before a call and ``async_set_cache(key,
{"timestamp", "response"}, **request)`` after it. The ``key`` is LiteLLM's hash of the whole
request, prompt included, so it is not used: the scope and the text come from the request
(:func:`semcache_litellm.request.plan_request`). Every semcache failure is a miss (lookups) or a
skipped store, logged and counted: the request always reaches the model.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Mapping
from typing import Any

from litellm.caching.base_cache import BaseCache
from pydantic import BaseModel

from semcache.cache import SemanticCache
from semcache.errors import SemcacheError
from semcache.llm.responses import inspect_response, refusal_reason
from semcache_litellm.outcomes import CallOutcome, OutcomeLog
from semcache_litellm.request import plan_request
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

    # -- lookups ---------------------------------------------------------------------------------

    def get_cache(self, key: str, **kwargs: Any) -> Any:
        """The stored ``{"timestamp", "response"}`` for a hit, else ``None``."""
        call_id = kwargs.get("litellm_call_id")
        request = plan_request(kwargs, self.settings)
        if request.bypass:
            self.semantic.count("bypasses")
            self.outcomes.put(call_id, CallOutcome(outcome="bypass", reason=request.bypass))
            log.debug("semcache: bypass (%s)", request.bypass)
            return None
        try:
            result = self.semantic.lookup(request.text, request.scope)
        except SemcacheError as e:
            self.semantic.count("errors")
            self.outcomes.put(call_id, CallOutcome(outcome="error", reason=type(e).__name__))
            log.warning("semcache: lookup failed, calling the model: %s", e)
            return None
        outcome = CallOutcome(
            outcome="hit" if result.hit else "miss",
            tier=result.tier.value if result.tier else None,
            similarity=result.similarity,
            reason=result.reason,
        )
        self.outcomes.put(call_id, outcome)
        log.debug("semcache: %s", outcome.header())
        if result.entry is None:
            return None
        metadata = kwargs.get("metadata")
        if isinstance(metadata, dict):
            metadata["semantic-similarity"] = result.similarity
        return result.entry.response

    async def async_get_cache(self, key: str, **kwargs: Any) -> Any:
        return await asyncio.to_thread(self.get_cache, key, **kwargs)

    # -- stores ----------------------------------------------------------------------------------

    def set_cache(self, key: str, value: Any, **kwargs: Any) -> None:
        """Store a response LiteLLM got from the model, unless it must not be served again."""
        request = plan_request(kwargs, self.settings)
        if request.bypass:
            return
        stored = value if isinstance(value, Mapping) else {"response": value}
        response = _response_json(stored.get("response"))
        if response is None:
            self.semantic.count("store_refusals")
            log.debug("semcache: not storing a %s response", type(stored.get("response")).__name__)
            return
        info = inspect_response(response)
        refusal = refusal_reason(info, store_tool_calls=self.settings.store_tool_calls)
        if refusal is not None:
            self.semantic.count("store_refusals")
            log.debug("semcache: not storing (%s)", refusal)
            return
        entry = {"timestamp": stored.get("timestamp"), "response": response}
        try:
            self.semantic.store(
                request.text,
                entry,
                request.scope,
                ttl=_ttl(kwargs),
                metadata={
                    "prompt_tokens": info.prompt_tokens,
                    "completion_tokens": info.completion_tokens,
                },
            )
        except SemcacheError as e:
            self.semantic.count("errors")
            log.warning("semcache: store failed, response not cached: %s", e)

    async def async_set_cache(self, key: str, value: Any, **kwargs: Any) -> None:
        await asyncio.to_thread(self.set_cache, key, value, **kwargs)

    async def async_set_cache_pipeline(self, cache_list: Any, **kwargs: Any) -> None:
        """LiteLLM's bulk write, used for embedding responses only: not cached semantically.

        An embedding of a paraphrase is not the embedding of the original text, so these are
        never stored (``semcache_litellm.install`` leaves embeddings out of the cached call
        types; this is the guard if they are put back).
        """
        self.semantic.count("store_refusals", len(cache_list or ()))

    async def batch_cache_write(self, key: str, value: Any, **kwargs: Any) -> None:
        await self.async_set_cache(key, value, **kwargs)

    # -- lifecycle -------------------------------------------------------------------------------

    async def disconnect(self) -> None:
        """Called by the proxy on shutdown: flush and close the store."""
        await asyncio.to_thread(self.semantic.close)

    async def test_connection(self) -> dict[str, Any]:
        try:
            info = await asyncio.to_thread(self.semantic.info)
        except SemcacheError as e:
            return {"status": "failed", "message": "semcache is unavailable", "error": str(e)}
        if info.entries < 0:
            return {"status": "failed", "message": "semcache backend did not answer", "error": None}
        return {"status": "success", "message": f"semcache: {info.entries} entries"}
