"""Partition fuzz: over 10,000 calls through ``@cached``, no answer is served across a partition.

Partitions differ by tenant (the ``user`` argument or ``cache_options(tenant=...)``, including
crafted ones such as ``a|b``, ``*``, ``a}b``), model, parameters, system prompt, tools, earlier
turns and namespace; many differ by one character or one type. Every partition asks the same
questions and gets its own answers, and each answer names its partition, so a served answer is
checked against the partition that asked. Calls run concurrently (``asyncio.gather``), with
coalescing on, against the real embedded and Redis backends.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import unicodedata
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from semcache import CachePolicy, EmbeddedBackend, SemanticCache, cache_options, cached
from semcache.backends.breaker import BreakerParams
from semcache.llm.requests import ChatRequest
from semcache.testing import HashingEmbedder

TENANTS = [
    "", "alice", "Alice", "alice ", "a", "b", "a|b", "a||b", "|", "*", "a*", "a}b", "a}", "}b",
    "{a}", "a b", "a\\b", "a\x00b", "a:b", "@", unicodedata.normalize("NFC", "zoë"),
    unicodedata.normalize("NFD", "zoë"),
]  # fmt: skip
MODELS = ["gpt-x", "gpt-y", "gpt-x ", "GPT-X"]
PARAMS: list[dict[str, Any]] = [
    {},
    {"temperature": 0},
    {"temperature": 0.5},
    {"max_tokens": 10},
    {"max_tokens": "10"},
    {"stop": ["a|b"]},
    {"stop": ["a", "b"]},
    {"response_format": {"type": "json_object"}},
]
SYSTEMS = [
    None,
    "Be brief.",
    "Be brief. ",
    "be brief.",
    unicodedata.normalize("NFD", "Réponds en français."),
    unicodedata.normalize("NFC", "Réponds en français."),
]
TOOL_A = {"type": "function", "function": {"name": "weather", "parameters": {}}}
TOOL_B = {"type": "function", "function": {"name": "weather2", "parameters": {}}}
TOOLS: list[Any] = [None, [TOOL_A], [TOOL_B], [TOOL_A, TOOL_B]]
HISTORIES = [False, True]
NAMESPACES = ["fuzz-a", "fuzz-b"]

QUESTIONS = [
    "what is the capital of france",
    "how do i reset my password",
    "why is the sky blue",
    "who wrote hamlet",
    "how tall is mount everest",
    "what does http stand for",
    "how do plants make food",
    "when did the berlin wall fall",
]
UNASKED = ["what is the capital of spain", "how do i delete my account"]

N_PARTITIONS = 500
BATCH = 48  # concurrent calls: under max_connections (64), so none waits for a connection


@dataclass(frozen=True)
class Partition:
    """One combination of everything that must separate cached answers."""

    id: int
    tenant: str
    via_options: bool  # the tenant set by cache_options instead of the ``user`` argument
    model: str
    params: tuple[tuple[str, Any], ...]
    system: str | None
    tools: Any
    history: bool
    namespace: str

    def kwargs(self, text: str) -> dict[str, Any]:
        messages: list[dict[str, str]] = []
        if self.system is not None:
            messages.append({"role": "system", "content": self.system})
        if self.history:
            messages += [
                {"role": "user", "content": "hi"},
                {"role": "assistant", "content": "hello"},
            ]
        messages.append({"role": "user", "content": text})
        out: dict[str, Any] = {"model": self.model, "messages": messages, **dict(self.params)}
        if self.tools is not None:
            out["tools"] = self.tools
        if not self.via_options:
            out["user"] = self.tenant
        return out


def partitions(n: int, seed: int = 14) -> list[Partition]:
    """``n`` distinct partitions: random combinations, plus near twins of earlier ones."""
    rng = random.Random(seed)
    seen: set[tuple[Any, ...]] = set()
    out: list[Partition] = []
    while len(out) < n:
        if out and rng.random() < 0.5:  # a near twin: change one dimension of an earlier one
            base = rng.choice(out)
            fields = {
                "tenant": base.tenant,
                "via_options": base.via_options,
                "model": base.model,
                "params": base.params,
                "system": base.system,
                "tools": base.tools,
                "history": base.history,
                "namespace": base.namespace,
            }
            dim = rng.choice(sorted(fields))
            fields[dim] = _draw(rng)[dim]
        else:
            fields = _draw(rng)
        # the tenant's source does not make a partition: keep one source per identity
        identity = tuple(repr(fields[k]) for k in sorted(fields) if k != "via_options")
        if identity in seen:
            continue
        seen.add(identity)
        out.append(Partition(id=len(out), **fields))
    return out


def _draw(rng: random.Random) -> dict[str, Any]:
    return {
        "tenant": rng.choice(TENANTS),
        "via_options": rng.random() < 0.3,
        "model": rng.choice(MODELS),
        "params": tuple(sorted(rng.choice(PARAMS).items())),
        "system": rng.choice(SYSTEMS),
        "tools": rng.choice(TOOLS),
        "history": rng.choice(HISTORIES),
        "namespace": rng.choice(NAMESPACES),
    }


class Fuzz:
    """Concurrent calls through two decorated functions (one per namespace)."""

    def __init__(self, cache: SemanticCache) -> None:
        self.cache = cache
        self.upstream = 0
        self.served_across: list[tuple[int, str, Any]] = []
        self.fns = {ns: self._decorate(ns) for ns in NAMESPACES}

    def _decorate(self, namespace: str) -> Any:
        # ``partition`` only tells the upstream whose answer to write: never part of the scope.
        adapter = ChatRequest(ignore=frozenset({"partition"}))

        @cached(self.cache, namespace=namespace, request=adapter)
        async def chat(*, partition: int, **kwargs: Any) -> dict[str, str]:
            self.upstream += 1
            await asyncio.sleep(0)
            text = kwargs["messages"][-1]["content"]
            return {"content": f"partition={partition} question={text} n={self.upstream}"}

        return chat

    async def ask(self, p: Partition, text: str) -> Any:
        fn = self.fns[p.namespace]
        if p.via_options:
            with cache_options(tenant=p.tenant):
                return await fn(partition=p.id, **p.kwargs(text))
        return await fn(partition=p.id, **p.kwargs(text))

    async def run(self, calls: list[tuple[Partition, str]]) -> int:
        """Send every call (``BATCH`` at a time); returns how many answers came back."""
        answered = 0
        for start in range(0, len(calls), BATCH):
            batch = calls[start : start + BATCH]
            got = await asyncio.gather(*(self.ask(p, text) for p, text in batch))
            for (p, text), answer in zip(batch, got, strict=True):
                answered += 1
                if not answer["content"].startswith(f"partition={p.id} question="):
                    self.served_across.append((p.id, text, answer))
        return answered


@pytest.fixture(params=["embedded", pytest.param("redis", marks=pytest.mark.redis)])
def fuzz_cache(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SemanticCache]:
    if request.param == "embedded":
        backend: Any = EmbeddedBackend(tmp_path / "cache")
    else:
        from semcache.backends.redis import RedisBackend

        url = request.getfixturevalue("redis_url")
        # Hundreds of tasks share one event loop here, so a command's wall time includes waiting
        # for the loop: only errors may open the circuit, not that queueing.
        breaker = BreakerParams(slow_call_seconds=None)
        backend = RedisBackend(url, name=f"fuzz{uuid.uuid4().hex[:10]}", breaker=breaker)
    # Likewise, no lookup budget: a lookup's wall time here includes the loop's queue.
    policy = CachePolicy(lookup_budget=None)
    cache = SemanticCache(embedder=HashingEmbedder(), backend=backend, policy=policy)
    yield cache
    if request.param == "redis":
        backend.drop()
    cache.close()


def test_no_answer_is_served_across_partitions(fuzz_cache: SemanticCache) -> None:
    parts = partitions(N_PARTITIONS)
    rng = random.Random(7)
    # Every partition stores every question, asked everywhere at once (same text, other answers).
    stores = [(p, q) for q, p in itertools.product(QUESTIONS, parts)]
    # Then: exact repeats, reworded repeats (same words, other order: a semantic hit), and
    # questions this partition never asked but others did (must miss).
    asked_elsewhere = {q: [p for p in parts if p.id % 3] for q in UNASKED}
    lookups = [(p, q) for p in parts for q in QUESTIONS]
    lookups += [(p, " ".join(reversed(q.split()))) for p in parts for q in QUESTIONS[:3]]
    rng.shuffle(lookups)
    misses = [(p, q) for q in UNASKED for p in parts if p.id % 3 == 0]

    async def scenario() -> tuple[int, int, int]:
        fuzz = Fuzz(fuzz_cache)
        try:
            return await calls(fuzz)
        finally:
            await fuzz_cache.aclose()

    async def calls(fuzz: Fuzz) -> tuple[int, int, int]:
        n = await fuzz.run(stores)
        n += await fuzz.run([(p, q) for q, ps in asked_elsewhere.items() for p in ps])
        upstream_before = fuzz.upstream
        n += await fuzz.run(lookups)
        served = upstream_before == fuzz.upstream
        before_misses = fuzz.upstream
        n += await fuzz.run(misses)
        assert fuzz.served_across == [], fuzz.served_across[:5]
        assert served, f"{fuzz.upstream - upstream_before} repeats went upstream"
        return n, fuzz.upstream - before_misses, len(misses)

    total, missed, expected_misses = asyncio.run(scenario())
    assert total >= 10_000
    assert missed == expected_misses  # never served from another partition's entries
