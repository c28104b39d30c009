"""``stream=True`` on a plain function bypasses the cache (issue #14, finding 7).

A plain (non-generator) function asked to stream returns a stream object: it is never answered
with a stored non-stream value, and its stream is never stored. Tested with plain fakes and
with the real ``openai`` client over ``httpx.MockTransport``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from semcache import CachePolicy, EmbeddedBackend, ModelCodec, SemanticCache, cached
from semcache.models import CallOutcome, Outcome
from semcache.testing import HashingEmbedder

MESSAGES = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture
def cache(tmp_path: Path) -> Iterator[SemanticCache]:
    with SemanticCache(
        embedder=HashingEmbedder(),
        backend=EmbeddedBackend(tmp_path),
        policy=CachePolicy(min_similarity=0.8),
    ) as c:
        yield c


def answer(text: str) -> dict[str, Any]:
    return {"choices": [{"index": 0, "message": {"role": "assistant", "content": text}}]}


def bypassed_for_stream(outcome: CallOutcome) -> bool:
    return outcome.outcome is Outcome.BYPASS and outcome.reason == "stream"


# -- plain functions ------------------------------------------------------------------------


def test_plain_function_with_stream_true_bypasses(cache: SemanticCache) -> None:
    calls: list[bool] = []
    outcomes: list[CallOutcome] = []

    @cached(cache, on_outcome=outcomes.append)
    def chat(*, model: str, messages: list[dict[str, str]], stream: bool = False) -> Any:
        calls.append(stream)
        return iter(["Par", "is"]) if stream else answer("Paris")

    assert chat(model="m", messages=MESSAGES) == answer("Paris")
    assert chat(model="m", messages=MESSAGES) == answer("Paris")  # a hit
    streamed = chat(model="m", messages=MESSAGES, stream=True)
    assert list(streamed) == ["Par", "is"]  # the stream, not the stored dict
    assert calls == [False, True]
    info = cache.info()
    assert (info.hits, info.bypasses, info.stores, info.entries) == (1, 1, 1, 1)
    assert bypassed_for_stream(outcomes[-1])
    # stream=False is the default: it shares the non-stream entry.
    assert chat(model="m", messages=MESSAGES, stream=False) == answer("Paris")
    assert cache.info().hits == 2


async def test_async_function_with_stream_true_bypasses(cache: SemanticCache) -> None:
    calls: list[bool] = []
    outcomes: list[CallOutcome] = []

    @cached(cache, on_outcome=outcomes.append)
    async def chat(*, model: str, messages: list[dict[str, str]], stream: bool = False) -> Any:
        calls.append(stream)
        return ["Par", "is"] if stream else answer("Paris")

    assert await chat(model="m", messages=MESSAGES) == answer("Paris")
    assert await chat(model="m", messages=MESSAGES, stream=True) == ["Par", "is"]
    assert await chat(model="m", messages=MESSAGES, stream=True) == ["Par", "is"]
    assert calls == [False, True, True]
    assert (cache.info().bypasses, cache.info().entries) == (2, 1)
    assert bypassed_for_stream(outcomes[-1])


def test_generator_functions_still_replay_streams(cache: SemanticCache) -> None:
    calls: list[bool] = []

    @cached(cache)
    def chat(*, model: str, messages: list[dict[str, str]], stream: bool = True) -> Iterator[str]:
        calls.append(stream)
        yield from ("Par", "is")

    assert list(chat(model="m", messages=MESSAGES, stream=True)) == ["Par", "is"]
    assert list(chat(model="m", messages=MESSAGES, stream=True)) == ["Par", "is"]
    assert calls == [True]
    assert cache.info().hits == 1


# -- the openai SDK over a local transport --------------------------------------------------


def _completion(body: dict[str, Any]) -> httpx.Response:
    """A fake Chat Completions endpoint: JSON, or server-sent events when ``stream`` is set."""
    base = {"id": "c1", "created": 1, "model": body["model"]}
    if not body.get("stream"):
        return httpx.Response(
            200,
            json={
                **base,
                "object": "chat.completion",
                "choices": [
                    {
                        "index": 0,
                        "finish_reason": "stop",
                        "message": {"role": "assistant", "content": "Paris"},
                    }
                ],
            },
        )
    events = [
        {**base, "object": "chat.completion.chunk", "choices": [choice]}
        for choice in (
            {"index": 0, "delta": {"role": "assistant", "content": "Par"}},
            {"index": 0, "delta": {"content": "is"}},
            {"index": 0, "delta": {}, "finish_reason": "stop"},
        )
    ]
    sse = "".join(f"data: {json.dumps(e)}\n\n" for e in events) + "data: [DONE]\n\n"
    return httpx.Response(200, content=sse.encode(), headers={"content-type": "text/event-stream"})


class FakeOpenAI:
    """Counts the HTTP requests reaching the fake endpoint."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        self.requests.append(body)
        return _completion(body)


def test_openai_client_stream_true_is_bypassed(cache: SemanticCache) -> None:
    server = FakeOpenAI()
    http = httpx.Client(transport=httpx.MockTransport(server))
    with openai.OpenAI(api_key="k", base_url="http://llm.test/v1", http_client=http) as client:

        @cached(cache, codec=ModelCodec(ChatCompletion))
        def chat(**kwargs: Any) -> Any:
            return client.chat.completions.create(**kwargs)

        first = chat(model="gpt-test", messages=MESSAGES)
        assert isinstance(first, ChatCompletion)
        assert isinstance(chat(model="gpt-test", messages=MESSAGES), ChatCompletion)  # a hit
        stream = chat(model="gpt-test", messages=MESSAGES, stream=True)
        assert isinstance(stream, openai.Stream)
        chunks = list(stream)
    assert all(isinstance(c, ChatCompletionChunk) for c in chunks)
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "Paris"
    assert [r.get("stream", False) for r in server.requests] == [False, True]
    info = cache.info()
    assert (info.hits, info.bypasses, info.entries) == (1, 1, 1)


async def test_async_openai_client_stream_true_is_bypassed(cache: SemanticCache) -> None:
    server = FakeOpenAI()
    http = httpx.AsyncClient(transport=httpx.MockTransport(server))
    async with openai.AsyncOpenAI(
        api_key="k", base_url="http://llm.test/v1", http_client=http
    ) as client:

        @cached(cache, codec=ModelCodec(ChatCompletion))
        async def chat(**kwargs: Any) -> Any:
            return await client.chat.completions.create(**kwargs)

        assert isinstance(await chat(model="gpt-test", messages=MESSAGES), ChatCompletion)
        stream = await chat(model="gpt-test", messages=MESSAGES, stream=True)
        assert isinstance(stream, openai.AsyncStream)
        chunks = [c async for c in stream]
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "Paris"
    assert [r.get("stream", False) for r in server.requests] == [False, True]
    assert (cache.info().bypasses, cache.info().entries) == (1, 1)
