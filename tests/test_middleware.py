"""The @cached decorator on all four kinds of function, with the hashing embedder."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from semcache import (
    CachePolicy,
    EmbeddedBackend,
    ModelCodec,
    NotCacheableError,
    PromptRequest,
    SemanticCache,
    cache_options,
    cached,
)
from semcache.testing import HashingEmbedder


def chat_response(text: str, *, finish: str = "stop", tool_calls: bool = False) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": text}
    if tool_calls:
        message["tool_calls"] = [
            {"id": "1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
        ]
    return {
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
        "usage": {"prompt_tokens": 12, "completion_tokens": 30},
    }


def chunk(text: str | None, finish: str | None = None) -> dict[str, Any]:
    return {"choices": [{"index": 0, "delta": {"content": text}, "finish_reason": finish}]}


def msgs(question: str, system: str = "Be brief.") -> list[dict[str, str]]:
    return [{"role": "system", "content": system}, {"role": "user", "content": question}]


@pytest.fixture
def cache(tmp_path: Path) -> Iterator[SemanticCache]:
    with SemanticCache(
        embedder=HashingEmbedder(),
        backend=EmbeddedBackend(tmp_path),
        policy=CachePolicy(min_similarity=0.8),
    ) as c:
        yield c


class Upstream:
    """A fake LLM that counts calls (the thing the cache must avoid calling)."""

    def __init__(self) -> None:
        self.calls = 0
        self.lock = threading.Lock()

    def hit(self) -> int:
        with self.lock:
            self.calls += 1
            return self.calls


def test_sync_function_hit_miss_and_partitions(cache: SemanticCache) -> None:
    up = Upstream()

    @cached(cache)
    def chat(
        *, model: str, messages: list[dict[str, str]], temperature: float = 0, user: str = ""
    ) -> Any:
        return chat_response(f"answer #{up.hit()}")

    first = chat(model="m1", messages=msgs("what is the capital of france"))
    again = chat(model="m1", messages=msgs("what is the capital of france please"))
    assert again == first
    assert up.calls == 1
    chat(model="m2", messages=msgs("what is the capital of france"))
    chat(model="m1", messages=msgs("what is the capital of france", system="Be verbose."))
    chat(model="m1", messages=msgs("what is the capital of france"), temperature=0.5)
    chat(model="m1", messages=msgs("what is the capital of france"), user="tenant-b")
    assert up.calls == 5
    info = chat.cache_info()  # type: ignore[attr-defined]
    assert info.hits == 1
    assert info.misses == 5
    assert info.stores == 5
    assert info.tokens_saved == 42


def test_history_is_part_of_the_scope(cache: SemanticCache) -> None:
    up = Upstream()

    @cached(cache)
    def chat(*, model: str, messages: list[dict[str, str]]) -> Any:
        return chat_response(f"answer #{up.hit()}")

    a = [
        {"role": "user", "content": "tell me about paris"},
        {"role": "assistant", "content": "..."},
        {"role": "user", "content": "and its population"},
    ]
    b = [
        {"role": "user", "content": "tell me about tokyo"},
        {"role": "assistant", "content": "..."},
        {"role": "user", "content": "and its population"},
    ]
    chat(model="m", messages=a)
    chat(model="m", messages=b)
    chat(model="m", messages=a)
    assert up.calls == 2


async def test_async_function_matches_sync_decisions(tmp_path: Path) -> None:
    up = Upstream()
    results: dict[str, list[Any]] = {}
    for kind in ("sync", "async"):
        c = SemanticCache(
            embedder=HashingEmbedder(),
            backend=EmbeddedBackend(tmp_path / kind),
            policy=CachePolicy(min_similarity=0.8),
        )
        if kind == "sync":

            @cached(c, request=PromptRequest())
            def ask(prompt: str) -> str:
                return f"{prompt} -> #{up.hit()}"

            out = [
                ask(p) for p in ("red apple pie", "red apple pie recipe", "blue car", "blue car")
            ]
        else:

            @cached(c, request=PromptRequest())
            async def ask_async(prompt: str) -> str:
                return f"{prompt} -> #{up.hit()}"

            out = [
                await ask_async(p)
                for p in ("red apple pie", "red apple pie recipe", "blue car", "blue car")
            ]
        results[kind] = [o.split(" -> ")[0] for o in out]
        info = c.info()
        results[kind].append((info.hits_exact, info.hits_semantic, info.misses))
        c.close()
    assert results["sync"] == results["async"]
    assert results["sync"][-1] == (1, 1, 2)


def test_sync_stream_replays_and_aborts_are_not_stored(cache: SemanticCache) -> None:
    up = Upstream()

    @cached(cache)
    def stream(*, model: str, messages: list[dict[str, str]]) -> Iterator[dict[str, Any]]:
        up.hit()
        yield chunk("Par")
        yield chunk("is")
        yield chunk(None, "stop")

    # An aborted stream (consumer stops early) is never stored.
    it = stream(model="m", messages=msgs("capital of france"))
    next(it)
    it.close()
    assert cache.info().stores == 0
    full = list(stream(model="m", messages=msgs("capital of france")))
    replay = list(stream(model="m", messages=msgs("capital of france")))
    assert replay == full
    assert len(replay) == 3
    assert up.calls == 2


async def test_async_stream_replays(cache: SemanticCache) -> None:
    up = Upstream()

    @cached(cache)
    async def stream(*, model: str, messages: list[dict[str, str]]) -> AsyncIterator[str]:
        up.hit()
        for part in ("The ", "answer ", "is 42."):
            await asyncio.sleep(0)
            yield part

    first = [c async for c in stream(model="m", messages=msgs("the meaning of life"))]
    second = [c async for c in stream(model="m", messages=msgs("the meaning of life"))]
    assert first == second == ["The ", "answer ", "is 42."]
    assert up.calls == 1


def test_streams_and_values_do_not_share_entries(cache: SemanticCache) -> None:
    @cached(cache, namespace="shared")
    def value(*, model: str, messages: list[dict[str, str]]) -> Any:
        return chat_response("value answer")

    @cached(cache, namespace="shared")
    def stream(*, model: str, messages: list[dict[str, str]]) -> Iterator[str]:
        yield "stream answer"

    value(model="m", messages=msgs("q about things"))
    assert list(stream(model="m", messages=msgs("q about things"))) == ["stream answer"]
    assert cache.info().hits == 0


@pytest.mark.parametrize(
    ("response", "reason"),
    [
        (chat_response("cut off", finish="length"), "truncated"),
        (chat_response("", finish="stop"), "empty"),
        (chat_response("x", tool_calls=True, finish="tool_calls"), "tool_calls"),
        ({"error": {"message": "rate limited"}}, "error"),
    ],
)
def test_ineligible_responses_are_not_stored(
    cache: SemanticCache, response: dict[str, Any], reason: str
) -> None:
    up = Upstream()

    @cached(cache)
    def chat(*, model: str, messages: list[dict[str, str]]) -> Any:
        up.hit()
        return response

    assert chat(model="m", messages=msgs("a question")) == response
    assert chat(model="m", messages=msgs("a question")) == response
    assert up.calls == 2
    assert cache.info().store_refusals == 2
    assert cache.info().entries == 0


def test_truncated_streams_are_not_stored(cache: SemanticCache) -> None:
    @cached(cache)
    def stream(*, model: str, messages: list[dict[str, str]]) -> Iterator[dict[str, Any]]:
        yield chunk("partial answ")
        yield chunk(None, "length")

    list(stream(model="m", messages=msgs("long question")))
    assert cache.info().entries == 0
    assert cache.info().store_refusals == 1


def test_tool_calls_stored_when_asked(cache: SemanticCache) -> None:
    @cached(cache, store_tool_calls=True)
    def chat(*, model: str, messages: list[dict[str, str]]) -> Any:
        return chat_response("", tool_calls=True, finish="tool_calls")

    chat(model="m", messages=msgs("call a tool"))
    assert cache.info().stores == 1


def test_upstream_errors_propagate_and_are_not_stored(cache: SemanticCache) -> None:
    @cached(cache)
    def chat(*, model: str, messages: list[dict[str, str]]) -> Any:
        raise TimeoutError("upstream timed out")

    with pytest.raises(TimeoutError):
        chat(model="m", messages=msgs("q"))
    assert cache.info().entries == 0


def test_bypass_and_per_call_options(cache: SemanticCache) -> None:
    up = Upstream()

    @cached(cache, request=PromptRequest())
    def ask(prompt: str) -> str:
        return f"#{up.hit()}"

    ask("green tea benefits")
    with cache_options(bypass=True):
        assert ask("green tea benefits") == "#2"
    with cache_options(min_similarity=1.0):
        assert ask("green tea benefits list") == "#3"
    with cache_options(tenant="acme"):
        assert ask("green tea benefits") == "#4"
    with cache_options(store=False):
        assert ask("a brand new question") == "#5"
    assert ask("a brand new question") == "#6"
    assert ask("green tea benefits") == "#1"
    assert ask.uncached("green tea benefits") == "#7"  # type: ignore[attr-defined]
    assert cache.info().bypasses == 1


def test_invalid_input_bypasses_the_cache(cache: SemanticCache) -> None:
    up = Upstream()

    @cached(cache)
    def chat(*, model: str, messages: list[Any]) -> Any:
        up.hit()
        return chat_response("ok")

    image = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]
    for bad in (
        image,
        [{"role": "user", "content": ""}],
        [{"role": "user", "content": "x" * 9000}],
        [{"role": "assistant", "content": "no user turn"}],
    ):
        assert chat(model="m", messages=bad) == chat_response("ok")
    assert up.calls == 4
    assert cache.info().bypasses == 4
    assert cache.info().entries == 0


class _BrokenBackend(EmbeddedBackend):
    """A real embedded backend whose store has gone away after binding (disk gone, etc.)."""

    def get_exact(self, *a: Any, **k: Any) -> Any:
        raise OSError("disk I/O error")

    def put(self, *a: Any, **k: Any) -> Any:
        raise OSError("disk I/O error")


def test_fail_open_when_backend_breaks(tmp_path: Path) -> None:
    cache = SemanticCache(embedder=HashingEmbedder(), backend=_BrokenBackend(tmp_path))
    up = Upstream()

    @cached(cache)
    def chat(*, model: str, messages: list[dict[str, str]]) -> Any:
        return chat_response(f"#{up.hit()}")

    assert chat(model="m", messages=msgs("q1"))["choices"][0]["message"]["content"] == "#1"
    assert chat(model="m", messages=msgs("q1"))["choices"][0]["message"]["content"] == "#2"
    assert cache.info().errors == 4  # a lookup and a store per call, each recorded


def test_fail_open_when_embedding_fails(tmp_path: Path) -> None:
    class Broken(HashingEmbedder):
        def embed(self, texts):  # type: ignore[no-untyped-def]
            raise MemoryError("model fell over")

    cache = SemanticCache(embedder=Broken(), backend=EmbeddedBackend(tmp_path))

    @cached(cache, request=PromptRequest())
    def ask(prompt: str) -> str:
        return "fresh"

    assert ask("anything") == "fresh"
    assert cache.info().errors >= 1


def test_corrupt_stored_value_is_a_miss(cache: SemanticCache) -> None:
    up = Upstream()

    @cached(cache, request=PromptRequest())
    def ask(prompt: str) -> str:
        return f"#{up.hit()}"

    ask("question here")
    backend = cache.backend
    assert isinstance(backend, EmbeddedBackend)
    backend._db.execute('UPDATE entries SET response = \'{"kind": "value"}\'')
    assert ask("question here") == "#2"
    assert cache.info().errors == 1
    assert ask("question here") == "#2"  # the clean re-store serves


def test_model_codec_round_trips_pydantic_responses(cache: SemanticCache) -> None:
    from openai.types.chat import ChatCompletion

    raw = {
        "id": "c1",
        "object": "chat.completion",
        "created": 1,
        "model": "m",
        "choices": [
            {
                "index": 0,
                "finish_reason": "stop",
                "message": {"role": "assistant", "content": "Paris"},
            }
        ],
        "usage": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6},
    }

    @cached(cache, codec=ModelCodec(ChatCompletion))
    def chat(*, model: str, messages: list[dict[str, str]]) -> ChatCompletion:
        return ChatCompletion.model_validate(raw)

    a = chat(model="m", messages=msgs("capital of france"))
    b = chat(model="m", messages=msgs("capital of france"))
    assert isinstance(b, ChatCompletion)
    assert b == a
    assert cache.info().hits == 1


def test_non_json_responses_are_refused_not_crashed(cache: SemanticCache) -> None:
    @cached(cache, request=PromptRequest())
    def ask(prompt: str) -> object:
        return {"text": "x", "when": object()}

    ask("q")
    assert cache.info().store_refusals == 1
    assert cache.info().entries == 0


def test_threads_coalesce_into_one_upstream_call(cache: SemanticCache) -> None:
    up = Upstream()
    gate = threading.Event()

    @cached(cache, request=PromptRequest())
    def ask(prompt: str) -> str:
        up.hit()
        gate.wait(5)
        return "slow answer"

    prompts = ["how do vaccines work"] * 4 + ["how do vaccines work exactly"] * 4
    results: list[str] = []
    threads = [threading.Thread(target=lambda p=p: results.append(ask(p))) for p in prompts]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 5
    while up.calls == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.2)  # let every thread reach its lookup and join the flight
    gate.set()
    for t in threads:
        t.join()
    assert results == ["slow answer"] * 8
    assert up.calls == 1
    assert cache.info().coalesced + cache.info().hits == 7


async def test_asyncio_tasks_coalesce(cache: SemanticCache) -> None:
    up = Upstream()
    release = asyncio.Event()

    @cached(cache, request=PromptRequest())
    async def ask(prompt: str) -> str:
        up.hit()
        await release.wait()
        return "async answer"

    tasks = [asyncio.create_task(ask("why is the sky blue")) for _ in range(6)]
    while up.calls == 0:
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.2)
    release.set()
    assert await asyncio.gather(*tasks) == ["async answer"] * 6
    assert up.calls == 1
    assert cache.info().coalesced == 5


def test_followers_call_upstream_when_the_leader_fails(cache: SemanticCache) -> None:
    up = Upstream()
    gate = threading.Event()

    @cached(cache, request=PromptRequest())
    def ask(prompt: str) -> str:
        n = up.hit()
        if n == 1:
            gate.wait(5)
            raise ConnectionError("leader failed")
        return "second try"

    out: list[object] = []

    def run() -> None:
        try:
            out.append(ask("flaky question"))
        except ConnectionError as e:
            out.append(e)

    leader = threading.Thread(target=run)
    leader.start()
    while up.calls == 0:
        time.sleep(0.01)
    follower = threading.Thread(target=run)
    follower.start()
    time.sleep(0.2)
    gate.set()
    leader.join()
    follower.join()
    assert "second try" in out
    assert any(isinstance(o, ConnectionError) for o in out)


def test_wrapper_keeps_function_identity(cache: SemanticCache) -> None:
    @cached(cache, request=PromptRequest())
    def documented(prompt: str) -> str:
        """Docs stay."""
        return prompt

    assert documented.__name__ == "documented"
    assert documented.__doc__ == "Docs stay."
    assert documented.cache is cache  # type: ignore[attr-defined]


def test_calls_ending_in_tool_results_bypass(cache: SemanticCache) -> None:
    up = Upstream()

    @cached(cache)
    def chat(*, model: str, messages: list[dict[str, Any]]) -> Any:
        return chat_response(f"#{up.hit()}")

    turn = [
        {"role": "user", "content": "weather in paris"},
        {"role": "assistant", "content": None, "tool_calls": [{"id": "c1", "type": "function"}]},
        {"role": "tool", "tool_call_id": "c1", "content": "18C and sunny"},
    ]
    chat(model="m", messages=turn)
    turn[2]["content"] = "3C and snowing"
    assert chat(model="m", messages=turn)["choices"][0]["message"]["content"] == "#2"
    assert cache.info().bypasses == 2
    assert cache.info().entries == 0


def test_a_response_nested_too_deep_is_returned_and_refused() -> None:
    """A hostile response is the caller's answer; it is refused for storage, not an error."""
    from semcache.llm.responses import JsonCodec

    deep: object = "leaf"
    for _ in range(5_000):
        deep = [deep]
    with pytest.raises(NotCacheableError, match="nested deeper"):
        JsonCodec().encode(deep)


