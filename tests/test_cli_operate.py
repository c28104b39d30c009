"""The operator commands, run as ``python -m semcache ...`` in a subprocess, on both backends."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from semcache import EmbeddedBackend, Scope, SemanticCache
from semcache.testing import HashingEmbedder, ManualClock


@dataclass(frozen=True)
class Store:
    args: tuple[str, ...]  # the store argument and its options
    fresh: tuple[str, ...]  # another, empty store of the same kind


def _run(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "semcache", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _fill(cache: SemanticCache) -> None:
    for tenant in ("acme", "globex"):
        for model in ("gpt-a", "gpt-b"):
            for i in range(3):
                scope = Scope(tenant=tenant, model=model, params={"i": i})
                tags = ["faq"] if i == 0 else None
                cache.store(f"{tenant} question {model} {i}", f"answer {i}", scope, tags=tags)
    # Expired (the clock is in 2023), but the Redis key itself lives a day: purge deletes it.
    cache.store("stale", "old", Scope(tenant="globex"), ttl=86_400)


@pytest.fixture(params=["embedded", "redis"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    embedder, clock = HashingEmbedder(), ManualClock()
    if request.param == "embedded":
        with SemanticCache(
            embedder=embedder, backend=EmbeddedBackend(tmp_path / "cache"), clock=clock
        ) as cache:
            _fill(cache)
        yield Store((str(tmp_path / "cache"),), (str(tmp_path / "copy"),))
        return
    from semcache.backends.redis import RedisBackend

    url = request.getfixturevalue("redis_url")
    name, other = f"cli{uuid.uuid4().hex[:8]}", f"cli{uuid.uuid4().hex[:8]}"
    with SemanticCache(
        embedder=embedder, backend=RedisBackend(url, name=name), clock=clock
    ) as cache:
        _fill(cache)
    try:
        yield Store((url, "--name", name), (url, "--name", other))
    finally:
        for n in (name, other):
            RedisBackend(url, name=n).drop()


def _ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stderr
    return result.stdout


def _fails(result: subprocess.CompletedProcess[str], *words: str) -> None:
    """Exit status 2 and one error line on stderr that says what is wrong, no traceback
    (argparse prints its usage before it)."""
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert "Traceback" not in result.stderr
    assert [i for i, line in enumerate(lines) if "error:" in line] == [len(lines) - 1]
    if not lines[0].startswith("usage:"):
        assert len(lines) == 1, result.stderr
    for word in words:
        assert word in lines[-1], lines[-1]


def test_operator_commands(store: Store, tmp_path: Path) -> None:
    stats = json.loads(_ok(_run("stats", *store.args, "--json")))
    assert stats["entries"] == 13
    assert stats["expired"] == 1
    assert stats["tenants"] == {"acme": 6, "globex": 7}
    assert stats["tags"] == {"faq": 4}
    assert "globex" in _ok(_run("stats", *store.args))

    lines = _ok(_run("entries", *store.args, "--tenant", "acme", "--limit", "2", "--json"))
    listed = [json.loads(line) for line in lines.splitlines()]
    assert len(listed) == 2
    assert {e["tenant"] for e in listed} == {"acme"}
    one = json.loads(_ok(_run("entries", *store.args, "--id", listed[0]["id"], "--json")))
    assert one["prompt"] == listed[0]["prompt"]
    shown = _ok(_run("entries", *store.args, "--tag", "faq", "--model", "gpt-b"))
    assert shown.count("tags=faq") == 2

    backup = tmp_path / "backup.jsonl"
    _ok(_run("export", *store.args, str(backup)))
    assert len(backup.read_text().splitlines()) == 1 + 12  # header, live entries
    _ok(_run("import", str(backup), *store.fresh, "--no-progress"))
    copied = json.loads(_ok(_run("stats", *store.fresh, "--json")))
    assert copied["tenants"] == {"acme": 6, "globex": 6}

    declined = _run("clear", *store.args, "--tenant", "acme", stdin="n\n")
    assert declined.returncode == 1
    assert "delete 6 entries" in declined.stderr
    cleared = _ok(_run("clear", *store.args, "--tenant", "acme", stdin="y\n"))
    assert "deleted 6 entries" in cleared
    assert "deleted 2 entries" in _ok(_run("clear", *store.args, "--tag", "faq", "--yes"))
    assert "purged 1 expired" in _ok(_run("purge-expired", *store.args))
    left = json.loads(_ok(_run("stats", *store.args, "--json")))
    assert (left["entries"], left["tenants"]) == (4, {"globex": 4})
    _fails(_run("clear", *store.args, "--yes"), "--all")
    assert "deleted 4 entries" in _ok(_run("clear", *store.args, "--all", "--yes"))


def test_bad_input_is_one_line(tmp_path: Path) -> None:
    assert "purge-expired" in _ok(_run("--help"))
    assert "--tenant" in _ok(_run("clear", "--help"))
    _fails(_run("stats", str(tmp_path / "nowhere")), "no semcache store")
    _fails(_run("entries", str(tmp_path), "--limit", "0"), "--limit")
    (tmp_path / "bad.jsonl").write_text('{"format": "something-else"}\n')
    _fails(_run("import", str(tmp_path / "bad.jsonl"), str(tmp_path / "new")), "not a semcache")
    _fails(_run("import", str(tmp_path / "missing.jsonl"), str(tmp_path / "new")), "missing.jsonl")
    _fails(_run("stats", "redis://127.0.0.1:1/0"), "stats: error")
    _fails(_run("clear", str(tmp_path / "new"), "--tag", "a,b", "--yes"), "tag")
