"""Size limits: an entry over ``max_entry_bytes`` is returned to the caller but never stored, on
every write path (it is checked in ``SemanticCache``'s put step), and counted as a refusal."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from entry_points import DecoratorAsync, DecoratorSync, EntryPoint, LiteLLMAsync, LiteLLMSync
from otel_capture import Otel

from semcache import CachePolicy, MemoryBackend, SemanticCache
from semcache.errors import ConfigurationError, NotCacheableError
from semcache.models import NewEntry
from semcache.policy import TOO_LARGE, check_entry_size, entry_bytes
from semcache.testing import HashingEmbedder

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:langchain_core.*")

LIMIT = 2_000
BIG = "word " * 1_000  # 5,000 bytes of JSON: over LIMIT


def _entry(response: Any, metadata: dict[str, Any] | None = None) -> NewEntry:
    return NewEntry(
        scope_key="s",
        text_key="t",
        prompt="p",
        response=response,
        created_at=0.0,
        metadata=metadata or {},
    )


@pytest.mark.parametrize("size", [0, -1, 1.5, True, "1"])
def test_max_entry_bytes_is_validated(size: Any) -> None:
    with pytest.raises(ConfigurationError, match="max_entry_bytes"):
        CachePolicy(max_entry_bytes=size)


def test_entry_bytes_counts_utf8_json_of_response_and_metadata() -> None:
    assert entry_bytes(_entry("é")) == len('"é"'.encode()) + len(b"{}")
    assert entry_bytes(_entry({"a": 1}, {"model": "m"})) == len(b'{"a": 1}') + len(
        b'{"model": "m"}'
    )


def test_check_entry_size() -> None:
    policy = CachePolicy(max_entry_bytes=10)
    check_entry_size(_entry("12345"), policy)  # 7 + 2 bytes
    with pytest.raises(NotCacheableError, match="max_entry_bytes is 10") as refused:
        check_entry_size(_entry("123456789"), policy)
    assert refused.value.reason == TOO_LARGE
    with pytest.raises(NotCacheableError) as not_json:
        check_entry_size(_entry(object()), policy)
    assert not_json.value.reason == "not_serialisable"
    check_entry_size(_entry(BIG), CachePolicy(max_entry_bytes=None))  # no limit


def test_store_refuses_a_large_entry_before_embedding_it() -> None:
    embedder = HashingEmbedder()
    cache = SemanticCache(
        embedder=embedder, backend=MemoryBackend(), policy=CachePolicy(max_entry_bytes=LIMIT)
    )
    with pytest.raises(NotCacheableError) as refused:
        cache.store("a question", BIG)
    assert refused.value.reason == TOO_LARGE
    with pytest.raises(NotCacheableError):
        asyncio.run(cache.astore("a question", BIG))
    assert embedder.calls == 0
    assert cache.backend.count() == 0
    cache.store("a question", "a short answer")  # under the limit: stored
    assert cache.backend.count() == 1
    cache.close()


class Big:
    """Entry points whose upstream answers are over the limit."""

    def answer(self: Any) -> str:
        self.upstream += 1
        return f"{self.upstream} {BIG}"


class BigDecorator(Big, DecoratorSync):
    pass


class BigDecoratorAsync(Big, DecoratorAsync):
    pass


class BigLiteLLM(Big, LiteLLMSync):
    pass


class BigLiteLLMAsync(Big, LiteLLMAsync):
    pass


def _world(kind: type[EntryPoint], tmp_path: Path, otel: Otel) -> tuple[SemanticCache, EntryPoint]:
    cache = SemanticCache(
        embedder=HashingEmbedder(),
        backend=MemoryBackend(),
        policy=CachePolicy(max_entry_bytes=LIMIT),
        telemetry=otel.telemetry(),
    )
    return cache, kind(cache, tmp_path)


def _ask(entry: EntryPoint, text: str) -> Any:
    got = entry.ask(text)
    return asyncio.run(got) if entry.is_async else got


KINDS = [BigDecorator, BigDecoratorAsync, BigLiteLLM, BigLiteLLMAsync]


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.__name__)
def test_an_oversize_response_is_returned_but_not_stored(
    kind: type[EntryPoint], tmp_path: Path, otel: Otel
) -> None:
    cache, entry = _world(kind, tmp_path, otel)
    first = _ask(entry, "tell me everything")
    assert entry.same(first), "the caller gets the whole answer"
    second = _ask(entry, "tell me everything")
    assert entry.upstream == 2, "nothing was stored, so nothing is served"
    assert entry.same(second)
    info = cache.info()
    assert info.store_refusals == 2
    assert info.stores == 0
    assert info.errors == 0
    assert cache.backend.count() == 0


@pytest.mark.parametrize("kind", [BigDecorator, BigLiteLLM], ids=lambda k: k.__name__)
def test_the_refusal_reason_is_too_large(
    kind: type[EntryPoint], tmp_path: Path, otel: Otel
) -> None:
    _, entry = _world(kind, tmp_path, otel)
    _ask(entry, "tell me everything")
    assert otel.total("semcache.stores", **{"semcache.result": TOO_LARGE}) == 1