def test_labels_and_tags_reach_the_stored_entries(cache: SemanticCache) -> None:
    """The decorator's scope fields and ``cache_options(tags=...)`` label each entry, so the
    entries can be deleted by tenant or tag whatever their model and parameters."""
    from semcache import InvalidInputError
    from semcache.selector import Selector

    up = Upstream()

    @cached(cache, namespace="app")
    def chat(*, model: str, messages: list[dict[str, str]], user: str = "") -> Any:
        return chat_response(f"answer #{up.hit()}")

    with cache_options(tags=["faq", "v2"]):
        chat(model="m1", messages=msgs("what is the capital of france"), user="acme")
    with cache_options(tenant="acme"):
        chat(model="m2", messages=msgs("how tall is everest"))
    chat(model="m1", messages=msgs("what is the capital of peru"), user="globex")
    with pytest.raises(InvalidInputError), cache_options(tags=["a,b"]):
        pass
    page = cache.backend.entries(Selector(tenant="acme"))
    assert sorted((e.model, e.namespace, e.tags) for e in page.entries) == [
        ("m1", "app", ("faq", "v2")),
        ("m2", "app", ()),
    ]
    assert cache.clear(tag="faq") == 1
    assert cache.clear(tenant="acme") == 1
    assert [e.tenant for e in cache.backend.entries(Selector()).entries] == ["globex"]
