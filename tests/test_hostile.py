"""Hostile requests and responses through ``@cached``, on the embedded and the Redis backend.

Hypothesis drives random and crafted calls (lone surrogates, NUL bytes, 20 kB texts, NFD/NFC
forms, crafted tenants, parameters nested 5,000 deep or circular, ``10**5000``; responses nested
5,000 deep, with NaN, non-string keys or lone surrogates) through the decorator, sync and async,
against a real store. For every call: nothing raises; a call that reached the upstream returns
exactly the upstream's object; a call served from the cache returns a value stored earlier in
the same partition, and the value stored for the same request if there is one. After every
example a plain store and lookup still round-trip. Nothing is mocked: the hashing embedder is a
real (if crude) embedder.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import unicodedata
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from semcache import CachePolicy, EmbeddedBackend, Scope, SemanticCache, cached
from semcache.keys import text_key
from semcache.llm.requests import ChatRequest
from semcache.testing import HashingEmbedder

SUR = "\ud83d"  # a lone (high) surrogate: valid in a Python str, not encodable as UTF-8
CAFE_NFC = unicodedata.normalize("NFC", "café crème")
CAFE_NFD = unicodedata.normalize("NFD", "café crème")
BIG_TEXT = "why is the sky blue " * 1000  # 20 kB


def nested(depth: int, leaf: Any = "x") -> Any:
    """``depth`` levels of alternating dicts and lists around ``leaf`` (built without recursion)."""
    value = leaf
    for i in range(depth):
        value = {"k": value} if i % 2 else [value]
    return value


def circular() -> dict[str, Any]:
    loop: dict[str, Any] = {"a": 1}
    loop["self"] = loop
    return loop


# Hostile values are named in examples (so a failure prints a name, not 5,000 brackets) and
# built fresh for each call.
HOSTILE: dict[str, Callable[[], Any]] = {
    "deep5000": lambda: nested(5000),
    "deep900": lambda: nested(900),
    "circular": circular,
    "bigint": lambda: 10**5000,
    "nan": lambda: float("nan"),
    "inf": lambda: float("inf"),
    "surrogate": lambda: f"x{SUR}y",
    "surrogate_key": lambda: {SUR: "v"},
    "int_keys": lambda: {1: "one", 2: "two"},
    "tuple_key": lambda: {(1, 2): "pair"},
    "nul": lambda: "a\x00b",
    "bytes": lambda: b"\x00\xff",
    "set": lambda: {1, 2, 3},
    "object": object,
}


@dataclass(frozen=True)
class H:
    """A hostile value, by its name in :data:`HOSTILE`."""

    name: str


def build(value: Any) -> Any:
    """A fresh hostile value for an :class:`H`, else the value itself."""
    return HOSTILE[value.name]() if isinstance(value, H) else value


@dataclass(frozen=True)
class Req:
    """One call: its arguments (hostile ones as :class:`H`) and the upstream's response shape."""

    text: str = "what is the capital of france"
    system: str | None = None
    history: bool = False
    parts: bool = False
    model: str = "gpt-x"
    user: Any = None
    params: dict[str, Any] = field(default_factory=dict)
    tools: Any = None
    response: str = "dict"  # "dict", "str", "completion" or "payload"
    payload: Any = None  # with response="payload": {"content": ..., "payload": payload}
    mode: str = "sync"  # "sync", "async", "stream" or "astream" (a generator, an async one)

    def kwargs(self) -> dict[str, Any]:
        messages: list[dict[str, Any]] = []
        if self.system is not None:
            messages.append({"role": "system", "content": self.system})
        if self.history:
            messages += [
                {"role": "user", "content": "hello"},
                {"role": "assistant", "content": "hi"},
            ]
        content: Any = [{"type": "text", "text": self.text}] if self.parts else self.text
        messages.append({"role": "user", "content": content})
        out: dict[str, Any] = {"model": self.model, "messages": messages}
        out.update({k: build(v) for k, v in self.params.items()})
        if self.user is not None:
            out["user"] = build(self.user)
        if self.tools is not None:
            out["tools"] = build(self.tools)
        return out

    def make_response(self, n: int) -> Any:
        """The upstream's answer number ``n``: a value, or the list of chunks a stream yields."""
        answer = f"answer {n}"
        if self.mode in ("stream", "astream"):
            extra = [build(self.payload)] if self.response == "payload" else []
            return [answer, " and more", *extra]
        if self.response == "str":
            return answer
        if self.response == "completion":
            return {
                "choices": [{"message": {"role": "assistant", "content": answer}}],
                "usage": {"prompt_tokens": 3, "completion_tokens": 2},
            }
        if self.response == "payload":
            return {"content": answer, "payload": build(self.payload)}
        return {"content": answer}


# -- strategies ------------------------------------------------------------------------------

