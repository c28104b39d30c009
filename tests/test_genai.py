"""The upstream (LLM) call's span and metrics follow the OpenTelemetry GenAI conventions.

Recorded with the SDK's in-memory exporter and reader (``otel`` fixture), for the four shells
of the decorator (sync, async, generator, async generator), the RAG cache's answer function, and
the responses the cache reads usage from (OpenAI dicts and objects, LiteLLM, streams).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from openai.types.chat import ChatCompletion
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind, StatusCode
from otel_capture import Otel

from semcache import (
    CachePolicy,
    MemoryBackend,
    ModelCodec,
    PromptRequest,
    SemanticCache,
    cache_options,
    cached,
)
from semcache.llm.genai import provider_of, request_attributes
from semcache.llm.responses import inspect_response, inspect_stream
from semcache.testing import HashingEmbedder

MESSAGES = [{"role": "user", "content": "What is the capital of France?"}]
PARAMS = {"model": "gpt-4o-mini", "temperature": 0.2, "max_tokens": 64, "top_p": 0.9}


def completion(text: str = "Paris.") -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": "gpt-4o-mini-2024-07-18",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 14, "completion_tokens": 3, "total_tokens": 17},
    }


def chunks() -> list[dict[str, Any]]:
    """An OpenAI chat stream with ``stream_options={"include_usage": True}``."""
    base = {"id": "chatcmpl-2", "object": "chat.completion.chunk", "model": "gpt-4o-mini-2024"}
    return [
        {**base, "choices": [{"index": 0, "delta": {"content": "Par"}, "finish_reason": None}]},
        {**base, "choices": [{"index": 0, "delta": {"content": "is."}, "finish_reason": None}]},
        {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
        {**base, "choices": [], "usage": {"prompt_tokens": 14, "completion_tokens": 2}},
    ]


def _cache(otel: Otel, **kwargs: Any) -> SemanticCache:
    return SemanticCache(
        embedder=HashingEmbedder(),
        backend=MemoryBackend(),
        policy=CachePolicy(min_similarity=0.8),
        telemetry=otel.telemetry(**kwargs),
    )


def upstream_spans(otel: Otel) -> list[ReadableSpan]:
    return [s for s in otel.spans.get_finished_spans() if s.kind is SpanKind.CLIENT]


def assert_chat_span(span: ReadableSpan, *, stream: bool, output_tokens: int) -> None:
    attrs = dict(span.attributes or {})
    assert span.name == "chat gpt-4o-mini"
    assert attrs["gen_ai.operation.name"] == "chat"
    assert attrs["gen_ai.provider.name"] == "openai"
    assert attrs["gen_ai.request.model"] == "gpt-4o-mini"
    assert attrs["gen_ai.request.temperature"] == 0.2
    assert attrs["gen_ai.request.max_tokens"] == 64
    assert attrs["gen_ai.request.top_p"] == 0.9
    assert attrs["gen_ai.response.model"].startswith("gpt-4o-mini-2024")
    assert attrs["gen_ai.response.finish_reasons"] == ("stop",)
    assert attrs["gen_ai.usage.input_tokens"] == 14
    assert attrs["gen_ai.usage.output_tokens"] == output_tokens
    assert "error.type" not in attrs
    assert span.status.status_code is not StatusCode.ERROR
    if stream:
        assert attrs["gen_ai.request.stream"] is True
        assert attrs["gen_ai.response.time_to_first_chunk"] >= 0
    else:
        assert "gen_ai.request.stream" not in attrs
        assert attrs["gen_ai.response.id"] == "chatcmpl-1"


def assert_genai_metrics(otel: Otel, *, output_tokens: int) -> None:
    model = {"gen_ai.request.model": "gpt-4o-mini", "gen_ai.provider.name": "openai"}
    durations = otel.points("gen_ai.client.operation.duration")
    assert sum(p.count for p in durations) == 1
    assert durations[0].attributes["gen_ai.operation.name"] == "chat"
    usage = {p.attributes["gen_ai.token.type"]: p for p in otel.points("gen_ai.client.token.usage")}
    assert usage["input"].sum == 14
    assert usage["output"].sum == output_tokens
    assert all(usage["input"].attributes[k] == v for k, v in model.items())
    stages = {
        p.attributes["semcache.stage"]: p.count for p in otel.points("semcache.stage.duration")
    }
    assert stages["upstream"] == 1


def test_sync_call_span_follows_genai_conventions(otel: Otel) -> None:
    calls = 0

    with _cache(otel) as cache:

        @cached(cache)
        def chat(**kwargs: Any) -> dict[str, Any]:
            nonlocal calls
            calls += 1
            return completion()

        chat(messages=MESSAGES, **PARAMS)
        assert chat(messages=MESSAGES, **PARAMS) == completion()  # a hit: no upstream span
    assert calls == 1
    (span,) = upstream_spans(otel)
    assert_chat_span(span, stream=False, output_tokens=3)
    assert_genai_metrics(otel, output_tokens=3)


def test_async_call_span_follows_genai_conventions(otel: Otel) -> None:
    with _cache(otel) as cache:

        @cached(cache)
        async def chat(**kwargs: Any) -> dict[str, Any]:
            await asyncio.sleep(0)
            return completion()

        async def run() -> None:
            await chat(messages=MESSAGES, **PARAMS)
            await chat(messages=MESSAGES, **PARAMS)

        asyncio.run(run())
    (span,) = upstream_spans(otel)
    assert_chat_span(span, stream=False, output_tokens=3)
    assert_genai_metrics(otel, output_tokens=3)


def test_stream_span_reports_the_usage_of_the_last_chunk(otel: Otel) -> None:
    with _cache(otel) as cache:

        @cached(cache)
        def chat(**kwargs: Any) -> Iterator[dict[str, Any]]:
            yield from chunks()

        assert list(chat(messages=MESSAGES, **PARAMS)) == chunks()
        assert list(chat(messages=MESSAGES, **PARAMS)) == chunks()  # replayed: no upstream
    (span,) = upstream_spans(otel)
    assert_chat_span(span, stream=True, output_tokens=2)
    assert_genai_metrics(otel, output_tokens=2)


def test_async_stream_span_reports_the_usage_of_the_last_chunk(otel: Otel) -> None:
    with _cache(otel) as cache:

        @cached(cache)
        async def chat(**kwargs: Any) -> AsyncIterator[dict[str, Any]]:
            for chunk in chunks():
                await asyncio.sleep(0)
                yield chunk

        async def run() -> list[list[dict[str, Any]]]:
            return [[c async for c in chat(messages=MESSAGES, **PARAMS)] for _ in range(2)]

        assert asyncio.run(run()) == [chunks(), chunks()]
    (span,) = upstream_spans(otel)
    assert_chat_span(span, stream=True, output_tokens=2)
    assert_genai_metrics(otel, output_tokens=2)


def test_a_long_bypassed_stream_reports_its_usage_without_keeping_its_chunks(
    otel: Otel,
) -> None:
    head = chunks()[0]
    seen: list[Any] = []
    with _cache(otel) as cache:

        @cached(cache)
        def chat(**kwargs: Any) -> Iterator[Any]:
            for _ in range(5000):
                yield dict(head)
            yield from chunks()[2:]

        with cache_options(bypass=True):
            for chunk in chat(messages=MESSAGES, **PARAMS):
                seen.append(chunk)
        assert len(seen) == 5002
        assert cache.info().entries == 0
    (span,) = upstream_spans(otel)
    attrs = dict(span.attributes or {})
    assert attrs["gen_ai.usage.output_tokens"] == 2
    assert attrs["gen_ai.response.finish_reasons"] == ("stop",)


def test_an_aborted_stream_ends_its_span_without_usage(otel: Otel) -> None:
    with _cache(otel) as cache:

        @cached(cache)
        def chat(**kwargs: Any) -> Iterator[dict[str, Any]]:
            yield from chunks()

        stream = chat(messages=MESSAGES, **PARAMS)
        next(stream)
        stream.close()
        assert cache.info().entries == 0
    (span,) = upstream_spans(otel)
    assert "gen_ai.usage.input_tokens" not in (span.attributes or {})
    assert span.status.status_code is not StatusCode.ERROR
    assert otel.points("gen_ai.client.token.usage") == []


def test_a_failing_call_sets_error_type_and_propagates(otel: Otel) -> None:
    class RateLimitError(Exception):
        pass

    with _cache(otel) as cache:

        @cached(cache)
        def chat(**kwargs: Any) -> dict[str, Any]:
            raise RateLimitError("slow down")

        with pytest.raises(RateLimitError):
            chat(messages=MESSAGES, **PARAMS)
    (span,) = upstream_spans(otel)
    assert span.attributes is not None
    assert span.attributes["error.type"].endswith("RateLimitError")
    assert span.status.status_code is StatusCode.ERROR
    (point,) = otel.points("gen_ai.client.operation.duration")
    assert point.attributes["error.type"] == span.attributes["error.type"]
    assert otel.total("semcache.errors") == 0  # the LLM's error, not the cache's


def test_bypassed_and_prompt_calls_get_the_span_too(otel: Otel) -> None:
    with _cache(otel) as cache:

        @cached(cache, request=PromptRequest(), provider="anthropic")
        def ask(prompt: str, model: str = "my-claude") -> str:
            return "an answer"

        ask("hello there", model="my-claude")
        ask("", model="my-claude")  # empty text: bypassed, still an upstream call
    spans = upstream_spans(otel)
    assert [s.name for s in spans] == ["text_completion my-claude"] * 2
    assert all((s.attributes or {})["gen_ai.provider.name"] == "anthropic" for s in spans)


def test_genai_off_leaves_a_plain_upstream_span(otel: Otel) -> None:
    with _cache(otel, genai=False) as cache:

        @cached(cache)
        def chat(**kwargs: Any) -> dict[str, Any]:
            return completion()

        chat(messages=MESSAGES, **PARAMS)
    spans = {s.name: s for s in otel.spans.get_finished_spans()}
    assert "semcache.upstream" in spans
    assert not any(k.startswith("gen_ai.") for k in spans["semcache.upstream"].attributes or {})
    assert otel.points("gen_ai.client.operation.duration") == []
    assert otel.points("gen_ai.client.token.usage") == []


@pytest.mark.filterwarnings("ignore:Item .* is using the `ReadOnly` qualifier:UserWarning")
def test_pydantic_and_litellm_responses_report_usage() -> None:
    from litellm import ModelResponse

    typed = ChatCompletion.model_validate(completion())
    info = inspect_response(typed)
    assert (info.usage, info.prompt_tokens, info.completion_tokens) == (True, 14, 3)
    assert info.model == "gpt-4o-mini-2024-07-18"
    lite = ModelResponse(**completion())
    info = inspect_response(lite)
    assert (info.usage, info.prompt_tokens, info.completion_tokens) == (True, 14, 3)
    assert info.finish_reasons == ("stop",)
    bare = inspect_response({"choices": [{"message": {"content": "x"}}]})
    assert not bare.usage
    assert inspect_stream(chunks()).usage
    assert not inspect_stream(chunks()[:-1]).usage
    responses_api = inspect_response(
        {"choices": [{"message": {"content": "x"}}], "usage": {"input_tokens": 5}}
    )
    assert (responses_api.prompt_tokens, responses_api.completion_tokens) == (5, 0)


def test_typed_responses_through_the_decorator(otel: Otel) -> None:
    with _cache(otel) as cache:

        @cached(cache, codec=ModelCodec(ChatCompletion))
        def chat(**kwargs: Any) -> ChatCompletion:
            return ChatCompletion.model_validate(completion())

        chat(messages=MESSAGES, **PARAMS)
    (span,) = upstream_spans(otel)
    assert_chat_span(span, stream=False, output_tokens=3)


@pytest.mark.parametrize(
    ("model", "provider"),
    [
        ("gpt-4o-mini", "openai"),
        ("o3-mini", "openai"),
        ("claude-3-5-sonnet", "anthropic"),
        ("gemini-2.0-flash", "gcp.gemini"),
        ("bedrock/anthropic.claude-v2", "aws.bedrock"),
        ("azure/my-deployment", "azure.ai.openai"),
        ("mistral/mistral-small", "mistral_ai"),
        ("ollama/llama3", "ollama"),
        ("my-finetune", None),
    ],
)
def test_provider_from_prefix_or_family(model: str, provider: str | None) -> None:
    assert provider_of(model) == provider


def test_request_attributes_read_plain_parameters_only() -> None:
    attrs = request_attributes(
        {
            "model": "gpt-4o",
            "max_completion_tokens": 10,
            "stop": "\n",
            "n": 2,
            "seed": 7,
            "temperature": True,  # not a number: left out
            "messages": MESSAGES,
        },
        operation="chat",
    )
    assert attrs == {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "gpt-4o",
        "gen_ai.request.max_tokens": 10,
        "gen_ai.request.seed": 7,
        "gen_ai.request.stop_sequences": ["\n"],
        "gen_ai.request.choice.count": 2,
    }


def test_the_rag_answer_function_is_the_upstream_call(otel: Otel, tmp_path: Any) -> None:
    from semcache.retrieval import (
        ChunkingConfig,
        Document,
        EmbeddedRetrievalStore,
        HybridRetriever,
        Indexer,
        RagCache,
        RecursiveSplitter,
        ScoredChunk,
    )

    embedder = HashingEmbedder()
    store = EmbeddedRetrievalStore(tmp_path / "store")
    Indexer(store, embedder, RecursiveSplitter(ChunkingConfig(max_tokens=64))).upsert(
        [Document(id="paris", text="Paris is the capital of France.")]
    )
    tel = otel.telemetry()
    cache = SemanticCache(embedder=embedder, backend=MemoryBackend(), telemetry=tel)
    rag = RagCache(cache=cache, retriever=HybridRetriever(store, embedder, telemetry=tel), k=1)

    def answer(question: str, context: list[ScoredChunk]) -> dict[str, Any]:
        return completion(context[0].chunk.text)

    async def aanswer(question: str, context: list[ScoredChunk]) -> dict[str, Any]:
        return completion(context[0].chunk.text)

    rag(answer)("What is the capital of France?")
    asyncio.run(rag(aanswer)("Which city is the French capital?"))
    spans = upstream_spans(otel)
    assert [s.name for s in spans] == ["chat", "chat"]
    assert all((s.attributes or {})["gen_ai.usage.output_tokens"] == 3 for s in spans)
    stages = {
        p.attributes["semcache.stage"]: p.count for p in otel.points("semcache.stage.duration")
    }
    assert (stages["retrieval"], stages["upstream"]) == (2, 2)
    cache.close()
