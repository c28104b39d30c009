"""Listing, export and import: a cache moved embedded -> Redis -> embedded serves the same.

The round trip uses the real MiniLM model; the file-format checks use the hashing embedder.
"""

from __future__ import annotations

import asyncio
import io
import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from semcache import (
    ConfigurationError,
    EmbeddedBackend,
    MemoryBackend,
    Scope,
    SemanticCache,
)
from semcache.errors import FingerprintMismatchError, ImportFormatError
from semcache.ops import export_entries, import_entries, iter_entries, summarize
from semcache.ops.listing import aiter_entries
from semcache.selector import Selector
from semcache.testing import HashingEmbedder, ManualClock

FAQ = [
    ("acme", "gpt-a", "How do I reset my password?", "Use the reset link on the login page."),
    ("acme", "gpt-a", "What are your opening hours?", "We are open 9 to 5, Monday to Friday."),
    ("acme", "gpt-b", "Can I get a refund after 30 days?", "Refunds are possible within 60 days."),
    ("acme", "gpt-b", "How do I change my shipping address?", "Edit it under Account, Addresses."),
    ("globex", "gpt-a", "How do I reset my password?", "Ask your Globex administrator."),
    ("globex", "gpt-a", "Where is my invoice?", "Invoices are under Billing, History."),
    ("globex", "gpt-b", "Do you ship to Canada?", "Yes, to every province."),
    ("globex", "gpt-b", "How long does delivery take?", "Three to five working days."),
]
QUERIES = [
    ("acme", "gpt-a", "I forgot my password, how can I reset it"),
    ("acme", "gpt-a", "when are you open"),
    ("acme", "gpt-b", "is a refund possible after a month"),
    ("globex", "gpt-a", "how can I reset my password"),
    ("globex", "gpt-a", "where can I find my invoices"),
    ("globex", "gpt-b", "do you deliver to canada"),
    ("globex", "gpt-b", "what is the capital of France"),
]


def _scope(tenant: str, model: str) -> Scope:
    return Scope(tenant=tenant, model=model, params={"temperature": 0})


def _fill(cache: SemanticCache, clock: ManualClock) -> None:
    for i, (tenant, model, q, a) in enumerate(FAQ):
        cache.store(q, {"text": a}, _scope(tenant, model), tags=["faq"] if i % 2 else None)
    cache.store("What is today's special?", "soup", _scope("acme", "gpt-a"), ttl=10)
    clock.advance(60)  # the special has expired


def _answers(cache: SemanticCache) -> list[tuple[str | None, Any, float | None]]:
    out = []
    for tenant, model, q in QUERIES:
        result = cache.lookup(q, _scope(tenant, model), min_similarity=0.6)
        prompt = None if result.entry is None else result.entry.prompt
        response = None if result.entry is None else result.entry.response
        out.append((prompt, response, result.similarity))
    return out


def _same(a: list[Any], b: list[Any]) -> None:
    assert [x[:2] for x in a] == [x[:2] for x in b]
    for (_, _, sa), (_, _, sb) in zip(a, b, strict=True):
        assert sa == pytest.approx(sb, abs=1e-5)


def test_embedded_to_redis_and_back_serves_the_same(
    st_embedder: Any, redis_url: str, tmp_path: Path
) -> None:
    from semcache.backends.redis import RedisBackend

    clock = ManualClock()
    with SemanticCache(
        embedder=st_embedder, backend=EmbeddedBackend(tmp_path / "a"), clock=clock
    ) as first:
        _fill(first, clock)
        before = _answers(first)
        assert 4 <= sum(1 for p, _, _ in before if p is not None) < len(QUERIES)
        report = export_entries(
            first.backend, st_embedder.fingerprint, tmp_path / "a.jsonl", now=clock.now()
        )
        assert (report.exported, report.skipped_expired) == (len(FAQ), 1)

    name = f"port{uuid.uuid4().hex[:10]}"
    redis = RedisBackend(redis_url, name=name)
    try:
        got = import_entries(tmp_path / "a.jsonl", redis, now=clock.now())  # no embedder needed
        assert (got.imported, got.reembedded, got.skipped_expired) == (len(FAQ), 0, 0)
        with SemanticCache(embedder=st_embedder, backend=redis, clock=clock) as middle:
            _same(_answers(middle), before)
            export_entries(redis, st_embedder.fingerprint, tmp_path / "b.jsonl", now=clock.now())
    finally:
        RedisBackend(redis_url, name=name).drop()

    back = EmbeddedBackend(tmp_path / "c")
    import_entries(tmp_path / "b.jsonl", back, now=clock.now())
    with SemanticCache(embedder=st_embedder, backend=back, clock=clock) as last:
        _same(_answers(last), before)
        entries = [e for e, _ in iter_entries(last.backend, Selector(tenant="acme", tag="faq"))]
        assert sorted(e.prompt for e in entries) == sorted(
            q for i, (t, _, q, _) in enumerate(FAQ) if t == "acme" and i % 2
        )


