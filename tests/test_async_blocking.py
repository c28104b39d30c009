"""No async path blocks the event loop: no SQLite call, blocking socket or sleep on its thread.

Every async entry point runs a miss, an exact hit, a semantic lookup and a corrupt entry's
healing while :class:`faults.BlockingCalls` profiles the loop's thread; the embedder and (for the
embedded store) the backend record the threads they were called on. On Redis the backend's own
async client is used (no worker threads); the embedded store runs in worker threads.
"""

from __future__ import annotations

import sqlite3
import threading
import uuid
from pathlib import Path

import pytest
from entry_points import ENTRY_POINTS, EntryPoint
from faults import BlockingCalls, RecordingBackend, RecordingEmbedder

from semcache import CachePolicy, EmbeddedBackend, RedisBackend, SemanticCache
from semcache.backends.base import Backend

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:langchain_core.*")

QUESTION = "how do i brew green tea at home"
PARAPHRASE = "how do i brew green tea at home today"
ASYNC = [kind for kind in ENTRY_POINTS if kind.is_async]


class Store:
    """The backend under test, and how to corrupt every entry it holds (from outside)."""

    def __init__(self, kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
        self.kind = kind
        self.backend: Backend
        if kind == "embedded":
            self.path = tmp_path / "cache"
            self.backend = RecordingBackend(EmbeddedBackend(self.path))
        else:
            self.url: str = request.getfixturevalue("redis_url")
            self.name = f"blocking-{uuid.uuid4().hex[:8]}"
            self.backend = RedisBackend(self.url, name=self.name)

    def corrupt(self) -> None:
        if self.kind == "embedded":
            with sqlite3.connect(self.path / "entries.sqlite3") as db:
                db.execute("UPDATE entries SET response = '{not json'")
            return
        import redis

        with redis.Redis.from_url(self.url) as client:
            for key in client.scan_iter(match=f"semcache:{self.name}:e:*"):
                client.hset(key, "response", "{not json")


@pytest.mark.parametrize("store", ["embedded", pytest.param("redis", marks=pytest.mark.redis)])
@pytest.mark.parametrize("kind", ASYNC, ids=lambda k: k.name)
async def test_async_paths_never_block_the_event_loop(
    kind: type[EntryPoint], store: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    where = Store(store, tmp_path, request)
    embedder = RecordingEmbedder()
    cache = SemanticCache(
        embedder=embedder, backend=where.backend, policy=CachePolicy(min_similarity=0.5)
    )
    entry = kind(cache, tmp_path)
    embedder.threads.clear()  # building the entry point (indexing RAG documents) is set-up
    loop_thread = threading.get_ident()
    blocking = BlockingCalls()
    with blocking.watching():
        await entry.ask(QUESTION)  # miss: lookup, upstream, store
        await entry.ask(QUESTION)  # exact hit
        await entry.ask(PARAPHRASE)  # a semantic hit
    where.corrupt()
    with blocking.watching():
        await entry.ask(QUESTION)  # a corrupt entry: a miss, deleted, the answer stored again
        await entry.ask(QUESTION)  # and served again
    calls = list(where.backend.calls) if isinstance(where.backend, RecordingBackend) else []
    assert entry.upstream == 2, "only the first miss and the healing miss went upstream"
    assert cache.info().errors == 1
    assert blocking.seen == [], f"blocking calls on the event loop: {sorted(set(blocking.seen))}"
    assert embedder.threads, "the embedder ran"
    assert loop_thread not in embedder.threads, "the embedder ran on the event loop"
    on_loop = [name for name, thread in calls[1:] if thread == loop_thread]  # [0]: bind
    assert on_loop == [], f"backend calls on the event loop: {on_loop}"
    await cache.aclose()


async def test_the_detector_sees_a_blocking_call(tmp_path: Path) -> None:
    """The check above can fail: a sync store call made from a coroutine is caught."""
    backend = EmbeddedBackend(tmp_path / "cache")
    cache = SemanticCache(embedder=RecordingEmbedder(), backend=backend)
    blocking = BlockingCalls()
    with blocking.watching():
        cache.lookup("a question asked the blocking way")
    assert any(name.startswith("sqlite3.") for name in blocking.seen)
    cache.close()
