"""From the kwargs LiteLLM hands its cache to what semcache needs: text, scope, or a bypass.

Pure functions. LiteLLM passes the whole request (model, messages, params, proxy metadata and
many internal keys), so generation parameters come from an allow-list: an internal key such as
``litellm_call_id`` must never split the cache, and a parameter that changes the answer always
must.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from semcache.errors import InvalidInputError
from semcache.keys import Scope
from semcache.llm.requests import ChatRequest, PromptRequest, Request
from semcache.selector import check_tags
from semcache_litellm.settings import LiteLLMCacheSettings

__all__ = ["GENERATION_PARAMS", "plan_request", "tags_of", "tenant_of"]

#: Request parameters that change the answer, so are part of the scope. Anything else LiteLLM
#: passes (stream, metadata, api keys, call ids, timeouts...) does not split the cache.
GENERATION_PARAMS = frozenset(
    {
        "temperature",
        "top_p",
        "top_k",
        "min_p",
        "n",
        "max_tokens",
        "max_completion_tokens",
        "stop",
        "presence_penalty",
        "frequency_penalty",
        "repetition_penalty",
        "logit_bias",
        "logprobs",
        "top_logprobs",
        "response_format",
        "seed",
        "tool_choice",
        "parallel_tool_calls",
        "function_call",
        "reasoning_effort",
        "thinking",
        "verbosity",
        "modalities",
        "audio",
        "prediction",
        "web_search_options",
        "suffix",
        "echo",
        "best_of",
        "extra_body",
    }
)

_SYSTEM_ROLES = ("system", "developer")
_KEY_FIELDS = ("user_api_key_hash", "user_api_key")
_TEAM_FIELD = "user_api_key_team_id"
_ORG_FIELD = "user_api_key_org_id"
_END_USER_FIELD = "user_api_key_end_user_id"


def _metadata_sources(kwargs: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """Where LiteLLM keeps request metadata (it moved between releases and call types)."""
    params = kwargs.get("litellm_params") or {}
    sources = []
    for holder in (kwargs, params):
        if not isinstance(holder, Mapping):
            continue
        for name in ("metadata", "litellm_metadata"):
            value = holder.get(name)
            if isinstance(value, Mapping):
                sources.append(value)
    return sources


def _meta(sources: Sequence[Mapping[str, Any]], *names: str) -> str:
    for name in names:
        for source in sources:
            value = source.get(name)
            if value not in (None, ""):
                return str(value)
    return ""


def tenant_of(kwargs: Mapping[str, Any], mode: str) -> str:
    """The tenant label of a proxy request, from the identity LiteLLM's auth put in metadata.

    ``key``: the hashed API key, its team and organisation. ``team``: the team and organisation
    (the key when there is no team). ``end_user``: as ``key``, plus the end user.
    """
    sources = _metadata_sources(kwargs)
    key = _meta(sources, *_KEY_FIELDS)
    team = _meta(sources, _TEAM_FIELD)
    org = _meta(sources, _ORG_FIELD)
    parts = {"org": org}
    if mode == "team" and team:
        parts["team"] = team
    else:
        parts.update(key=key, team=team)
    if mode == "end_user":
        parts["end_user"] = _meta(sources, _END_USER_FIELD) or str(kwargs.get("user") or "")
    return "|".join(f"{k}={v}" for k, v in sorted(parts.items()) if v)


def _model(kwargs: Mapping[str, Any]) -> str:
    """The public model name: the proxy's model group (or caching group), else ``model``."""
    sources = _metadata_sources(kwargs)
    group = _meta(sources, "model_group")
    groups: list[Any] = next((s["caching_groups"] for s in sources if s.get("caching_groups")), [])
    for caching_group in groups:
        if group and group in caching_group:
            return "|".join(sorted(str(m) for m in caching_group))
    return group or str(kwargs.get("model") or "")


def _bypass(reason: str) -> Request:
    return Request(text="", scope=Scope(), bypass=reason)


def _role(message: Any) -> Any:
    return message.get("role") if isinstance(message, Mapping) else getattr(message, "role", None)


def plan_request(kwargs: Mapping[str, Any], settings: LiteLLMCacheSettings) -> Request:
    """What to look up (or store) for one LiteLLM call; ``bypass`` says why not, if not.

    Chat calls embed the last user message; the system messages, earlier turns, tools and
    :data:`GENERATION_PARAMS` go in the scope (via :class:`semcache.llm.requests.ChatRequest`, the
    decorator's convention), with the tenant and the namespaces. Calls whose last message is
    not the user's (tool results, assistant prefill) are bypassed: their answer depends on
    more than the question.
    """
    model = _model(kwargs)
    if not model:
        return _bypass("no_model")
    call: dict[str, Any] = {k: v for k, v in kwargs.items() if k in GENERATION_PARAMS}
    call["model"] = model
    tenant = tenant_of(kwargs, settings.tenant)
    messages = kwargs.get("messages")
    try:
        if messages is not None:
            if not isinstance(messages, Sequence) or isinstance(messages, str) or not messages:
                return _bypass("no_messages")
            if _role(messages[-1]) != "user":
                return _bypass("last_message_not_user")
            turns = sum(1 for m in messages if _role(m) not in _SYSTEM_ROLES)
            if settings.max_messages is not None and turns > settings.max_messages:
                return _bypass("too_many_messages")
            for name in ("tools", "functions"):
                if kwargs.get(name):
                    call[name] = kwargs[name]
            call["messages"] = messages
            request = ChatRequest(tenant=lambda _: tenant)((), call)
        elif isinstance(kwargs.get("prompt"), str):
            call["prompt"] = kwargs["prompt"]
            request = PromptRequest(tenant=lambda _: tenant)((), call)
        else:
            return _bypass("no_text")
    except InvalidInputError:
        return _bypass("non_text_content")
    control = kwargs.get("cache")
    requested = str(control.get("namespace") or "") if isinstance(control, Mapping) else ""
    namespace = "/".join(n for n in (settings.namespace, requested) if n)
    return dataclasses.replace(
        request, scope=dataclasses.replace(request.scope, namespace=namespace)
    )


def tags_of(kwargs: Mapping[str, Any]) -> tuple[str, ...]:
    """The tags a request asks its stored entry to carry (``cache={"tags": [...]}``), checked
    (:class:`InvalidInputError`)."""
    control = kwargs.get("cache")
    tags = control.get("tags") if isinstance(control, Mapping) else None
    return check_tags(tags)
