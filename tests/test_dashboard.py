"""The shipped Grafana dashboard queries only metrics and labels the code emits.

The emitted set comes from running real caches (the example app's live and shadow traffic, a
failing lookup, an eviction, a coalesced call, feedback) with the SDK's in-memory reader, then
applying the OpenTelemetry Collector Prometheus exporter's default naming
(``UnderscoreEscapingWithSuffixes``): dots to underscores, a unit suffix (``s`` -> ``_seconds``,
``{...}`` units dropped), ``_total`` on monotonic counters, ``_bucket``/``_sum``/``_count`` series
for histograms, attribute keys with dots as labels with underscores.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml
from faults import RecordingEmbedder
from opentelemetry.sdk.metrics.export import Histogram, Sum
from otel_capture import Otel

from semcache import CachePolicy, MemoryBackend, SemanticCache, cached
from semcache.llm.coalesce import Flights

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "observability"
DASHBOARD = EXAMPLE / "grafana" / "dashboards" / "semcache.json"

# -- the Prometheus exporter's naming -------------------------------------------------------

_UNITS = {
    "d": "days", "h": "hours", "min": "minutes", "s": "seconds", "ms": "milliseconds",
    "us": "microseconds", "ns": "nanoseconds", "By": "bytes", "KiBy": "kibibytes",
    "MiBy": "mebibytes", "GiBy": "gibibytes", "KBy": "kilobytes", "MBy": "megabytes",
    "GBy": "gigabytes", "m": "meters", "V": "volts", "A": "amperes", "J": "joules",
    "W": "watts", "g": "grams", "Cel": "celsius", "Hz": "hertz", "1": "", "%": "percent",
}  # fmt: skip
_PER_UNITS = {"s": "second", "m": "minute", "h": "hour", "d": "day", "w": "week"}


def _unit_tokens(unit: str) -> list[str]:
    main, _, per = unit.partition("/")
    out = []
    if main.strip() and not re.search(r"[{}]", main):
        out.append(re.sub(r"[^a-zA-Z0-9]+", "_", _UNITS.get(main.strip(), main.strip())))
    if per.strip() and not re.search(r"[{}]", per):
        out.append("per_" + _PER_UNITS.get(per.strip(), per.strip()))
    return [t.strip("_") for t in out if t.strip("_")]


def prometheus_name(name: str, unit: str, kind: str) -> str:
    """The metric family name (``kind``: counter, updowncounter, gauge, histogram)."""
    tokens = [t for t in re.split(r"[^a-zA-Z0-9:]+", name) if t]
    for suffix in _unit_tokens(unit):
        if suffix not in tokens:
            tokens.append(suffix)
    if kind == "counter":
        tokens = [t for t in tokens if t != "total"] + ["total"]
    if unit == "1" and kind == "gauge":
        tokens = [t for t in tokens if t != "ratio"] + ["ratio"]
    return "_".join(tokens)


def prometheus_label(key: str) -> str:
    label = re.sub(r"[^a-zA-Z0-9_]", "_", key)
    return f"key_{label}" if label[0].isdigit() else label


def prometheus_value(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


@pytest.mark.parametrize(
    ("name", "unit", "kind", "expected"),
    [
        ("http.server.duration", "s", "histogram", "http_server_duration_seconds"),
        ("requests.count", "1", "counter", "requests_count_total"),
        ("memory.usage", "By", "gauge", "memory_usage_bytes"),
        ("system.network.dropped", "{packets}", "counter", "system_network_dropped_total"),
        ("system.memory.utilization", "1", "gauge", "system_memory_utilization_ratio"),
        ("network.io", "By/s", "gauge", "network_io_bytes_per_second"),
        ("jobs.total", "{job}", "counter", "jobs_total"),
    ],
)
def test_prometheus_naming_follows_the_translator(
    name: str, unit: str, kind: str, expected: str
) -> None:
    # The translator's own examples (prometheus/otlptranslator, collector-contrib README).
    assert prometheus_name(name, unit, kind) == expected


# -- what the code emits ----------------------------------------------------------------------


@dataclass
class Family:
    series: set[str]
    labels: dict[str, set[str]] = field(default_factory=dict)


def _load_app() -> ModuleType:
    spec = importlib.util.spec_from_file_location("observability_app", EXAMPLE / "app.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _coalesce_once(otel: Otel, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two concurrent identical calls: the follower is served the leader's stored answer."""
    joined = asyncio.Event()
    original = Flights.join

    def join(self: Flights, *args: Any, **kwargs: Any) -> Any:
        flight, leader = original(self, *args, **kwargs)
        if not leader:
            joined.set()
        return flight, leader

    monkeypatch.setattr(Flights, "join", join)
    with SemanticCache(
        embedder=RecordingEmbedder(), backend=MemoryBackend(), telemetry=otel.telemetry()
    ) as cache:

        @cached(cache)
        async def chat(**kwargs: Any) -> str:
            await asyncio.wait_for(joined.wait(), 10)
            return "an answer"

        async def both() -> None:
            messages = [{"role": "user", "content": "one question asked twice"}]
            await asyncio.gather(
                chat(model="m", messages=messages), chat(model="m", messages=messages)
            )

        asyncio.run(both())
        assert cache.info().coalesced == 1