hostile_names = st.sampled_from([H(name) for name in sorted(HOSTILE)])
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
)
# Ordinary questions sharing words, so exact and semantic hits happen.
questions = st.lists(
    st.sampled_from(["what", "is", "the", "capital", "of", "france", "spain", "why", "sky"]),
    min_size=1,
    max_size=6,
).map(" ".join)
hostile_texts = st.one_of(
    st.text(max_size=60),
    st.sampled_from(
        [SUR, f"what is {SUR} the capital", "a\x00b", "\x00", BIG_TEXT, CAFE_NFC, CAFE_NFD, " ", ""]
    ),
    st.lists(st.sampled_from(["a", "é", SUR, "\x00", " ", "?", "ﬁ", "Σ"]), max_size=8).map("".join),
)


def mostly(clean: st.SearchStrategy[Any], hostile: st.SearchStrategy[Any]) -> Any:
    """``clean`` seven times in eight, else ``hostile`` (so most calls reach the store)."""
    return st.sampled_from(range(8)).flatmap(lambda i: hostile if i == 7 else clean)


tenants = st.sampled_from(["alice", "bob", "a|b", "*", "a}b", "{a", "a b", "\\", "@", "", SUR])
params = st.dictionaries(
    st.sampled_from(["temperature", "max_tokens", "seed", "response_format", "stop", "extra"]),
    mostly(json_values, hostile_names),
    max_size=3,
)
requests = st.builds(
    Req,
    text=mostly(questions, hostile_texts),
    system=st.none() | mostly(questions, hostile_texts),
    history=st.booleans(),
    parts=st.booleans(),
    model=mostly(st.sampled_from(["gpt-x", "gpt-y"]), st.sampled_from(["", f"m{SUR}", "m\x00"])),
    user=st.none() | tenants | st.just(H("int_keys")),
    params=params,
    tools=st.none()
    | mostly(json_values, st.sampled_from([H("deep5000"), H("circular"), H("surrogate")])),
    response=st.sampled_from(["dict", "str", "completion", "payload"]),
    payload=mostly(json_values, hostile_names),
    mode=st.sampled_from(["sync", "async", "stream", "astream"]),
)

# -- the harness ------------------------------------------------------------------------------


class Harness:
    """A cache behind four decorated functions of one namespace (sync, async, generator, async
    generator), with a model of what the cache may serve for each partition."""

    def __init__(self, cache: SemanticCache) -> None:
        self.cache = cache
        self.loop = asyncio.new_event_loop()
        self.counter = itertools.count()
        self.upstream = 0
        self.returned: Any = None
        self.req = Req()
        # what the cache holds, as JSON round-trips: by partition, and by (partition, text key)
        self.in_partition: dict[tuple[bool, str], list[Any]] = defaultdict(list)
        self.exact: dict[tuple[tuple[bool, str], str], Any] = {}

        def answer() -> Any:
            self.upstream += 1
            self.returned = self.req.make_response(next(self.counter))
            return self.returned

        @cached(cache, namespace="hostile", coalesce=False)
        def chat(**kwargs: Any) -> Any:
            return answer()

        @cached(cache, namespace="hostile", coalesce=False)
        async def achat(**kwargs: Any) -> Any:
            return answer()

        @cached(cache, namespace="hostile", coalesce=False)
        def stream(**kwargs: Any) -> Iterator[Any]:
            yield from answer()

        @cached(cache, namespace="hostile", coalesce=False)
        async def astream(**kwargs: Any) -> AsyncIterator[Any]:
            for chunk in answer():
                yield chunk

        async def collect(**kwargs: Any) -> list[Any]:
            return [chunk async for chunk in astream(**kwargs)]

        self.modes: dict[str, Callable[..., Any]] = {
            "sync": chat,
            "async": lambda **kw: self.loop.run_until_complete(achat(**kw)),
            "stream": lambda **kw: list(stream(**kw)),
            "astream": lambda **kw: self.loop.run_until_complete(collect(**kw)),
        }

    def call(self, req: Req) -> None:
        self.req = req
        kwargs = req.kwargs()
        keys = _keys(kwargs)
        # streams and values are kept apart by the decorator: so by the model too
        partition = None if keys is None else ("stream" in req.mode, keys[0])
        upstream, stores = self.upstream, self.cache.info().stores
        got = self.modes[req.mode](**kwargs)
        if self.upstream > upstream:
            if "stream" in req.mode:  # the caller got the upstream's chunks, as they came
                assert len(got) == len(self.returned)
                assert all(a is b for a, b in zip(got, self.returned, strict=True))
            else:
                assert got is self.returned
            if self.cache.info().stores > stores:
                assert partition is not None
                assert keys is not None
                stored = json.loads(json.dumps(got, ensure_ascii=False))
                self.in_partition[partition].append(stored)
                self.exact[(partition, keys[1])] = stored
            return
        # served from the cache: only something stored for this partition
        assert partition is not None, "served a request it cannot key"
        assert keys is not None
        assert got in self.in_partition[partition], f"served {got!r} across partitions"
        if (partition, keys[1]) in self.exact:
            assert got == self.exact[(partition, keys[1])]

    def round_trips(self) -> None:
        """A plain store and lookup still work."""
        n = next(self.counter)
        scope = Scope(namespace="probe", tenant=str(n))
        self.cache.store(f"probe question {n}", {"probe": n}, scope)
        result = self.cache.lookup(f"probe question {n}", scope)
        assert result.entry is not None
        assert result.entry.response == {"probe": n}

    def close(self) -> None:
        self.loop.run_until_complete(self.cache.aclose())
        self.loop.close()
        self.cache.close()


