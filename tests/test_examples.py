"""The examples in examples/ run as documented (the LangChain and LiteLLM ones have own tests)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def run(*args: str) -> str:
    out = subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, check=True, timeout=300
    )
    return out.stdout


@pytest.mark.model
def test_quickstart_serves_repeats_and_paraphrases() -> None:
    out = run(str(EXAMPLES / "quickstart.py"))
    assert "hits_exact=1" in out
    assert "hits_semantic=1" in out
    assert "upstream calls: 2" in out


def test_otel_console_example_prints_spans_and_metrics() -> None:
    out = run(str(EXAMPLES / "otel_console.py"))
    for name in ("semcache.lookup", "semcache.embed", "semcache.requests", "semcache.tokens.saved"):
        assert f'"name": "{name}"' in out, name


def test_observability_app_exports_genai_spans_and_cache_metrics() -> None:
    out = run(str(EXAMPLES / "observability" / "app.py"), "--console", "--requests", "40")
    for name in ("chat gpt-4o-mini", "gen_ai.client.token.usage", "semcache.requests"):
        assert f'"name": "{name}"' in out, name
    assert "hits_exact=" in out
