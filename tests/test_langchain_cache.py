"""semcache_langchain.SemanticLLMCache: LangChain's standard cache suites, then semantics."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

pytest.importorskip("langchain_core")
pytest.importorskip("langchain_tests")

from langchain_core.caches import BaseCache
from langchain_core.globals import get_llm_cache, set_llm_cache
from langchain_core.language_models import FakeListChatModel, FakeListLLM
from langchain_core.messages import AIMessage
from langchain_core.outputs import ChatGeneration, Generation
from langchain_tests.integration_tests import (
    AsyncCacheTestSuite,
    SyncCacheTestSuite,
)

from semcache import CachePolicy, EmbeddedBackend, SemanticCache, SentenceTransformerEmbedder
from semcache_langchain import SemanticLLMCache

pytestmark = pytest.mark.model


def _cache(embedder: SentenceTransformerEmbedder, path: Path) -> SemanticCache:
    # The paraphrase below scores 0.94: under the 0.95 default, so these tests use 0.9.
    return SemanticCache(
        embedder=embedder, backend=EmbeddedBackend(path), policy=CachePolicy(min_similarity=0.9)
    )


class TestSemanticLLMCacheSync(SyncCacheTestSuite):
    @pytest.fixture
    def cache(
        self, st_embedder: SentenceTransformerEmbedder, tmp_path: Path
    ) -> Iterator[BaseCache]:
        with _cache(st_embedder, tmp_path / "store") as semantic:
            yield SemanticLLMCache(semantic)


class TestSemanticLLMCacheAsync(AsyncCacheTestSuite):
    @pytest.fixture
    async def cache(
        self, st_embedder: SentenceTransformerEmbedder, tmp_path: Path
    ) -> AsyncIterator[BaseCache]:
        with _cache(st_embedder, tmp_path / "store") as semantic:
            yield SemanticLLMCache(semantic)


@pytest.fixture
def semantic(st_embedder: SentenceTransformerEmbedder, tmp_path: Path) -> Iterator[SemanticCache]:
    with _cache(st_embedder, tmp_path / "store") as cache:
        yield cache


LLM = "FakeListChatModel---[('stop', None)]"


def test_paraphrase_hits_within_one_llm_string(semantic: SemanticCache) -> None:
    cache = SemanticLLMCache(semantic)
    answer = [ChatGeneration(message=AIMessage(content="Paris."), generation_info={"n": 1})]
    cache.update("What is the capital of France?", LLM, answer)
    assert cache.lookup("what's the capital city of France?", LLM) == answer
    assert cache.lookup("what's the capital city of France?", LLM + "temperature=1") is None
    assert cache.lookup("How do I bake bread?", LLM) is None
    info = semantic.info()
    assert (info.hits_semantic, info.misses, info.stores) == (1, 2, 1)


def test_exact_only_when_configured(semantic: SemanticCache) -> None:
    cache = SemanticLLMCache(semantic, min_similarity=1.0)
    cache.update("What is the capital of France?", LLM, [Generation(text="Paris.")])
    assert cache.lookup("what's the capital city of France?", LLM) is None
    assert cache.lookup("  what is the capital of FRANCE? ", LLM) == [Generation(text="Paris.")]


def test_namespaces_and_clear_by_llm_string(semantic: SemanticCache) -> None:
    app_a = SemanticLLMCache(semantic, namespace="a")
    app_b = SemanticLLMCache(semantic, namespace="b")
    app_a.update("Hello there", LLM, [Generation(text="Hi!")])
    app_a.update("Hello there", "other-llm", [Generation(text="Hey!")])
    assert app_b.lookup("Hello there", LLM) is None
    app_a.clear(llm_string=LLM)
    assert app_a.lookup("Hello there", LLM) is None
    assert app_a.lookup("Hello there", "other-llm") == [Generation(text="Hey!")]


def test_non_json_generation_info_is_not_stored(semantic: SemanticCache) -> None:
    cache = SemanticLLMCache(semantic)
    cache.update("A prompt", LLM, [Generation(text="x", generation_info={"obj": object()})])
    assert cache.lookup("A prompt", LLM) is None
    assert semantic.info().store_refusals == 1


def test_backend_failure_is_a_miss(semantic: SemanticCache, tmp_path: Path) -> None:
    cache = SemanticLLMCache(semantic)
    cache.update("What is the capital of France?", LLM, [Generation(text="Paris.")])
    with sqlite3.connect(tmp_path / "store" / "entries.sqlite3") as db:
        db.execute("DROP TABLE entries")
    assert cache.lookup("What is the capital of France?", LLM) is None
    cache.update("Another prompt", LLM, [Generation(text="x")])  # logged, not raised
    assert semantic.info().errors == 2


def test_set_llm_cache_with_a_chat_model(semantic: SemanticCache) -> None:
    previous = get_llm_cache()
    set_llm_cache(SemanticLLMCache(semantic))
    try:
        model = FakeListChatModel(responses=["first answer", "second answer"])
        assert model.invoke("What is the capital of France?").content == "first answer"
        assert model.invoke("what's the capital city of France?").content == "first answer"
        llm = FakeListLLM(responses=["from the llm"])
        assert llm.invoke("What is the capital of France?") == "from the llm"  # other llm_string
    finally:
        set_llm_cache(previous)
    assert semantic.info().hits_semantic == 1


def test_chat_prompts_look_up_the_last_question_scoped_by_the_rest(
    semantic: SemanticCache,
) -> None:
    from langchain_core.load import dumps
    from langchain_core.messages import HumanMessage, SystemMessage, ToolMessage

    from semcache_langchain.llm_cache import plan_prompt

    context = SystemMessage("Context: the Eiffel Tower is in Paris. It is 330 m tall.")
    asked = dumps([context, HumanMessage("Where is the Eiffel Tower?")])
    text, scope, exact = plan_prompt(asked, LLM)
    assert (text, scope.system, exact) == ("Where is the Eiffel Tower?", context.content, False)

    cache = SemanticLLMCache(semantic)
    cache.update(asked, LLM, [Generation(text="Paris.")])
    paraphrase = dumps([context, HumanMessage("In which city is the Eiffel Tower located?")])
    assert cache.lookup(paraphrase, LLM) == [Generation(text="Paris.")]
    other_context = dumps([SystemMessage("Answer in French."), HumanMessage("Where is it?")])
    assert cache.lookup(other_context, LLM) is None

    after_tool = dumps([HumanMessage("Weather?"), ToolMessage("12 C", tool_call_id="1")])
    assert plan_prompt(after_tool, LLM)[2] is True
    cache.update(after_tool, LLM, [Generation(text="It is 12 C.")])
    assert cache.lookup(after_tool, LLM) == [Generation(text="It is 12 C.")]
