"""OpenTelemetry spans and metrics. Depends on ``opentelemetry-api`` only.

With no SDK configured every call is a no-op (see "Telemetry overhead" in docs/BENCHMARKS.md);
applications that install ``opentelemetry-sdk`` (or pass providers) get the spans and metrics
listed in docs/observability.md (one table: name, instrument, unit, attributes, meaning).
``SemanticCache.info()`` gives the same counts without OpenTelemetry.

Spans: ``semcache.lookup`` with a child per cache stage (``semcache.embed``, ``semcache.exact``,
``semcache.search``, ``semcache.store``, ``semcache.retrieval``), and the upstream (LLM) call,
named and attributed by the OpenTelemetry GenAI conventions (``chat gpt-4o-mini``, kind CLIENT,
``gen_ai.*`` attributes) unless ``genai=False`` (then ``semcache.upstream``).

Metrics: ``semcache.*`` where no convention exists; the GenAI client metrics
(``gen_ai.client.operation.duration``, ``gen_ai.client.token.usage``) for the upstream call.
Attributes are bounded: no prompt text, no tenant; the partition hash is on spans only, and
miss and bypass reasons are capped at a fixed number of distinct values."""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from opentelemetry import metrics, trace
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from semcache._genai_metrics import GenAiMetrics, Upstream
from semcache._version import VERSION as _VERSION
from semcache.errors import ConfigurationError, SemcacheError

__all__ = ["STAGES", "Telemetry", "TokenPrice", "Upstream"]

_NAME = "semcache"

#: The stage names the cache and middleware use (each is a child span and a duration sample).
STAGES = ("embed", "exact", "search", "store", "retrieval", "upstream")

# Cache stages take 0.1 ms .. 100 ms; the upstream call up to a minute.
_DURATION_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
)  # fmt: skip
#: Distinct miss/bypass reasons put on ``semcache.requests``; later new ones become ``other``.
MAX_REASONS = 64

_SIMILARITY_BUCKETS = (
    *(round(0.05 * i, 2) for i in range(18)),
    0.875, 0.9, 0.925, 0.95, 0.96, 0.97, 0.98, 0.99, 1.0,
)  # fmt: skip


@dataclass(frozen=True, slots=True, kw_only=True)
class TokenPrice:
    """What one token costs, in the currency of the price table (e.g. USD per token)."""

    input: float
    output: float

    def __post_init__(self) -> None:
        if not (self.input >= 0 and self.output >= 0):
            raise ConfigurationError(
                f"token prices must be >= 0, got input={self.input}, output={self.output}"
            )


