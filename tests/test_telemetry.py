"""Spans and metrics, recorded with the OpenTelemetry SDK's in-memory reader and exporter."""

from __future__ import annotations

from typing import Any

import pytest
from otel_capture import Otel

from semcache import CachePolicy, MemoryBackend, Scope, SemanticCache, Telemetry
from semcache.backends.eviction import LRU
from semcache.telemetry import TokenPrice
from semcache.testing import HashingEmbedder


def _cache(otel: Otel, **kwargs: Any) -> SemanticCache:
    return SemanticCache(
        embedder=HashingEmbedder(),
        backend=MemoryBackend(eviction=LRU()),  # the size bound below evicts by recency
        policy=CachePolicy(min_similarity=0.6, max_entries=2),
        telemetry=otel.telemetry(**kwargs),
    )


def test_lookup_spans_have_stages_and_bounded_attributes(otel: Otel) -> None:
    scope = Scope(model="gpt-x", tenant="acme-corp")
    with _cache(otel) as cache:
        cache.store("how do i bake sourdough bread", "recipe", scope)
        otel.spans.clear()
        hit = cache.lookup("how do i bake sourdough bread at home", scope)
        miss = cache.lookup("completely unrelated words here", scope)
    assert hit.hit
    assert not miss.hit
    spans = otel.spans.get_finished_spans()
    names = [s.name for s in spans]
    assert names.count("semcache.lookup") == 2
    assert {"semcache.exact", "semcache.embed", "semcache.search"} <= set(names)
    lookups = [s for s in spans if s.name == "semcache.lookup"]
    hit_span = lookups[0]
    assert hit_span.attributes is not None
    assert hit_span.attributes["semcache.outcome"] == "hit"
    assert hit_span.attributes["semcache.tier"] == "semantic"
    assert hit_span.attributes["semcache.similarity"] == pytest.approx(hit.similarity)
    assert hit_span.attributes["semcache.threshold"] == 0.6
    assert hit_span.attributes["semcache.partition"] == scope.key()[:8]
    assert lookups[1].attributes is not None
    assert lookups[1].attributes["semcache.outcome"] == "miss"
    embed = next(s for s in spans if s.name == "semcache.embed")
    assert embed.parent is not None
    assert embed.parent.span_id in {s.context.span_id for s in lookups}
    every_value = " ".join(str(v) for s in spans for v in (s.attributes or {}).values())
    assert "sourdough" not in every_value  # no prompt text
    assert "acme" not in every_value  # no tenant


def test_metrics_requests_stages_similarity_entries_evictions(otel: Otel) -> None:
    with _cache(otel) as cache:
        cache.store("alpha beta gamma", "a")
        cache.store("delta epsilon zeta", "b")
        cache.store("eta theta iota", "c")  # evicts one (max_entries=2)
        cache.lookup("delta epsilon zeta")  # exact (the first entry was evicted)
        cache.lookup("eta theta iota kappa")  # semantic
        cache.lookup("nothing like the others")  # miss
        assert otel.total("semcache.requests", **{"semcache.outcome": "hit"}) == 2
        assert otel.total("semcache.requests", **{"semcache.tier": "exact"}) == 1
        assert otel.total("semcache.requests", **{"semcache.outcome": "miss"}) == 1
        assert otel.total("semcache.evictions") == 1
        assert otel.total("semcache.stores", **{"semcache.result": "stored"}) == 3
        assert otel.total("semcache.entries") == 2
        stages = {
            p.attributes["semcache.stage"]: p.count for p in otel.points("semcache.stage.duration")
        }
        assert stages["store"] == 3
        assert stages["exact"] == 3
        assert stages["search"] == 2
        sims = otel.points("semcache.similarity")
        assert sum(p.count for p in sims) == 3
        assert all(p.min <= p.max <= 1.0 for p in sims)
        info = cache.info()
        assert (info.hits, info.misses, info.evictions, info.entries) == (2, 1, 1, 2)


def test_tokens_and_cost_saved_follow_the_price_table(otel: Otel) -> None:
    prices = {"*": TokenPrice(input=1e-6, output=4e-6), "big": TokenPrice(input=1e-5, output=3e-5)}
    with _cache(otel, prices=prices) as cache:
        meta = {"prompt_tokens": 100, "completion_tokens": 50}
        cache.store("cheap model question", "x", metadata=meta)
        cache.store("big model question here", "y", metadata={**meta, "model": "big"})
        cache.lookup("cheap model question")
        cache.lookup("big model question here")
        info = cache.info()
    assert otel.total("semcache.tokens.saved", **{"gen_ai.token.type": "input"}) == 200
    assert otel.total("semcache.tokens.saved", **{"gen_ai.token.type": "output"}) == 100
    assert otel.total("semcache.tokens.saved", **{"gen_ai.request.model": "big"}) == 150
    expected = (100 * 1e-6 + 50 * 4e-6) + (100 * 1e-5 + 50 * 3e-5)
    assert otel.total("semcache.cost.saved") == pytest.approx(expected)
    assert info.cost_saved == pytest.approx(expected)
    assert info.tokens_saved == 300


