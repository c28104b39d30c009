"""One fail-open path: every entry point turns every cache failure into a miss, counted once.

For each way into the cache (the decorator, the LiteLLM plugin, the LangChain cache and cached
retriever, the RAG cache; sync and async) and each failure (a corrupt stored entry, the backend
down, the embedder raising, a guard raising, the verifier raising): the caller gets the upstream's
answer, and the failure is counted once in ``info().errors``, once in the ``semcache.errors``
metric and once on the spans. A corrupt entry is deleted exactly once.
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from entry_points import ENTRY_POINTS, EntryPoint
from faults import RecordingBackend, RecordingEmbedder
from otel_capture import Otel

from semcache import CachePolicy, EmbeddedBackend, SemanticCache
from semcache.models import Candidate

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:langchain_core.*")

QUESTION = "how do i brew green tea at home"
PARAPHRASE = "how do i brew green tea at home today"  # a near candidate, not an exact repeat
FAULTS = ("corrupt_entry", "backend_down", "embedder_raises", "guard_raises", "verifier_raises")


def _raise(query: str, candidate: Candidate) -> str | None:
    raise ValueError("test: this check failed")


class World:
    """A cache over a recording embedded backend, and one entry point into it."""

    def __init__(self, kind: type[EntryPoint], fault: str, tmp_path: Path, otel: Otel) -> None:
        self.embedder = RecordingEmbedder()
        self.path = tmp_path / "cache"
        self.backend = RecordingBackend(EmbeddedBackend(self.path))
        self.cache = SemanticCache(
            embedder=self.embedder,
            backend=self.backend,
            # no budget: a loaded CI machine must not add a timeout to the fault under test
            policy=CachePolicy(min_similarity=0.5, lookup_budget=None),
            guards=(_raise,) if fault == "guard_raises" else (),
            verifier=_raise if fault == "verifier_raises" else None,
            telemetry=otel.telemetry(),
        )
        self.entry = kind(self.cache, tmp_path)
        self.otel = otel

    def ask(self, text: str) -> Any:
        got = self.entry.ask(text)
        return asyncio.run(got) if self.entry.is_async else got

    def corrupt_every_entry(self) -> None:
        with sqlite3.connect(self.path / "entries.sqlite3") as db:
            db.execute("UPDATE entries SET response = '{not json'")

    def break_it(self, fault: str) -> None:
        if fault == "corrupt_entry":
            self.corrupt_every_entry()
        elif fault == "backend_down":
            self.backend.down = True
        elif fault == "embedder_raises":
            self.embedder.failing = True


@pytest.mark.parametrize("fault", FAULTS)
@pytest.mark.parametrize("kind", ENTRY_POINTS, ids=lambda k: k.name)
def test_every_failure_is_a_miss_counted_once(
    kind: type[EntryPoint], fault: str, tmp_path: Path, otel: Otel
) -> None:
    world = World(kind, fault, tmp_path, otel)
    entry = world.entry
    first = world.ask(QUESTION)  # a miss: the upstream answers and the answer is stored
    assert entry.upstream == 1
    assert entry.same(first)
    assert world.cache.info().errors == 0

    world.break_it(fault)
    world.cache.reset_stats()
    otel.spans.clear()
    deletes_before = world.backend.names("delete")
    # The exact tier reads the corrupt entry; the others need the semantic tier (a candidate).
    got = world.ask(QUESTION if fault == "corrupt_entry" else PARAPHRASE)

    assert entry.upstream == 2, "the call must reach the upstream"
    assert entry.same(got), "the caller gets the upstream's fresh answer"
    expected = entry.failures.get(fault, 1)
    assert world.cache.info().errors == expected
    assert otel.total("semcache.errors") == expected
    assert otel.exceptions() == expected
    if fault == "corrupt_entry":
        assert world.backend.names("delete") - deletes_before == 1, "deleted exactly once"


@pytest.mark.parametrize("kind", ENTRY_POINTS, ids=lambda k: k.name)
def test_the_store_keeps_serving_after_a_failure(
    kind: type[EntryPoint], tmp_path: Path, otel: Otel
) -> None:
    """After a corrupt entry was healed, the next answer is stored and served again."""
    world = World(kind, "corrupt_entry", tmp_path, otel)
    world.ask(QUESTION)
    world.corrupt_every_entry()
    world.ask(QUESTION)  # heals: the corrupt entry is deleted, the fresh answer stored
    upstream = world.entry.upstream
    again = world.ask(QUESTION)
    assert world.entry.upstream == upstream, "served from the cache"
    assert world.entry.same(again)


def test_an_outage_warns_once_and_counts_every_failure(
    tmp_path: Path, otel: Otel, caplog: pytest.LogCaptureFixture
) -> None:
    """The log gets one warning per kind of failure every few seconds; the counters get all."""
    from entry_points import DecoratorSync

    world = World(DecoratorSync, "backend_down", tmp_path, otel)
    world.break_it("backend_down")
    with caplog.at_level("DEBUG", logger="semcache"):
        for i in range(50):
            world.ask(f"question number {i}")
    warnings = [r for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1
    assert "BackendUnavailableError" in warnings[0].getMessage()
    assert sum("failed again" in r.getMessage() for r in caplog.records) == 49
    assert world.cache.info().errors == 50
    assert otel.total("semcache.errors") == 50