def _keys(kwargs: dict[str, Any]) -> tuple[str, str] | None:
    """The request's partition and exact key as the test sees them; ``None`` if not keyable."""
    try:
        req = ChatRequest()((), kwargs)
        return req.scope.key(), text_key(req.text)
    except Exception:
        return None


def _cache(kind: str, tmp_path: Path, redis_url: str | None) -> tuple[SemanticCache, Any]:
    # The 20 kB text reaches the store; no lookup budget (a slow machine must not change a result).
    policy = CachePolicy(max_text_chars=50_000, lookup_budget=None)
    if kind == "embedded":
        backend: Any = EmbeddedBackend(tmp_path / "cache")
    else:
        from semcache.backends.redis import RedisBackend

        backend = RedisBackend(redis_url, name=f"hostile{uuid.uuid4().hex[:10]}")
    return SemanticCache(embedder=HashingEmbedder(), backend=backend, policy=policy), backend


@pytest.fixture(scope="module", params=["embedded", pytest.param("redis", marks=pytest.mark.redis)])
def harness(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Harness]:
    url = request.getfixturevalue("redis_url") if request.param == "redis" else None
    cache, backend = _cache(request.param, tmp_path_factory.mktemp("hostile"), url)
    h = Harness(cache)
    yield h
    if request.param == "redis":
        backend.drop()
    h.close()


SETTINGS = settings(
    max_examples=150,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@SETTINGS
@given(calls=st.lists(requests, min_size=1, max_size=3))
@example(calls=[Req(text=SUR), Req(system=SUR), Req(user=SUR), Req(user=f"a{SUR}b")])
@example(calls=[Req(params={"seed": H("deep5000")}), Req(params={"extra": H("circular")})])
@example(calls=[Req(params={"max_tokens": H("bigint")}), Req(tools=H("circular"))])
@example(calls=[Req(text="a\x00b", system="\x00", user="a\x00"), Req(model="m\x00")])
@example(calls=[Req(text=BIG_TEXT), Req(text=BIG_TEXT, mode="async")])
@example(calls=[Req(text=CAFE_NFC), Req(text=CAFE_NFD), Req(system=CAFE_NFD)])
@example(calls=[Req(user="a|b"), Req(user="*"), Req(user="a}b"), Req(user="a")])
@example(calls=[Req(response="payload", payload=H("deep5000"))])
@example(calls=[Req(response="payload", payload=H("deep5000"), mode="async")])
@example(calls=[Req(response="payload", payload=H("deep900"))])
@example(
    calls=[Req(response="payload", payload=H("nan")), Req(response="payload", payload=H("inf"))]
)
@example(calls=[Req(response="payload", payload=H("int_keys")), Req(response="payload")])
@example(calls=[Req(response="payload", payload=H("tuple_key"), mode="async")])
@example(calls=[Req(response="payload", payload=H("surrogate"))])
@example(calls=[Req(response="payload", payload=H("surrogate_key"), mode="async")])
@example(calls=[Req(response="payload", payload=H("bigint")), Req(response="payload", payload=[])])
@example(
    calls=[
        Req(response="payload", payload=H("deep5000"), mode="stream"),
        Req(response="payload", payload=H("deep5000"), mode="astream"),
        Req(response="payload", payload=H("nan"), mode="stream"),
        Req(response="payload", payload=H("surrogate"), mode="astream"),
    ]
)
@example(calls=[Req(mode="stream"), Req(mode="sync"), Req(mode="astream"), Req(mode="async")])
def test_hostile_calls_get_the_upstream_answer_and_leave_the_store_usable(
    harness: Harness, calls: list[Req]
) -> None:
    for req in [*calls, *calls]:  # the second pass may be served from the cache
        harness.call(req)
    harness.round_trips()


def test_exact_tier_never_folds_one_number_into_another(tmp_path: Path) -> None:
    cache = SemanticCache(embedder=HashingEmbedder(), backend=EmbeddedBackend(tmp_path / "c"))

    @cached(cache, coalesce=False)
    def chat(*, model: str, messages: list[dict[str, str]]) -> dict[str, str]:
        return {"content": "yes" if "10³" in messages[-1]["content"] else "no"}

    def ask(text: str) -> Any:
        return chat(model="gpt-x", messages=[{"role": "user", "content": text}])

    assert ask("Is 10³ bigger than 999?") == {"content": "yes"}
    assert ask("Is 103 bigger than 999?") == {"content": "no"}
    cache.close()
