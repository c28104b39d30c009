"""Mapping an LLM call's arguments onto what the cache needs: the text to embed and the scope.

Adapters are small callables. :class:`ChatRequest` understands OpenAI-style ``messages`` calls
(also LiteLLM's ``completion``); :class:`PromptRequest` a function taking a prompt string.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from semcache.errors import InvalidInputError
from semcache.keys import Scope, canonical_json

__all__ = [
    "ChatRequest",
    "PromptRequest",
    "Request",
    "RequestAdapter",
    "last_user_turn",
    "message_text",
]

#: Call arguments that never change the answer, so never split the cache.
TRANSPORT_ARGS = frozenset(
    {
        "stream",
        "stream_options",
        "timeout",
        "request_timeout",
        "api_key",
        "api_base",
        "base_url",
        "api_version",
        "organization",
        "extra_headers",
        "headers",
        "metadata",
        "user",
        "caching",
        "cache",
        "num_retries",
        "max_retries",
        "mock_response",
    }
)


@dataclass(frozen=True, slots=True, kw_only=True)
class Request:
    """What a call asks the cache: embed ``text``, look up in ``scope``.

    ``bypass`` names a reason to skip the cache for this call (``""`` to use it).
    """

    text: str
    scope: Scope
    bypass: str = ""


class RequestAdapter(Protocol):
    def __call__(self, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> Request: ...


_SYSTEM_ROLES = ("system", "developer")


def _get(obj: Any, name: str) -> Any:
    return obj.get(name) if isinstance(obj, Mapping) else getattr(obj, name, None)


def message_text(message: Any) -> str:
    """The text of one chat message; list-of-parts content is joined, non-text parts refused."""
    content = _get(message, "content")
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, Sequence):
        texts = []
        for part in content:
            kind = _get(part, "type")
            if kind == "text":
                texts.append(str(_get(part, "text") or ""))
            else:
                raise InvalidInputError(f"message part of type {kind!r} cannot be embedded as text")
        return "\n".join(texts)
    raise InvalidInputError(f"message content of type {type(content).__name__} is not text")


def last_user_turn(messages: Sequence[Any]) -> tuple[str, list[Any]]:
    """The last user message's text, and every message before it (the history)."""
    for i in range(len(messages) - 1, -1, -1):
        if _get(messages[i], "role") == "user":
            return message_text(messages[i]), list(messages[:i])
    raise InvalidInputError("no user message to cache on")


def _plain(message: Any) -> dict[str, Any]:
    if isinstance(message, Mapping):
        return dict(message)
    dump = getattr(message, "model_dump", None)
    if callable(dump):
        return dict(dump(mode="json", exclude_none=True))
    return {"role": _get(message, "role"), "content": _get(message, "content")}


def _digest(value: Any) -> str:
    return hashlib.blake2b(canonical_json(value).encode(), digest_size=12).hexdigest()


