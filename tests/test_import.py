"""`import semcache` stays light: no torch, redis, litellm, sentence-transformers or hnswlib."""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ("torch", "redis", "redisvl", "litellm", "sentence_transformers", "onnxruntime", "bm25s")


def test_import_is_light() -> None:
    code = (
        "import sys, time, json; t = time.perf_counter(); import semcache; "
        "dt = time.perf_counter() - t; "
        f"print(json.dumps({{'dt': dt, 'loaded': [m for m in {HEAVY!r} if m in sys.modules]}}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    report = json.loads(out.stdout)
    assert report["loaded"] == []


def test_public_api_is_flat_and_complete() -> None:
    import semcache

    for name in semcache.__all__:
        assert hasattr(semcache, name), name
    assert {"SemanticCache", "EmbeddedBackend", "cached", "Scope", "CachePolicy"} <= set(
        semcache.__all__
    )


def test_errors_form_one_tree() -> None:
    import semcache.errors as errors

    for name in errors.__all__:
        cls = getattr(errors, name)
        assert issubclass(cls, errors.SemcacheError), name
    assert issubclass(errors.ConfigurationError, ValueError)
    assert issubclass(errors.MissingDependencyError, ImportError)
    err = errors.MissingDependencyError("redisvl", "redis")
    assert "semcache-middleware[redis]" in str(err)