def _failures_evictions_feedback(otel: Otel) -> None:
    embedder = RecordingEmbedder()
    with SemanticCache(
        embedder=embedder,
        backend=MemoryBackend(),
        policy=CachePolicy(max_entries=1, min_similarity=0.5),
        telemetry=otel.telemetry(),
    ) as cache:
        cache.store("first question here", "a")
        cache.store("second question here", "b")  # evicts the first
        served = cache.lookup("second question here")
        cache.feedback(served, correct=False)  # a served hit judged wrong
        embedder.failing = True

        @cached(cache)
        def chat(**kwargs: Any) -> str:
            return "an answer"

        chat(model="m", messages=[{"role": "user", "content": "a third question"}])
        assert cache.info().errors == 1


@pytest.fixture
def emitted(otel: Otel, monkeypatch: pytest.MonkeyPatch) -> dict[str, Family]:
    app = _load_app()
    for shadow in (False, True):
        tel = otel.telemetry(prices=app.PRICES)
        app.run(tel, n=300, shadow_mode=shadow, seconds=(0.0, 0.0), errors=0.03)
    _failures_evictions_feedback(otel)
    _coalesce_once(otel, monkeypatch)

    data = otel.reader.get_metrics_data()
    assert data is not None
    families: dict[str, Family] = {}
    for rm in data.resource_metrics:
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                points = metric.data.data_points
                if isinstance(metric.data, Histogram):
                    kind = "histogram"
                elif isinstance(metric.data, Sum):
                    kind = "counter" if metric.data.is_monotonic else "updowncounter"
                else:
                    kind = "gauge"
                base = prometheus_name(metric.name, metric.unit or "", kind)
                series = (
                    {f"{base}_bucket", f"{base}_sum", f"{base}_count"}
                    if kind == "histogram"
                    else {base}
                )
                family = families.setdefault(base, Family(series=series))
                if kind == "histogram":
                    family.labels.setdefault("le", set())
                for point in points:
                    for key, value in (point.attributes or {}).items():
                        family.labels.setdefault(prometheus_label(key), set()).add(
                            prometheus_value(value)
                        )
    return families


# -- what the dashboard queries -----------------------------------------------------------------

_SELECTOR = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\{([^}]*)\}")
_MATCHER = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!=|!~|=)\s*"((?:[^"\\]|\\.)*)"')
_BY = re.compile(r"\bby\s*\(([^)]*)\)")
_LEGEND = re.compile(r"\{\{\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*\}\}")
_FUNCTIONS = {"sum", "rate", "increase", "histogram_quantile", "scalar", "vector"}
_KEYWORDS = {"by", "or", "and", "unless", "without"}
#: Labels Prometheus and the collector add (``job``/``instance`` from the resource).
_TARGET_LABELS = {"job", "instance"}


def _targets() -> list[dict[str, Any]]:
    dashboard = json.loads(DASHBOARD.read_text())
    found = [t for p in dashboard["panels"] for t in p.get("targets", [])]
    assert found, "the dashboard has no queries"
    return found


