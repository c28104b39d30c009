"""A tiny chat app behind semcache, exporting its traces and metrics over OTLP.

    pip install 'semcache-middleware[otel]' opentelemetry-exporter-otlp-proto-http
    python examples/observability/app.py                # live: @cached serves hits
    python examples/observability/app.py --shadow       # shadow: would-be hits judged
    python examples/observability/app.py --console      # no collector: print to stdout

The LLM is simulated (OpenAI-style responses with token usage, 50-250 ms each, a few rate-limit
errors); the questions are paraphrases of a dozen intents, some of them near-misses of each
other ("reset my password" / "reset my username"), so the cache serves a few wrong answers.
Live mode goes through ``@cached`` (hits, misses, streams, bypasses, upstream GenAI spans);
shadow mode looks every question up in a ``shadow=True`` cache and reports whether each would-be
hit was right (``cache.feedback``), which the dashboard turns into a false-hit estimate. Each
mode reports as its own ``service.name`` (the ``job`` label in Prometheus).
"""

from __future__ import annotations

import argparse
import os
import random
import time
from collections.abc import Iterator
from contextlib import suppress
from typing import Any

from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricReader, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter

from semcache import CachePolicy, MemoryBackend, Scope, SemanticCache, Telemetry, cached
from semcache.llm.genai import report_response, request_attributes
from semcache.llm.options import cache_options
from semcache.matching.guards import LexicalGuard
from semcache.telemetry import TokenPrice
from semcache.testing import HashingEmbedder

MODEL = "gpt-4o-mini"
PRICES = {"*": TokenPrice(input=0.15e-6, output=0.60e-6)}  # USD per token

#: Intents and their paraphrases; neighbouring intents share most of their words.
INTENTS = {
    "reset-password": ["How do I reset my password?", "how can I reset my password",
                       "reset my password please", "I forgot my password, how do I reset it?"],
    "reset-username": ["How do I reset my username?", "how can I change my username"],
    "delete-account": ["How do I delete my account?", "how can I delete my account",
                       "delete my account please"],
    "export-data": ["How do I export my data?", "can I export all my data",
                    "export my data as CSV"],
    "billing-date": ["When am I billed each month?", "what day of the month am I billed"],
    "refund": ["How do I get a refund?", "can I get a refund for my last invoice"],
    "invoice": ["Where do I find my last invoice?", "where can I download my invoice"],
    "two-factor": ["How do I turn on two-factor authentication?",
                   "enable two-factor authentication"],
    "api-key": ["How do I create an API key?", "how can I create a new API key"],
    "api-limit": ["What is the API rate limit?", "what are the API rate limits"],
    "team-invite": ["How do I invite someone to my team?", "invite a colleague to my team"],
    "team-remove": ["How do I remove someone from my team?", "remove a colleague from my team"],
}  # fmt: skip
INTENT_OF = {q: intent for intent, qs in INTENTS.items() for q in qs}


class RateLimitError(Exception):
    """The simulated LLM's occasional failure."""


