"""The README's demo, end to end on the real model and the embedded backend (fast settings)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from semcache.measure.demo import build_stream, load_pairs

pytestmark = pytest.mark.model


def test_bundled_sample_and_stream_shape() -> None:
    pairs = load_pairs()
    assert len(pairs) == 1200
    assert sum(p.label for p in pairs) == 600
    stream, _cluster, negatives = build_stream(pairs, 200, seed=3)
    assert len(stream) == 200
    assert len(negatives) == 600
    seen: set[str] = set()
    for ask in stream:  # every pair's second question comes after its first
        pair = pairs[ask.pair]
        if ask.question == pair.text_b:
            assert pair.text_a in seen
        seen.add(ask.question)


def test_demo_command_runs_and_reports() -> None:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "semcache",
            "demo",
            "--requests",
            "150",
            "--latency-scale",
            "0.02",
            "--users",
            "8",
            "--json",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
    )
    report = json.loads(out.stdout)
    assert report["requests"] == 150
    served = report["requests"] - report["upstream_calls"]
    assert served == report["hits_exact"] + report["hits_semantic"] + report["coalesced"]
    assert served == (
        report["correct_hits"] + report["false_hits_labelled"] + report["unverified_hits"]
    )
    assert report["hits_exact"] > 0
    assert report["hits_semantic"] > 0
    assert report["correct_hits"] > report["false_hits_labelled"]
    assert report["tokens_saved"] > 0
    assert report["latency_ms"]["hit"]["n"] == report["hits_exact"] + report["hits_semantic"]
