"""An LLM cache for ``langchain_core.globals.set_llm_cache``, backed by a SemanticCache."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from langchain_core.caches import RETURN_VAL_TYPE, BaseCache

from semcache._failopen import MISSING, FailOpen
from semcache.cache import SemanticCache
from semcache.errors import InvalidInputError, NotCacheableError
from semcache.keys import Scope
from semcache.llm.options import current_options
from semcache.llm.requests import ChatRequest
from semcache.policy import check_threshold
from semcache_langchain.codec import generations_from_json, generations_to_json

__all__ = ["SemanticLLMCache", "plan_prompt"]

_ROLES = {"system": "system", "human": "user", "ai": "assistant", "tool": "tool"}


def _chat_messages(prompt: str) -> list[dict[str, Any]] | None:
    """The messages of a chat model's cache prompt (LangChain's ``dumps(messages)``), if any."""
    if not prompt.startswith("[{"):
        return None
    try:
        data = json.loads(prompt)
    except json.JSONDecodeError:
        return None
    messages = []
    for item in data if isinstance(data, list) else ():
        kwargs = item.get("kwargs") if isinstance(item, dict) and item.get("lc") == 1 else None
        if not isinstance(kwargs, dict):
            return None
        role = _ROLES.get(str(kwargs.get("type")), str(kwargs.get("type")))
        messages.append({**kwargs, "role": role, "content": kwargs.get("content")})
    return messages or None


def plan_prompt(prompt: str, llm_string: str, namespace: str = "") -> tuple[str, Scope, bool]:
    """The text to look up, its scope, and whether only exact repeats may hit.

    Text-LLM prompts are looked up as they are. For chat models LangChain passes the messages
    serialised as JSON: the last human message is looked up and the system messages and earlier
    turns go in the scope (:class:`semcache.llm.requests.ChatRequest`, the decorator's convention).
    A conversation ending in anything else (a tool result, say) only hits on an exact repeat.
    """
    base = Scope(model=llm_string, namespace=namespace)
    messages = _chat_messages(prompt)
    if messages is None:
        return prompt, base, False
    if messages[-1]["role"] == "user":
        try:
            request = ChatRequest()((), {"messages": messages})
        except InvalidInputError:
            pass
        else:
            scope = dataclasses.replace(request.scope, model=llm_string, namespace=namespace)
            return request.text, scope, False
    return prompt, dataclasses.replace(base, params={"semcache.exact": True}), True


class SemanticLLMCache(BaseCache):
    """LangChain's LLM cache over semcache: paraphrased prompts hit, within one model config.

    Each ``llm_string`` (LangChain's serialisation of the model and its parameters) is its own
    scope, so a cached answer is only served to the same model with the same settings. The
    prompt is looked up by meaning (for chat models, the last human message, with the system
    messages and earlier turns as scope: see :func:`plan_prompt`); pass ``min_similarity=1.0``
    for exact repeats only.

    Args:
        cache: the semantic cache (embedder, backend, policy).
        min_similarity: the threshold; the cache policy's when ``None``.
        namespace: separates applications sharing one store.
        ttl: seconds an entry lives; the policy's when ``None``.

    Lookups and stores fail open: a semcache error is a miss (logged, counted in ``errors``).
    """

    def __init__(
        self,
        cache: SemanticCache,
        *,
        min_similarity: float | None = None,
        namespace: str = "",
        ttl: float | None = None,
    ) -> None:
        self.cache = cache
        self._fo = FailOpen(cache)
        self.min_similarity = None if min_similarity is None else check_threshold(min_similarity)
        self.namespace = namespace
        self.ttl = ttl

    def scope(self, llm_string: str) -> Scope:
        """The partition of one model configuration (for text prompts)."""
        return Scope(model=llm_string, namespace=self.namespace)

    def lookup(self, prompt: str, llm_string: str) -> RETURN_VAL_TYPE | None:
        text, scope, exact = plan_prompt(prompt, llm_string, self.namespace)
        threshold = 1.0 if exact else self.min_similarity
        hit = self._fo.lookup(text, scope, generations_from_json, min_similarity=threshold)
        return None if hit is MISSING else hit

    def update(self, prompt: str, llm_string: str, return_val: RETURN_VAL_TYPE) -> None:
        if (value := self._storable(return_val)) is not None:
            text, scope, _ = plan_prompt(prompt, llm_string, self.namespace)
            self._fo.store(text, value, scope, ttl=self.ttl, tags=current_options().tags)

    def _storable(self, return_val: RETURN_VAL_TYPE) -> list[dict[str, Any]] | None:
        """The generations as JSON, or ``None`` if there are none or they cannot be stored."""
        if not return_val:
            return None
        try:
            return generations_to_json(return_val)
        except NotCacheableError:
            self._fo.refused("not_serialisable")
            return None

    def clear(self, **kwargs: Any) -> None:
        """Empty the store, or only one model's entries with ``clear(llm_string=...)``.

        Without ``llm_string`` this deletes every entry of the underlying store, including
        entries other users of the same ``SemanticCache`` wrote. With it, text prompts'
        entries go (chat entries are scoped by their system messages too: clear those with
        ``clear()``).
        """
        llm_string = kwargs.get("llm_string")
        self.cache.clear(None if llm_string is None else self.scope(llm_string))

    async def alookup(self, prompt: str, llm_string: str) -> RETURN_VAL_TYPE | None:
        text, scope, exact = plan_prompt(prompt, llm_string, self.namespace)
        threshold = 1.0 if exact else self.min_similarity
        hit = await self._fo.alookup(text, scope, generations_from_json, min_similarity=threshold)
        return None if hit is MISSING else hit

    async def aupdate(self, prompt: str, llm_string: str, return_val: RETURN_VAL_TYPE) -> None:
        if (value := self._storable(return_val)) is not None:
            text, scope, _ = plan_prompt(prompt, llm_string, self.namespace)
            await self._fo.astore(text, value, scope, ttl=self.ttl, tags=current_options().tags)

    async def aclear(self, **kwargs: Any) -> None:
        llm_string = kwargs.get("llm_string")
        await self.cache.aclear(None if llm_string is None else self.scope(llm_string))
