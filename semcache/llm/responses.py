"""Reading LLM responses (OpenAI-style dicts or objects) and turning them into JSON and back."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from semcache.errors import CorruptEntryError, NotCacheableError

__all__ = [
    "Codec",
    "JsonCodec",
    "ModelCodec",
    "ResponseInfo",
    "inspect_response",
    "inspect_stream",
    "refusal_reason",
]

T = TypeVar("T")

_JSON_SCALARS = (str, int, float, bool, type(None))


def _get(obj: Any, name: str, default: Any = None) -> Any:
    if isinstance(obj, Mapping):
        return obj.get(name, default)
    return getattr(obj, name, default)


@dataclass(frozen=True, slots=True, kw_only=True)
class ResponseInfo:
    """What the cache (and the upstream span) needs to know about a response.

    ``usage`` says whether the response reported token usage at all (``prompt_tokens`` and
    ``completion_tokens`` are 0 when it did not); ``model`` and ``response_id`` are the
    response's own, ``finish_reasons`` one per choice.
    """

    text: str
    finish_reason: str | None = None
    tool_calls: bool = False
    prompt_tokens: int = 0
    completion_tokens: int = 0
    error: bool = False
    usage: bool = False
    model: str | None = None
    response_id: str | None = None
    finish_reasons: tuple[str, ...] = ()


def _tokens(usage: Any, *names: str) -> int:
    for name in names:
        value = _get(usage, name)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return 0


def _usage(obj: Any) -> tuple[int, int] | None:
    """(input, output) tokens of an OpenAI/LiteLLM ``usage`` (``prompt_tokens``...) or a
    Responses/Anthropic-style one (``input_tokens``...); ``None`` if there is none."""
    usage = _get(obj, "usage")
    if usage is None or isinstance(usage, str | int | float):
        return None
    return (
        _tokens(usage, "prompt_tokens", "input_tokens"),
        _tokens(usage, "completion_tokens", "output_tokens"),
    )


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _finish_reasons(choices: Any) -> tuple[str, ...]:
    return tuple(r for c in choices if isinstance(r := _get(c, "finish_reason"), str))


def inspect_response(obj: Any) -> ResponseInfo:
    """Text, finish reason, tool calls and token usage of a response.

    Understands plain strings, OpenAI chat/completion responses (dicts or objects) and anything
    with a ``content`` or ``text`` attribute (LangChain messages, ...).
    """
    if isinstance(obj, str):
        return ResponseInfo(text=obj)
    if _get(obj, "error") is not None and not _get(obj, "choices"):
        return ResponseInfo(text="", error=True)
    choices = _get(obj, "choices")
    if choices:
        first = choices[0]
        message = _get(first, "message")
        text = _get(message, "content") if message is not None else _get(first, "text")
        tool_calls = bool(
            message is not None and (_get(message, "tool_calls") or _get(message, "function_call"))
        )
        usage = _usage(obj)
        prompt, completion = usage or (0, 0)
        return ResponseInfo(
            text=text if isinstance(text, str) else "",
            finish_reason=_get(first, "finish_reason"),
            tool_calls=tool_calls,
            prompt_tokens=prompt,
            completion_tokens=completion,
            usage=usage is not None,
            model=_str(_get(obj, "model")),
            response_id=_str(_get(obj, "id")),
            finish_reasons=_finish_reasons(choices),
        )
    for attr in ("content", "text"):
        value = _get(obj, attr)
        if isinstance(value, str):
            return ResponseInfo(text=value, tool_calls=bool(_get(obj, "tool_calls")))
    return ResponseInfo(text="")


def inspect_stream(chunks: Iterable[Any]) -> ResponseInfo:
    """Fold a complete stream of chunks (strings or OpenAI chat chunks) into one ResponseInfo."""
    parts: list[str] = []
    finish: str | None = None
    finishes: dict[int, str] = {}
    tool_calls = reported = False
    prompt = completion = 0
    model = response_id = None
    for chunk in chunks:
        if isinstance(chunk, str):
            parts.append(chunk)
            continue
        for i, choice in enumerate(_get(chunk, "choices") or ()):
            delta = _get(choice, "delta")
            content = _get(delta, "content") if delta is not None else _get(choice, "text")
            if isinstance(content, str):
                parts.append(content)
            if delta is not None and (_get(delta, "tool_calls") or _get(delta, "function_call")):
                tool_calls = True
            finish = _get(choice, "finish_reason") or finish
            if isinstance(reason := _get(choice, "finish_reason"), str):
                index = _get(choice, "index")
                finishes[index if isinstance(index, int) else i] = reason
        if (usage := _usage(chunk)) is not None:  # usually on the last chunk only
            reported = True
            prompt, completion = max(prompt, usage[0]), max(completion, usage[1])
        model = _str(_get(chunk, "model")) or model
        response_id = _str(_get(chunk, "id")) or response_id
    return ResponseInfo(
        text="".join(parts),
        finish_reason=finish,
        tool_calls=tool_calls,
        prompt_tokens=prompt,
        completion_tokens=completion,
        usage=reported,
        model=model,
        response_id=response_id,
        finish_reasons=tuple(finishes[i] for i in sorted(finishes)),
    )


def refusal_reason(info: ResponseInfo, *, store_tool_calls: bool) -> str | None:
    """Why a response must not be stored, or ``None`` if it may be."""
    if info.error:
        return "error"
    if info.finish_reason == "length":
        return "truncated"
    if info.finish_reason == "content_filter":
        return "content_filter"
    if info.tool_calls:
        return None if store_tool_calls else "tool_calls"
    if not info.text.strip():
        return "empty"
    return None


class Codec(Protocol[T]):
    """Turns a response (or stream chunk) into a JSON value and back. Never pickle."""

    def encode(self, value: T) -> Any: ...

    def decode(self, data: Any) -> T: ...


_MAX_DEPTH = 200  # nesting a stored value may have (LLM responses nest a handful of levels)


def _check_json(value: Any) -> None:
    """Raise :class:`NotCacheableError` unless ``value`` is plain JSON, without recursion: a
    hostile value nested thousands deep is refused, not a ``RecursionError``."""
    todo: list[tuple[Any, str, int]] = [(value, "$", 0)]
    while todo:
        item, path, depth = todo.pop()
        if depth > _MAX_DEPTH:
            raise NotCacheableError(f"a value nested deeper than {_MAX_DEPTH} levels at {path}")
        if isinstance(item, _JSON_SCALARS):
            if isinstance(item, float) and item != item:  # NaN
                raise NotCacheableError(f"NaN at {path} cannot be stored as JSON")
        elif isinstance(item, list | tuple):
            todo.extend((v, f"{path}[{i}]", depth + 1) for i, v in enumerate(item))
        elif isinstance(item, Mapping):
            for k in item:
                if not isinstance(k, str):
                    raise NotCacheableError(f"non-string key {k!r} at {path}")
            todo.extend((v, f"{path}.{k}", depth + 1) for k, v in item.items())
        else:
            raise NotCacheableError(
                f"a {type(item).__name__} at {path} is not JSON; pass codec=ModelCodec(YourType)"
            )


class JsonCodec:
    """JSON values (str, numbers, bools, None, lists, dicts), stored and returned as they are."""

    def encode(self, value: Any) -> Any:
        _check_json(value)
        return value

    def decode(self, data: Any) -> Any:
        return data


class ModelCodec(Generic[T]):
    """Pydantic models (e.g. ``openai.types.chat.ChatCompletion``), dumped as JSON."""

    def __init__(self, model_type: type[T]) -> None:
        if not hasattr(model_type, "model_validate"):
            raise TypeError(f"{model_type!r} is not a pydantic model class")
        self._type = model_type

    def encode(self, value: T) -> Any:
        if not isinstance(value, self._type):
            raise NotCacheableError(f"expected a {self._type.__name__}, got {type(value).__name__}")
        return value.model_dump(mode="json")  # type: ignore[attr-defined]

    def decode(self, data: Any) -> T:
        try:
            return self._type.model_validate(data)  # type: ignore[attr-defined, no-any-return]
        except ValueError as e:
            raise CorruptEntryError(
                f"stored value is not a valid {self._type.__name__}: {e}"
            ) from e
