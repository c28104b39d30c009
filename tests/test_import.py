"""What importing semcache pulls in: no heavy optional dependency, and the request path never
imports the offline tooling (``semcache.measure``) or the command line (``semcache.cli``)."""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys

import pytest

import semcache

HEAVY = (
    "torch",
    "sentence_transformers",
    "transformers",
    "redis",
    "redisvl",
    "litellm",
    "onnxruntime",
    "langchain_core",
    "matplotlib",
    "bm25s",
)
OFFLINE = ("semcache.measure", "semcache.cli")
REQUEST_PATH = (
    "semcache.cache",
    "semcache.llm.decorator",
    "semcache.policy",
    "semcache.backends.embedded",
)


def loaded_after(statement: str) -> list[str]:
    """The modules in ``sys.modules`` after running ``statement`` in a fresh interpreter."""
    code = f"import json, sys; {statement}; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return list(json.loads(out.stdout))


def under(modules: list[str], roots: tuple[str, ...]) -> list[str]:
    return [m for m in modules if any(m == r or m.startswith(r + ".") for r in roots)]


def test_import_semcache_loads_no_heavy_dependency() -> None:
    loaded = loaded_after("import semcache")
    assert under(loaded, HEAVY) == []
    assert under(loaded, OFFLINE) == []


@pytest.mark.parametrize("module", REQUEST_PATH)
def test_nothing_on_the_request_path_imports_from_cli_or_measure(module: str) -> None:
    assert under(loaded_after(f"import {module}"), OFFLINE) == []


def test_no_library_module_imports_from_cli_or_measure() -> None:
    """Every module outside cli/ and measure/ (backends, retrieval, embedders...) at once."""
    names = [
        m.name
        for m in pkgutil.walk_packages(semcache.__path__, "semcache.")
        if not under([m.name], (*OFFLINE, "semcache.__main__"))
    ]
    assert "semcache.retrieval.rag" in names
    assert under(loaded_after("; ".join(f"import {n}" for n in names)), OFFLINE) == []


def test_errors_form_one_tree() -> None:
    import semcache.errors as errors

    for name in errors.__all__:
        cls = getattr(errors, name)
        assert issubclass(cls, errors.SemcacheError), name
    assert issubclass(errors.ConfigurationError, ValueError)
    assert issubclass(errors.MissingDependencyError, ImportError)
    err = errors.MissingDependencyError("redisvl", "redis")
    assert "semcache-middleware[redis]" in str(err)