class FakeLLM:
    """OpenAI-style chat completions with usage; ``seconds`` of latency each."""

    def __init__(self, rng: random.Random, *, seconds: tuple[float, float], errors: float) -> None:
        self.rng, self.seconds, self.errors = rng, seconds, errors

    def _reply(self, messages: list[dict[str, Any]]) -> tuple[str, int, int]:
        time.sleep(self.rng.uniform(*self.seconds))
        if self.rng.random() < self.errors:
            raise RateLimitError("simulated 429")
        question = str(messages[-1]["content"])
        return f"Answer to: {question}", 20 + len(question) // 4, self.rng.randint(40, 320)

    def complete(self, **kwargs: Any) -> dict[str, Any]:
        text, prompt, completion = self._reply(kwargs["messages"])
        return {
            "id": f"chatcmpl-{self.rng.getrandbits(32):x}",
            "object": "chat.completion",
            "model": f"{kwargs['model']}-2024-07-18",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": prompt, "completion_tokens": completion},
        }

    def stream(self, **kwargs: Any) -> Iterator[dict[str, Any]]:
        text, prompt, completion = self._reply(kwargs["messages"])
        base = {"id": "chatcmpl-stream", "object": "chat.completion.chunk", "model": MODEL}
        for word in text.split(" "):
            yield {**base, "choices": [{"index": 0, "delta": {"content": word + " "}}]}
        yield {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
        usage = {"prompt_tokens": prompt, "completion_tokens": completion}
        yield {**base, "choices": [], "usage": usage}


def live(cache: SemanticCache, llm: FakeLLM, questions: list[str], rng: random.Random) -> None:
    """Serve ``questions`` through ``@cached``: plain calls, streams, and a few bypasses."""
    chat = cached(cache)(llm.complete)
    chat_stream = cached(cache)(llm.stream)
    tracer = trace.get_tracer("semcache-demo")
    for question in questions:
        messages = [{"role": "user", "content": question}]
        roll = rng.random()
        # The app's own span (the cache's lookup and the LLM call are its children); a
        # rate-limited question is dropped where a real app would retry.
        with tracer.start_as_current_span("answer question"), suppress(RateLimitError):
            if roll < 0.08:
                list(chat_stream(model=MODEL, messages=messages, stream=True))
            elif roll < 0.12:  # a turn after a tool result: never cached
                tool = [*messages, {"role": "tool", "content": "42", "tool_call_id": "c1"}]
                chat(model=MODEL, messages=tool, temperature=0)
            elif roll < 0.15:
                with cache_options(bypass=True):
                    chat(model=MODEL, messages=messages, temperature=0)
            else:
                chat(model=MODEL, messages=messages, temperature=0, max_tokens=400)


def shadow(cache: SemanticCache, llm: FakeLLM, questions: list[str]) -> None:
    """Look each question up in a shadow-mode cache and judge its would-be hits."""
    scope = Scope(model=MODEL, params={"temperature": 0})
    for question in questions:
        result = cache.lookup(question, scope)
        if result.shadow is not None:  # would have been served: was it the same intent?
            cache.feedback(result, INTENT_OF.get(result.shadow.prompt) == INTENT_OF[question])
        kwargs = {"model": MODEL, "messages": [{"role": "user", "content": question}]}
        try:
            with cache.telemetry.upstream(request_attributes(kwargs, operation="chat")) as up:
                response = llm.complete(**kwargs)
                report_response(up, response)
        except RateLimitError:
            continue
        usage = response["usage"]
        cache.store(question, response, scope, metadata={"model": MODEL, **usage})


def questions(n: int, rng: random.Random) -> list[str]:
    pool = [q for qs in INTENTS.values() for q in qs]
    return [rng.choice(pool) for _ in range(n)]


def run(telemetry: Telemetry, *, n: int, shadow_mode: bool, seed: int = 0, **llm: Any) -> None:
    """Replay ``n`` questions through one cache reporting to ``telemetry``."""
    rng = random.Random(seed)
    fake = FakeLLM(rng, seconds=llm.get("seconds", (0.05, 0.25)), errors=llm.get("errors", 0.02))
    with SemanticCache(
        embedder=HashingEmbedder(dim=256),
        backend=MemoryBackend(),
        policy=CachePolicy(min_similarity=0.6, max_entries=1_000),
        guards=[LexicalGuard()],
        telemetry=telemetry,
        shadow=shadow_mode,
    ) as cache:
        asked = questions(n, rng)
        if shadow_mode:
            shadow(cache, fake, asked)
        else:
            live(cache, fake, asked, rng)
        print(cache.info())


def providers(service: str, console: bool) -> tuple[TracerProvider, MeterProvider]:
    """Tracer and meter providers exporting over OTLP/HTTP (or to stdout)."""
    span_exporter: SpanExporter
    reader: MetricReader
    if console:
        from opentelemetry.sdk.metrics.export import ConsoleMetricExporter
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        span_exporter = ConsoleSpanExporter()
        reader = PeriodicExportingMetricReader(ConsoleMetricExporter())
    else:
        try:  # reads OTEL_EXPORTER_OTLP_ENDPOINT (default http://localhost:4318)
            from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        except ImportError:
            raise SystemExit("pip install opentelemetry-exporter-otlp-proto-http") from None
        span_exporter = OTLPSpanExporter()
        reader = PeriodicExportingMetricReader(OTLPMetricExporter(), export_interval_millis=5000)
    resource = Resource.create({"service.name": service})
    tracer_provider = TracerProvider(resource=resource)
    tracer_provider.add_span_processor(BatchSpanProcessor(span_exporter))
    return tracer_provider, MeterProvider(resource=resource, metric_readers=[reader])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--shadow", action="store_true", help="shadow mode with verdicts")
    parser.add_argument("--console", action="store_true", help="print instead of OTLP")
    parser.add_argument("--seed", type=int, default=int(os.environ.get("SEED", "0")))
    args = parser.parse_args()
    service = "semcache-demo-shadow" if args.shadow else "semcache-demo"
    tracer_provider, meter_provider = providers(service, args.console)
    trace.set_tracer_provider(tracer_provider)  # the application owns the SDK
    metrics.set_meter_provider(meter_provider)
    try:
        run(Telemetry(prices=PRICES), n=args.requests, shadow_mode=args.shadow, seed=args.seed)
    finally:
        meter_provider.shutdown()  # flushes the last metrics
        tracer_provider.shutdown()


if __name__ == "__main__":
    main()