def test_an_export_without_vectors_is_embedded_again(st_embedder: Any, tmp_path: Path) -> None:
    clock = ManualClock()
    with SemanticCache(embedder=st_embedder, backend=MemoryBackend(), clock=clock) as first:
        _fill(first, clock)
        before = _answers(first)
        out = io.StringIO()
        export_entries(first.backend, st_embedder.fingerprint, out, vectors=False, now=clock.now())
    header = json.loads(out.getvalue().splitlines()[0])
    assert header["format"] == "semcache-entries"
    assert header["vectors"] is False
    target = EmbeddedBackend(tmp_path / "x")
    with pytest.raises(ConfigurationError, match="embedding again"):
        import_entries(io.StringIO(out.getvalue()), target, now=clock.now())
    report = import_entries(
        io.StringIO(out.getvalue()), target, embedder=st_embedder, now=clock.now(), progress=True
    )
    assert report.reembedded == len(FAQ)
    with SemanticCache(embedder=st_embedder, backend=target, clock=clock) as again:
        after = _answers(again)
    assert [x[:2] for x in after] == [x[:2] for x in before]
    for (_, _, a), (_, _, b) in zip(after, before, strict=True):
        assert a == pytest.approx(b, abs=1e-4)  # batch padding moves the last digits


# -- the file format, with the hashing embedder ----------------------------------------------------


@pytest.fixture
def exported() -> str:
    embedder = HashingEmbedder()
    with SemanticCache(embedder=embedder, backend=MemoryBackend()) as cache:
        for tenant, model, q, a in FAQ:
            cache.store(q, a, _scope(tenant, model), tags=["faq"])
        out = io.StringIO()
        export_entries(cache.backend, embedder.fingerprint, out)
    return out.getvalue()


def _broken(text: str) -> dict[str, str]:
    lines = text.splitlines()
    header = json.loads(lines[0])
    record = json.loads(lines[3])
    return {
        "empty file": "",
        "foreign format": json.dumps({**header, "format": "gptcache"}) + "\n" + lines[1],
        "newer version": json.dumps({**header, "version": 99}),
        "not JSON": "\n".join([*lines[:3], "{oops", *lines[3:]]),
        "truncated line": "\n".join([*lines[:-1], lines[-1][: len(lines[-1]) // 2]]),
        "short vector": "\n".join(
            [*lines[:3], json.dumps({**record, "vector": record["vector"][:20]})]
        ),
        "bad tag": "\n".join([*lines[:3], json.dumps({**record, "tags": ["a,b"]})]),
        "no prompt": "\n".join([*lines[:3], json.dumps({**record, "prompt": ""})]),
        "array line": "\n".join([*lines[:3], "[1, 2]"]),
    }


def test_a_malformed_or_foreign_file_stores_nothing(exported: str) -> None:
    embedder = HashingEmbedder()
    for case, text in _broken(exported).items():
        with SemanticCache(embedder=embedder, backend=MemoryBackend()) as target:
            target.store("already here", "kept")
            with pytest.raises(ImportFormatError) as caught:
                import_entries(io.StringIO(text), target.backend, embedder=embedder)
            assert "\n" not in str(caught.value), case
            assert [e.prompt for e, _ in iter_entries(target.backend)] == ["already here"], case


def test_another_model_is_embedded_again_or_refused(exported: str) -> None:
    other = HashingEmbedder(dim=32, name="other")
    target = MemoryBackend()
    report = import_entries(io.StringIO(exported), target, embedder=other)
    assert report.reembedded == len(FAQ)
    assert target.count() == len(FAQ)
    bound = MemoryBackend()
    bound.bind(other.fingerprint)
    with pytest.raises(FingerprintMismatchError):
        import_entries(io.StringIO(exported), bound)


def test_pages_cover_every_entry_once(exported: str, redis_url: str) -> None:
    from semcache.backends.redis import RedisBackend

    redis = RedisBackend(redis_url, name=f"pg{uuid.uuid4().hex[:10]}")
    try:
        for backend in (MemoryBackend(), redis):
            import_entries(io.StringIO(exported), backend)
            pages, cursor, seen = 0, None, []
            while True:
                page = backend.entries(Selector(tenant="globex"), cursor, 2)
                seen += [e.prompt for e in page.entries]
                pages += 1
                if page.cursor is None:
                    break
                cursor = page.cursor
            assert sorted(set(seen)) == sorted(q for t, _, q, _ in FAQ if t == "globex")
            assert pages >= 2
            summary = summarize(backend, now=0.0)
            assert summary.entries == len(FAQ)
            assert summary.tenants == {"acme": 4, "globex": 4}
            assert summary.tags == {"faq": len(FAQ)}
            sync = sorted(e.id for e, _ in iter_entries(backend, Selector(model="gpt-b")))

            async def walk(b: Any = backend) -> list[str]:
                from semcache.backends.base import as_async

                found = [e.id async for e, _ in aiter_entries(as_async(b), Selector(model="gpt-b"))]
                if hasattr(b, "core"):
                    await b.core.aclose()
                return sorted(found)

            assert asyncio.run(walk()) == sync
            assert len(sync) == 4
    finally:
        redis.drop()
        redis.close()