@dataclass(frozen=True, slots=True, kw_only=True)
class ChatRequest:
    """OpenAI-style chat calls: ``fn(model=..., messages=[...], **params)``.

    The last message must be the user's (calls ending in tool results or an assistant prefill
    bypass the cache); its text is embedded. Everything else that shapes the answer is scope:
    the model, generation parameters (all keyword arguments except transport ones such as
    ``timeout``), the system/developer messages (their text, and their roles and places unless
    there is one leading system message), ``tools``, the earlier turns of the conversation (so
    "and in French?" never matches across conversations), the last message's ``name``, and the
    tenant (``user=0`` is a tenant; only ``None`` or ``""`` is none).

    Attributes:
        tenant: a function of the call giving the tenant; by default the ``user`` argument.
        skip_nondeterministic: bypass calls sampling with temperature > 0, top_p < 1 or n > 1.
        include_history: put the earlier turns in the scope (default). Turn off only if every
            call is a single question.
        ignore: extra keyword arguments that do not change the answer.
    """

    tenant: Callable[[Mapping[str, Any]], str | None] | None = None
    skip_nondeterministic: bool = False
    include_history: bool = True
    ignore: frozenset[str] = field(default_factory=frozenset)

    def __call__(self, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> Request:
        messages = kwargs.get("messages")
        if messages is None and args:
            messages = args[0]
        if not isinstance(messages, Sequence) or isinstance(messages, str | bytes):
            raise InvalidInputError("a chat call needs a list of messages")
        text, before = last_user_turn(messages)
        if len(before) + 1 != len(messages):
            # Tool results or an assistant prefill follow the question: the answer depends on
            # them, and they are rarely repeated. Never serve such a call from the cache.
            return Request(text=text, scope=Scope(), bypass="not_a_user_turn")
        instructions = [
            (i, _get(m, "role"), message_text(m))
            for i, m in enumerate(before)
            if _get(m, "role") in _SYSTEM_ROLES
        ]
        history = [_plain(m) for m in before if _get(m, "role") not in _SYSTEM_ROLES]
        skip = TRANSPORT_ARGS | self.ignore | {"messages", "model", "tools", "functions"}
        params = {k: v for k, v in kwargs.items() if k not in skip}
        if [(i, role) for i, role, _ in instructions] not in ([], [(0, "system")]):
            # Beyond one leading system message, where each sits and its role shape the answer.
            params["semcache.system"] = _digest(instructions)
        if self.include_history and history:
            params["semcache.history"] = _digest(history)
        if (name := _get(messages[-1], "name")) is not None:
            params["semcache.name"] = name
        scope = Scope(
            model=str(kwargs.get("model") or ""),
            params=params,
            system="\n".join(text for _, _, text in instructions),
            tools=kwargs.get("tools") or kwargs.get("functions"),
            tenant=_tenant(self.tenant(kwargs) if self.tenant else kwargs.get("user")),
        )
        bypass = "nondeterministic" if self.skip_nondeterministic and _samples(kwargs) else ""
        return Request(text=text, scope=scope, bypass=bypass)


def _tenant(value: Any) -> str:
    """The tenant as scope text: ``None`` is no tenant, and ``0`` or ``False`` are tenants."""
    if value is None or isinstance(value, str):
        return value or ""
    return canonical_json(value)


def _samples(kwargs: Mapping[str, Any]) -> bool:
    temperature = kwargs.get("temperature")
    top_p = kwargs.get("top_p")
    n = kwargs.get("n")
    return bool(
        (temperature is None or temperature > 0)
        or (top_p is not None and top_p < 1)
        or (n is not None and n > 1)
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class PromptRequest:
    """Functions taking a prompt string: ``fn(prompt, **params)`` or ``fn(question=...)``.

    Attributes:
        arg: the name of the text argument (else the first positional argument).
        tenant: a function of the call giving the tenant.
        ignore: keyword arguments that do not change the answer.
    """

    arg: str = "prompt"
    tenant: Callable[[Mapping[str, Any]], str | None] | None = None
    ignore: frozenset[str] = field(default_factory=frozenset)

    def __call__(self, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> Request:
        if self.arg in kwargs:
            text = kwargs[self.arg]
            rest = list(args)
        elif args:
            text, rest = args[0], list(args[1:])
        else:
            raise InvalidInputError(f"no {self.arg!r} argument to cache on")
        if not isinstance(text, str):
            raise InvalidInputError(f"the prompt must be a str, got {type(text).__name__}")
        skip = TRANSPORT_ARGS | self.ignore | {self.arg, "model"}
        params: dict[str, Any] = {k: v for k, v in kwargs.items() if k not in skip}
        if rest:
            params["semcache.args"] = rest
        tenant = self.tenant(kwargs) if self.tenant else None
        return Request(
            text=text,
            scope=Scope(model=str(kwargs.get("model") or ""), params=params, tenant=tenant or ""),
        )
