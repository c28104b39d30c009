"""The upstream (LLM) call's GenAI pieces: the call in progress and the GenAI client metrics.

Used by :meth:`semcache.telemetry.Telemetry.upstream`; names follow the OpenTelemetry GenAI
semantic conventions (``gen_ai.client.operation.duration``, ``gen_ai.client.token.usage``).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

from opentelemetry.metrics import Meter
from opentelemetry.trace import Span

__all__ = ["GenAiMetrics", "Upstream"]

# The GenAI conventions' advised bucket boundaries.
_DURATION_BUCKETS = (
    0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92,
)  # fmt: skip
_TOKEN_BUCKETS = tuple(4**i for i in range(14))  # 1, 4, 16, ... 67108864

#: The request attributes the GenAI metrics carry (the span carries them all).
_METRIC_ATTRIBUTES = ("gen_ai.operation.name", "gen_ai.provider.name", "gen_ai.request.model")


class Upstream:
    """The upstream (LLM) call in progress: its span, and what the response reported.

    Made by :meth:`Telemetry.upstream`; the caller reports the response (:meth:`respond`) and,
    for a stream, each chunk (:meth:`chunk`) as it arrives.
    """

    __slots__ = ("_first_chunk", "_genai", "_start", "response_model", "span", "usage")

    def __init__(self, span: Span, start: float, *, genai: bool) -> None:
        self.span = span
        self._start = start
        self._genai = genai
        self._first_chunk: float | None = None
        self.response_model: str | None = None
        #: (input, output) tokens the response reported, else ``None``.
        self.usage: tuple[int, int] | None = None

    def chunk(self) -> None:
        """A stream chunk arrived (the first one sets ``gen_ai.response.time_to_first_chunk``)."""
        if self._first_chunk is None:
            self._first_chunk = time.perf_counter() - self._start
            if self._genai:
                self.span.set_attribute("gen_ai.response.time_to_first_chunk", self._first_chunk)

    def respond(
        self,
        *,
        model: str | None = None,
        response_id: str | None = None,
        finish_reasons: Sequence[str] = (),
        input_tokens: int | None = None,
        output_tokens: int | None = None,
    ) -> None:
        """What the response said about itself; ``None`` (or empty) where it said nothing."""
        if not self._genai:
            return
        self.response_model = model or None
        if input_tokens is not None or output_tokens is not None:
            self.usage = (input_tokens or 0, output_tokens or 0)
        attrs: dict[str, Any] = {
            "gen_ai.response.model": self.response_model,
            "gen_ai.response.id": response_id or None,
            "gen_ai.response.finish_reasons": list(finish_reasons) or None,
            "gen_ai.usage.input_tokens": input_tokens,
            "gen_ai.usage.output_tokens": output_tokens,
        }
        self.span.set_attributes({k: v for k, v in attrs.items() if v is not None})


class GenAiMetrics:
    """``gen_ai.client.operation.duration`` and ``gen_ai.client.token.usage``."""

    def __init__(self, meter: Meter) -> None:
        self._duration = meter.create_histogram(
            "gen_ai.client.operation.duration",
            unit="s",
            description="GenAI operation duration",
            explicit_bucket_boundaries_advisory=_DURATION_BUCKETS,
        )
        self._tokens = meter.create_histogram(
            "gen_ai.client.token.usage",
            unit="{token}",
            description="Number of input and output tokens used",
            explicit_bucket_boundaries_advisory=_TOKEN_BUCKETS,
        )

    def record(
        self, call: Upstream, request: Mapping[str, Any], elapsed: float, error_type: str | None
    ) -> None:
        """One finished call: its duration (with ``error.type`` if it failed) and its usage."""
        attrs = {k: request[k] for k in _METRIC_ATTRIBUTES if k in request}
        if call.response_model:
            attrs["gen_ai.response.model"] = call.response_model
        self._duration.record(
            elapsed, attrs if error_type is None else {**attrs, "error.type": error_type}
        )
        if call.usage is not None:
            self._tokens.record(call.usage[0], {**attrs, "gen_ai.token.type": "input"})
            self._tokens.record(call.usage[1], {**attrs, "gen_ai.token.type": "output"})