def test_bypass_errors_feedback_and_shadow_are_recorded(otel: Otel) -> None:
    tel = otel.telemetry()
    with tel.span("semcache.request") as span:
        tel.record_bypass(span, "requested")
    with tel.span("semcache.lookup") as span:
        tel.record_error(span, "search", RuntimeError("boom"))
    with SemanticCache(
        embedder=HashingEmbedder(), backend=MemoryBackend(), telemetry=tel, shadow=True
    ) as cache:
        cache.store("one two three", "x")
        result = cache.lookup("one two three")
        cache.feedback(result, correct=True)
    assert otel.total("semcache.requests", **{"semcache.outcome": "bypass"}) == 1
    assert otel.total("semcache.errors", **{"error.type": "RuntimeError"}) == 1
    assert otel.total("semcache.requests", **{"semcache.shadow": True}) == 1
    assert otel.total("semcache.feedback", **{"semcache.correct": True}) == 1
    spans = {s.name: s for s in otel.spans.get_finished_spans()}
    assert spans["semcache.request"].attributes["semcache.reason"] == "requested"
    error_span = next(
        s for s in otel.spans.get_finished_spans() if s.status.status_code.name == "ERROR"
    )
    assert error_span.events[0].name == "exception"
    shadow = [
        s
        for s in otel.spans.get_finished_spans()
        if (s.attributes or {}).get("semcache.reason") == "shadow_hit"
    ]
    assert len(shadow) == 1  # the entry id is not put on telemetry


def test_upstream_and_retrieval_stages_take_genai_attributes(otel: Otel) -> None:
    tel = otel.telemetry()
    with tel.stage(
        "upstream", **{"gen_ai.request.model": "gpt-x", "gen_ai.operation.name": "chat"}
    ):
        pass
    with tel.stage("retrieval"):
        pass
    spans = {s.name: s for s in otel.spans.get_finished_spans()}
    assert spans["semcache.upstream"].attributes["gen_ai.request.model"] == "gpt-x"
    stages = {p.attributes["semcache.stage"] for p in otel.points("semcache.stage.duration")}
    assert stages == {"upstream", "retrieval"}


def test_entries_gauge_sums_live_caches_and_forgets_closed_ones(otel: Otel) -> None:
    tel = otel.telemetry()
    a = SemanticCache(embedder=HashingEmbedder(), backend=MemoryBackend(), telemetry=tel)
    b = SemanticCache(embedder=HashingEmbedder(), backend=MemoryBackend(), telemetry=tel)
    a.store("first entry", 1)
    b.store("second entry", 2)
    b.store("third entry", 3)
    assert otel.total("semcache.entries") == 3
    b.close()
    del b
    import gc

    gc.collect()
    assert otel.total("semcache.entries") == 1
    a.close()


def test_no_sdk_telemetry_is_a_silent_no_op() -> None:
    tel = Telemetry()  # the global providers: no-ops unless an application installed an SDK
    with SemanticCache(embedder=HashingEmbedder(), backend=MemoryBackend(), telemetry=tel) as c:
        c.store("a b c", 1)
        assert c.lookup("a b c").hit
        assert c.info().hits_exact == 1


def test_requests_carry_bounded_reasons_and_failed_lookups_count_as_errors(otel: Otel) -> None:
    from faults import RecordingEmbedder

    from semcache import cached
    from semcache.telemetry import MAX_REASONS

    embedder = RecordingEmbedder()
    tel = otel.telemetry()
    with SemanticCache(embedder=embedder, backend=MemoryBackend(), telemetry=tel) as cache:

        @cached(cache)
        def chat(**kwargs: Any) -> str:
            return "an answer"

        chat(model="m", messages=[{"role": "user", "content": "hello world"}])  # a miss
        chat(model="m", messages=[{"role": "assistant", "content": "no user turn"}])  # bypass
        embedder.failing = True
        chat(model="m", messages=[{"role": "user", "content": "something else entirely"}])
    miss = {"semcache.outcome": "miss", "semcache.reason": "no_candidates"}
    assert otel.total("semcache.requests", **miss) == 1
    bypass = {"semcache.outcome": "bypass", "semcache.reason": "invalid_input"}
    assert otel.total("semcache.requests", **bypass) == 1
    error = {"semcache.outcome": "error", "semcache.stage": "lookup"}
    assert otel.total("semcache.requests", **error) == 1
    assert otel.total("semcache.requests") == 3  # every request once: a ratio's denominator
    with tel.span("semcache.request") as span:
        for i in range(MAX_REASONS + 5):
            tel.record_bypass(span, f"custom-{i}")
    reasons = {p.attributes.get("semcache.reason") for p in otel.points("semcache.requests")}
    assert "other" in reasons
    assert len(reasons - {None}) == MAX_REASONS + 1  # 64 distinct, then "other"


def test_the_cached_retriever_and_the_rag_answer_emit_their_stages(otel: Otel) -> None:
    from langchain_core.callbacks import CallbackManagerForRetrieverRun
    from langchain_core.documents import Document
    from langchain_core.retrievers import BaseRetriever

    from semcache_langchain import CachedRetriever

    class Fixed(BaseRetriever):
        def _get_relevant_documents(
            self, query: str, *, run_manager: CallbackManagerForRetrieverRun
        ) -> list[Document]:
            return [Document(page_content="Paris is the capital of France.")]

    with _cache(otel) as cache:
        retriever = CachedRetriever(retriever=Fixed(), cache=cache)
        retriever.invoke("capital of france")
        retriever.invoke("capital of france")  # a hit: the wrapped retriever is not called
    stages = {
        p.attributes["semcache.stage"]: p.count for p in otel.points("semcache.stage.duration")
    }
    assert stages["retrieval"] == 1
    assert "semcache.retrieval" in {s.name for s in otel.spans.get_finished_spans()}


def test_a_negative_similarity_is_recorded_not_dropped(otel: Otel) -> None:
    tel = otel.telemetry()
    with tel.span("semcache.lookup") as span:
        tel.record_lookup(span, outcome="miss", tier=None, similarity=-0.3, threshold=0.9)
    (point,) = otel.points("semcache.similarity")
    assert (point.count, point.min) == (1, 0.0)
    (span_data,) = otel.spans.get_finished_spans()
    assert span_data.attributes["semcache.similarity"] == -0.3
