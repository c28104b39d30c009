"""An LLM call described by the OpenTelemetry GenAI semantic conventions (``gen_ai.*``).

Pure functions from a call's keyword arguments and its :class:`ResponseInfo` to the attributes
of the upstream span (:meth:`semcache.telemetry.Telemetry.upstream`). Names follow the GenAI
client-inference conventions (``gen_ai.provider.name``, which replaced ``gen_ai.system``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from semcache._failopen import Trap
from semcache.llm.responses import ResponseInfo, inspect_response
from semcache.telemetry import Upstream

__all__ = ["provider_of", "report_response", "request_attributes", "response_report"]

#: LiteLLM-style ``provider/model`` prefixes whose GenAI well-known provider name differs.
_PREFIXES = {
    "azure": "azure.ai.openai",
    "azure_ai": "azure.ai.inference",
    "bedrock": "aws.bedrock",
    "bedrock_converse": "aws.bedrock",
    "vertex_ai": "gcp.vertex_ai",
    "vertex_ai_beta": "gcp.vertex_ai",
    "gemini": "gcp.gemini",
    "cohere_chat": "cohere",
    "mistral": "mistral_ai",
    "xai": "x_ai",
    "watsonx": "ibm.watsonx.ai",
}

#: Model-name families served by one provider, for a bare model name (best knowledge).
_FAMILIES = (
    (("gpt-", "chatgpt-", "o1", "o3", "o4", "text-davinci", "davinci", "babbage"), "openai"),
    (("claude",), "anthropic"),
    (("gemini",), "gcp.gemini"),
    (("mistral", "mixtral", "codestral", "ministral", "magistral"), "mistral_ai"),
    (("command",), "cohere"),
    (("deepseek",), "deepseek"),
    (("grok",), "x_ai"),
    (("sonar",), "perplexity"),
)

#: Request keyword arguments recorded as ``gen_ai.request.*`` (numbers only).
_NUMERIC = {
    "temperature": "gen_ai.request.temperature",
    "top_p": "gen_ai.request.top_p",
    "top_k": "gen_ai.request.top_k",
    "frequency_penalty": "gen_ai.request.frequency_penalty",
    "presence_penalty": "gen_ai.request.presence_penalty",
    "max_tokens": "gen_ai.request.max_tokens",
    "max_completion_tokens": "gen_ai.request.max_tokens",
    "seed": "gen_ai.request.seed",
}


def provider_of(model: str) -> str | None:
    """The GenAI provider name for ``model``: its LiteLLM-style prefix (``openai/gpt-4o``), else
    its family (``claude-*``: ``anthropic``), else ``None`` (unknown)."""
    prefix, sep, rest = model.partition("/")
    if sep and prefix and rest:
        return _PREFIXES.get(prefix, prefix)
    name = model.lower()
    for starts, provider in _FAMILIES:
        if name.startswith(starts):
            return provider
    return None


def request_attributes(
    kwargs: Mapping[str, Any], *, operation: str, provider: str | None = None, stream: bool = False
) -> dict[str, Any]:
    """The ``gen_ai.*`` attributes of a call made with ``kwargs`` (``None`` left out).

    ``provider`` overrides :func:`provider_of`; sampling parameters, the token limit, the seed,
    stop sequences and the choice count (when not 1) are read where given as plain values.
    """
    model = kwargs.get("model")
    model = str(model) if model not in (None, "") else None
    attrs: dict[str, Any] = {
        "gen_ai.operation.name": operation,
        "gen_ai.provider.name": provider or (provider_of(model) if model else None),
        "gen_ai.request.model": model,
    }
    for arg, name in _NUMERIC.items():
        value = kwargs.get(arg)
        if name not in attrs and isinstance(value, int | float) and not isinstance(value, bool):
            attrs[name] = value
    stop = kwargs.get("stop")
    if isinstance(stop, str):
        attrs["gen_ai.request.stop_sequences"] = [stop]
    elif isinstance(stop, list | tuple) and all(isinstance(s, str) for s in stop) and stop:
        attrs["gen_ai.request.stop_sequences"] = list(stop)
    n = kwargs.get("n")
    if isinstance(n, int) and not isinstance(n, bool) and n != 1:
        attrs["gen_ai.request.choice.count"] = n
    if stream or kwargs.get("stream") is True:
        attrs["gen_ai.request.stream"] = True
    return {k: v for k, v in attrs.items() if v is not None}


def response_report(info: ResponseInfo) -> dict[str, Any]:
    """Keyword arguments for :meth:`semcache.telemetry.Upstream.respond` from ``info``."""
    return {
        "model": info.model,
        "response_id": info.response_id,
        "finish_reasons": info.finish_reasons,
        "input_tokens": info.prompt_tokens if info.usage else None,
        "output_tokens": info.completion_tokens if info.usage else None,
    }


def report_response(up: Upstream, response: Any) -> None:
    """Report on ``up`` what a plain (not streamed) ``response`` says about itself, if it can be
    read (an answer the cache cannot inspect is still the caller's answer)."""
    with Trap(None, None, "store"):
        up.respond(**response_report(inspect_response(response)))