class Telemetry:
    """The spans and instruments of one cache (or several caches sharing them).

    Args:
        tracer_provider: defaults to the global provider (a no-op until an SDK is installed).
        meter_provider: likewise for metrics.
        scope_attribute: put ``semcache.partition`` (8 hex digits of the scope hash) on spans.
        prices: price per token by model name (the ``"model"`` metadata of a stored entry);
            the key ``"*"`` applies to entries with no or an unlisted model. Empty: no cost metric.
        currency: the unit of ``prices`` (the ``semcache.cost.saved`` unit).
        genai: describe the upstream (LLM) call by the OpenTelemetry GenAI conventions (span
            name, kind and ``gen_ai.*`` attributes; the ``gen_ai.client.*`` metrics). Turn it
            off when the LLM client is instrumented already (e.g. by
            ``opentelemetry-instrumentation-openai-v2``), so each call is counted once; the
            upstream then gets a plain ``semcache.upstream`` span.
    """

    def __init__(
        self,
        *,
        tracer_provider: trace.TracerProvider | None = None,
        meter_provider: metrics.MeterProvider | None = None,
        scope_attribute: bool = True,
        prices: Mapping[str, TokenPrice] | None = None,
        currency: str = "USD",
        genai: bool = True,
    ) -> None:
        self._tracer = trace.get_tracer(_NAME, _VERSION, tracer_provider=tracer_provider)
        meter = metrics.get_meter(_NAME, _VERSION, meter_provider=meter_provider)
        self._scope_attribute = scope_attribute
        self._prices = dict(prices or {})
        self._genai = genai
        self._reasons: set[str] = set()
        self._sources: list[weakref.WeakMethod[Callable[[], int]] | Callable[[], int]] = []
        self._sources_lock = threading.Lock()
        self._requests = meter.create_counter(
            "semcache.requests", unit="{request}", description="Requests by outcome and tier"
        )
        self._duration = meter.create_histogram(
            "semcache.stage.duration",
            unit="s",
            description="Latency of each stage",
            explicit_bucket_boundaries_advisory=_DURATION_BUCKETS,
        )
        self._similarity = meter.create_histogram(
            "semcache.similarity",
            unit="1",
            description="Cosine similarity of the nearest entry",
            explicit_bucket_boundaries_advisory=_SIMILARITY_BUCKETS,
        )
        self._tokens = meter.create_counter(
            "semcache.tokens.saved", unit="{token}", description="Tokens not sent to the LLM"
        )
        self._cost = meter.create_counter(
            "semcache.cost.saved",
            unit=f"{{{currency}}}",
            description="Estimated price of the tokens not sent to the LLM",
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
        self._feedback = meter.create_counter(
            "semcache.feedback", unit="{verdict}", description="Verdicts on served hits"
        )
        self._coalesced = meter.create_counter(
            "semcache.coalesced",
            unit="{request}",
            description="Misses answered by a concurrent call's stored answer",
        )
        self._genai_metrics = GenAiMetrics(meter) if genai else None
        meter.create_observable_gauge(
            "semcache.entries",
            callbacks=[self._observe_entries],
            unit="{entry}",
            description="Entries stored",
        )

    # -- spans --------------------------------------------------------------------------------

    @contextmanager
    def span(self, name: str, *, partition: str | None = None, **attributes: Any) -> Iterator[Span]:
        """A span, with ``None`` attributes left out; ``partition`` is a scope key."""
        attrs = {k: v for k, v in attributes.items() if v is not None}
        if partition is not None and self._scope_attribute:
            attrs["semcache.partition"] = partition[:8]
        with self._current(name, attrs) as span:
            yield span

    @contextmanager
    def _current(self, name: str, attrs: dict[str, Any] | None) -> Iterator[Span]:
        """Start a span; make it current only if it records (no SDK: skip the context work)."""
        span = self._tracer.start_span(name, attributes=attrs)
        if not span.is_recording():
            yield span
            return
        # Errors are recorded once, where they are handled (record_error / mark_failed), not on
        # every span an exception passes through.
        with trace.use_span(
            span, end_on_exit=True, record_exception=False, set_status_on_exception=False
        ):
            yield span

    @contextmanager
    def stage(self, stage: str, **attributes: Any) -> Iterator[Span]:
        """A child span ``semcache.<stage>`` and one duration sample for it.

        ``attributes`` go on the span only (e.g. ``gen_ai.request.model`` on ``upstream``).
        """
        start = time.perf_counter()
        attrs = {k: v for k, v in attributes.items() if v is not None} or None
        with self._current(f"semcache.{stage}", attrs) as span:
            try:
                yield span
            finally:
                self._duration.record(time.perf_counter() - start, {"semcache.stage": stage})

    @contextmanager
    def upstream(
        self, attributes: Mapping[str, Any], *, current: bool = True
    ) -> Iterator[Upstream]:
        """The span of one upstream (LLM) call, its ``upstream`` stage duration and, with
        ``genai``, the GenAI client metrics.

        ``attributes`` are the request's ``gen_ai.*`` attributes (``gen_ai.operation.name``,
        ``gen_ai.request.model``...). An exception raised in the block sets ``error.type`` and
        the span's error status, and propagates. ``current=False`` for streams: a span made
        current inside a generator would leak into its consumer's context between chunks.
        """
        start = time.perf_counter()
        attrs = {k: v for k, v in attributes.items() if v is not None} if self._genai else {}
        operation = str(attrs.get("gen_ai.operation.name", "chat"))
        model = attrs.get("gen_ai.request.model")
        name = (
            (f"{operation} {model}" if model else operation) if self._genai else "semcache.upstream"
        )
        span = self._tracer.start_span(
            name,
            kind=SpanKind.CLIENT if self._genai else SpanKind.INTERNAL,
            attributes=attrs or None,
        )
        call = Upstream(span, start, genai=self._genai)
        error_type: str | None = None
        try:
            if current and span.is_recording():
                with trace.use_span(
                    span, end_on_exit=False, record_exception=False, set_status_on_exception=False
                ):
                    yield call
            else:
                yield call
        except Exception as e:
            error_type = type(e).__qualname__
            span.set_attribute("error.type", error_type)
            span.record_exception(e)
            span.set_status(Status(StatusCode.ERROR, error_type))
            raise
        finally:
            elapsed = time.perf_counter() - start
            self._duration.record(elapsed, {"semcache.stage": "upstream"})
            if self._genai_metrics is not None:
                self._genai_metrics.record(call, attrs, elapsed, error_type)
            span.end()

    def scope_label(self, scope_key: str) -> str | None:
        return scope_key[:8] if self._scope_attribute else None

    # -- outcomes -----------------------------------------------------------------------------

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
        """Count one request by outcome (and the reason of a miss or bypass); a ``shadow_hit``
        miss is also marked ``semcache.shadow``."""
        attrs: dict[str, str | bool] = {"semcache.outcome": str(outcome)}
        if tier:
            attrs["semcache.tier"] = tier
        if reason == "shadow_hit":
            attrs["semcache.shadow"] = True
        self._requests.add(
            1, {**attrs, "semcache.reason": self._bounded(reason)} if reason else attrs
        )
        if similarity is not None:
            # Histograms take non-negative values only: a negative cosine (an unrelated
            # entry) is recorded as 0; the span keeps the exact value.
            self._similarity.record(max(similarity, 0.0), {"semcache.outcome": str(outcome)})
            span.set_attribute("semcache.similarity", similarity)
        if threshold is not None:
            span.set_attribute("semcache.threshold", threshold)
        if reason:
            span.set_attribute("semcache.reason", reason)
        for key, value in attrs.items():
            span.set_attribute(key, value)

    def record_bypass(self, span: Span, reason: str) -> None:
        """A request that skipped the cache (``reason`` must come from a fixed set)."""
        self.record_lookup(
            span, outcome="bypass", tier=None, similarity=None, threshold=None, reason=reason
        )

    def _bounded(self, reason: str) -> str:
        """``reason``, or ``other`` once :data:`MAX_REASONS` distinct ones were seen (a custom
        guard or adapter must not blow up the metric's cardinality)."""
        if reason in self._reasons:
            return reason
        with self._sources_lock:
            if len(self._reasons) < MAX_REASONS:
                self._reasons.add(reason)
                return reason
        return "other"

    def record_failed_request(self, stage: str) -> None:
        """A request the cache could not decide (its key or lookup failed): outcome ``error``."""
        self._requests.add(1, {"semcache.outcome": "error", "semcache.stage": stage})

    def record_coalesced(self) -> None:
        """A miss answered by a concurrent call's stored answer (it was counted as a miss)."""
        self._coalesced.add(1)

    def record_error(self, span: Span, stage: str, error: BaseException) -> None:
        """A failure the cache turned into a miss: the ``semcache.errors`` metric and the span."""
        self._errors.add(1, {"semcache.stage": stage, "error.type": type(error).__name__})
        self.mark_failed(span, stage, error)

    def mark_failed(self, span: Span, stage: str, error: BaseException) -> None:
        """Put ``error`` on ``span`` (for an error raised to the caller: no metric)."""
        span.record_exception(error)
        span.set_status(Status(StatusCode.ERROR, f"{stage}: {type(error).__name__}"))

    def record_tokens_saved(
        self, prompt_tokens: int, completion_tokens: int, *, model: str | None = None
    ) -> float:
        """Count tokens a hit saved; returns their estimated cost (0.0 without a price)."""
        base: dict[str, str] = {} if model is None else {"gen_ai.request.model": str(model)}
        if prompt_tokens:
            self._tokens.add(prompt_tokens, {**base, "gen_ai.token.type": "input"})
        if completion_tokens:
            self._tokens.add(completion_tokens, {**base, "gen_ai.token.type": "output"})
        price = self._prices.get(str(model)) if model is not None else None
        price = price or self._prices.get("*")
        if price is None:
            return 0.0
        cost = prompt_tokens * price.input + completion_tokens * price.output
        if cost:
            self._cost.add(cost, base)
        return cost

    def record_store(self, result: str) -> None:
        self._stores.add(1, {"semcache.result": result})

    def record_evictions(self, count: int) -> None:
        if count:
            self._evictions.add(count)

    def record_feedback(self, correct: bool, *, shadow: bool = False) -> None:
        self._feedback.add(1, {"semcache.correct": correct, "semcache.shadow": shadow})

    # -- the entries gauge --------------------------------------------------------------------

    def watch_entries(self, count: Callable[[], int]) -> None:
        """Report ``count()`` in the ``semcache.entries`` gauge (held weakly if a bound method)."""
        ref: weakref.WeakMethod[Callable[[], int]] | Callable[[], int]
        try:
            ref = weakref.WeakMethod(count)
        except TypeError:
            ref = count
        with self._sources_lock:
            self._sources.append(ref)

    def _observe_entries(self, options: CallbackOptions) -> Iterable[Observation]:
        total, alive = 0, []
        with self._sources_lock:
            sources = list(self._sources)
        for ref in sources:
            fn = ref() if isinstance(ref, weakref.WeakMethod) else ref
            if fn is None:
                continue
            alive.append(ref)
            try:
                total += max(int(fn()), 0)
            except SemcacheError:
                continue
        with self._sources_lock:
            self._sources = alive
        return [Observation(total)] if sources else []
