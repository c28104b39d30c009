"""OpenTelemetry spans and metrics. Depends on ``opentelemetry-api`` only.

With no SDK configured every call is a no-op costing well under a microsecond or two; applications
that install ``opentelemetry-sdk`` (or pass providers) get the spans and metrics below.

Spans: ``semcache.lookup`` (attributes ``semcache.outcome``, ``semcache.tier``,
``semcache.similarity``, ``semcache.threshold``, ``semcache.scope``) with a child span per stage:
``semcache.embed``, ``semcache.exact``, ``semcache.search``, ``semcache.store``,
``semcache.upstream``.

Metrics: ``semcache.requests`` (counter by outcome and tier), ``semcache.stage.duration``
(histogram, seconds, by stage), ``semcache.similarity`` (histogram of the nearest candidate's
similarity), ``semcache.tokens.saved`` (counter, by ``gen_ai.token.type``), ``semcache.errors``
(counter by stage and error type), ``semcache.evictions`` and ``semcache.stores`` (counter by
result). Attributes are bounded: no prompt text, no raw tenant; the scope is an 8-hex prefix of
its hash and only when ``scope_attribute=True``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from opentelemetry import metrics, trace
from opentelemetry.trace import Span, Status, StatusCode

__all__ = ["Telemetry"]

_NAME = "semcache"
_VERSION = "0.1.0"


class Telemetry:
    """The spans and instruments of one cache (or one set of caches sharing a label).

    Args:
        tracer_provider: defaults to the global provider (a no-op until an SDK is installed).
        meter_provider: likewise for metrics.
        scope_attribute: put a short scope hash on spans (bounded, but one value per scope).
    """

    def __init__(
        self,
        *,
        tracer_provider: trace.TracerProvider | None = None,
        meter_provider: metrics.MeterProvider | None = None,
        scope_attribute: bool = False,
    ) -> None:
        self._tracer = trace.get_tracer(_NAME, _VERSION, tracer_provider=tracer_provider)
        meter = metrics.get_meter(_NAME, _VERSION, meter_provider=meter_provider)
        self._scope_attribute = scope_attribute
        self._requests = meter.create_counter(
            "semcache.requests", unit="{request}", description="Requests by outcome and tier"
        )
        self._duration = meter.create_histogram(
            "semcache.stage.duration", unit="s", description="Latency of each stage"
        )
        self._similarity = meter.create_histogram(
            "semcache.similarity", unit="1", description="Cosine similarity of the nearest entry"
        )
        self._tokens = meter.create_counter(
            "semcache.tokens.saved", unit="{token}", description="Tokens not sent to the LLM"
        )
        self._errors = meter.create_counter(
            "semcache.errors", unit="{error}", description="Cache failures turned into misses"
        )
        self._evictions = meter.create_counter(
            "semcache.evictions", unit="{entry}", description="Entries evicted by the size bound"
        )
        self._stores = meter.create_counter(
            "semcache.stores", unit="{entry}", description="Responses stored or refused"
        )

    @contextmanager
    def span(self, name: str, **attributes: Any) -> Iterator[Span]:
        """A span, with ``None`` attributes left out."""
        attrs = {k: v for k, v in attributes.items() if v is not None}
        with self._tracer.start_as_current_span(name, attributes=attrs) as span:
            yield span

    @contextmanager
    def stage(self, stage: str) -> Iterator[Span]:
        """A child span ``semcache.<stage>`` and one duration sample for it."""
        start = time.perf_counter()
        with self._tracer.start_as_current_span(f"semcache.{stage}") as span:
            try:
                yield span
            finally:
                self._duration.record(time.perf_counter() - start, {"semcache.stage": stage})

    def scope_label(self, scope_key: str) -> str | None:
        return scope_key[:8] if self._scope_attribute else None

    def record_lookup(
        self,
        span: Span,
        *,
        outcome: str,
        tier: str | None,
        similarity: float | None,
        threshold: float | None,
        reason: str = "",
    ) -> None:
        attrs = {"semcache.outcome": outcome}
        if tier:
            attrs["semcache.tier"] = tier
        self._requests.add(1, attrs)
        if similarity is not None:
            self._similarity.record(similarity, {"semcache.outcome": outcome})
            span.set_attribute("semcache.similarity", similarity)
        if threshold is not None:
            span.set_attribute("semcache.threshold", threshold)
        if reason:
            span.set_attribute("semcache.reason", reason)
        for key, value in attrs.items():
            span.set_attribute(key, value)

    def record_error(self, span: Span, stage: str, error: BaseException) -> None:
        self._errors.add(1, {"semcache.stage": stage, "error.type": type(error).__name__})
        span.record_exception(error)
        span.set_status(Status(StatusCode.ERROR, f"{stage}: {type(error).__name__}"))

    def record_tokens_saved(self, prompt_tokens: int, completion_tokens: int) -> None:
        if prompt_tokens:
            self._tokens.add(prompt_tokens, {"gen_ai.token.type": "input"})
        if completion_tokens:
            self._tokens.add(completion_tokens, {"gen_ai.token.type": "output"})

    def record_store(self, result: str) -> None:
        self._stores.add(1, {"semcache.result": result})

    def record_evictions(self, count: int) -> None:
        if count:
            self._evictions.add(count)