def test_every_dashboard_query_uses_emitted_metrics_and_labels(
    emitted: dict[str, Family],
) -> None:
    by_series = {s: f for f in emitted.values() for s in f.series}
    queried: set[str] = set()
    for target in _targets():
        expr = target["expr"]
        metrics = [(name, body) for name, body in _SELECTOR.findall(expr)]
        assert metrics, expr
        families = []
        for name, body in metrics:
            assert name in by_series, f"{name} is not emitted (query: {expr})"
            family = by_series[name]
            families.append(family)
            queried.add(name)
            for label, op, value in _MATCHER.findall(body):
                if label in _TARGET_LABELS:
                    continue
                assert label in family.labels, f"{name} has no label {label} (query: {expr})"
                if op == "=":
                    assert value in family.labels[label], f"{name}{{{label}={value!r}}} never seen"
        labels = {label for f in families for label in f.labels}
        for group in _BY.findall(expr):
            for label in (x.strip() for x in group.split(",") if x.strip()):
                assert label in labels, f"grouping by {label}, which {expr} does not have"
        for label in _LEGEND.findall(target.get("legendFormat", "")):
            assert label in labels, f"legend uses {label}, which {expr} does not have"
        # Nothing else is a bare metric name: what remains are functions and keywords.
        rest = _SELECTOR.sub(" ", re.sub(r"\[[^\]]*\]|\"[^\"]*\"", " ", expr))
        rest = _BY.sub(" ", rest)
        for word in re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", rest):
            assert word in _FUNCTIONS | _KEYWORDS, f"unknown name {word} in {expr}"
    # The panels the issue asks for: hit ratio, the shadow false-hit estimate, stage latency,
    # tokens saved, errors, bypass reasons.
    for needed in (
        "semcache_requests_total",
        "semcache_feedback_total",
        "semcache_stage_duration_seconds_bucket",
        "semcache_tokens_saved_total",
        "semcache_errors_total",
        "gen_ai_client_operation_duration_seconds_bucket",
        "gen_ai_client_token_usage_sum",
    ):
        assert needed in queried, needed


def test_the_emitted_metrics_are_the_documented_ones(emitted: dict[str, Family]) -> None:
    """docs/observability.md lists every metric with its Prometheus name."""
    doc = (EXAMPLE.parent.parent / "docs" / "observability.md").read_text()
    for base in emitted:
        assert f"`{base}" in doc, f"{base} is emitted but not documented"


# -- the collector, Prometheus and Grafana files --------------------------------------------------


def test_collector_config_is_a_complete_otlp_to_prometheus_pipeline() -> None:
    config = yaml.safe_load((EXAMPLE / "otel-collector.yaml").read_text())
    sections = ("receivers", "processors", "exporters")
    assert set(config["receivers"]["otlp"]["protocols"]) == {"grpc", "http"}
    assert config["exporters"]["prometheus"]["endpoint"].endswith(":8889")
    # The dashboard's names need the default translation: no strategy or suffix override.
    assert "translation_strategy" not in config["exporters"]["prometheus"]
    assert "add_metric_suffixes" not in config["exporters"]["prometheus"]
    pipelines = config["service"]["pipelines"]
    assert pipelines["metrics"]["exporters"] == ["prometheus"]
    for pipeline in pipelines.values():
        for section in sections:
            for component in pipeline.get(section, []):
                assert component in config[section], f"{component} is not defined in {section}"
    used = {c for p in pipelines.values() for s in sections for c in p.get(s, [])}
    defined = {c for s in sections for c in config[s]}
    assert defined == used, "a defined component is in no pipeline"


def test_compose_mounts_existing_files_and_wires_the_services() -> None:
    compose = yaml.safe_load((EXAMPLE / "docker-compose.yml").read_text())
    services = compose["services"]
    for service in services.values():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            assert (EXAMPLE / source).exists(), source
    scrape = yaml.safe_load((EXAMPLE / "prometheus.yml").read_text())
    (target,) = scrape["scrape_configs"][0]["static_configs"][0]["targets"]
    host, port = target.split(":")
    assert host in services
    assert f"{port}:{port}" in services["otel-collector"]["ports"]
    datasource = yaml.safe_load(
        (EXAMPLE / "grafana/provisioning/datasources/prometheus.yaml").read_text()
    )
    assert datasource["datasources"][0]["url"] == "http://prometheus:9090"
    provider = yaml.safe_load(
        (EXAMPLE / "grafana/provisioning/dashboards/semcache.yaml").read_text()
    )
    path = provider["providers"][0]["options"]["path"]
    assert any(v.endswith(f":{path}:ro") for v in services["grafana"]["volumes"])
