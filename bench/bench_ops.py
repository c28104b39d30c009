"""Operating a store: deleting one tenant, exporting and importing, on both backends.

    python bench/bench_ops.py [--tenants 20] [--per-scope 500] [--url redis://...]

A store of ``tenants`` x 2 models scopes of ``per-scope`` 384-d random unit vectors each (every
scope past ``exact_up_to=256``, so each has an HNSW graph, snapshotted on disk). Timed:
``SemanticCache.clear(tenant=...)`` for five tenants in turn (embedded: rows overwritten, graphs
rebuilt and snapshotted, WAL truncated; Redis: hashes, LRU ids), then an export of what is left
to JSONL with vectors and its import into the other backend (no re-embedding). Without
``--url`` a Redis Stack server is started (tests/redis_server.py).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np
from _report import machine, write_section

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from semcache import EmbeddedBackend, HnswParams, ModelFingerprint, Scope  # noqa: E402
from semcache.backends.base import Backend  # noqa: E402
from semcache.keys import text_key  # noqa: E402
from semcache.models import NewEntry  # noqa: E402
from semcache.ops import export_entries, import_entries  # noqa: E402
from semcache.selector import Selector  # noqa: E402

FP = ModelFingerprint(model="bench-random", dim=384)
CLEARED = 5


def fill(backend: Backend, tenants: int, per_scope: int, rng: np.random.Generator) -> int:
    backend.bind(FP)
    n = 0
    for t in range(tenants):
        for model in ("gpt-a", "gpt-b"):
            scope = Scope(tenant=f"tenant-{t}", model=model)
            vectors = rng.standard_normal((per_scope, FP.dim), dtype=np.float32)
            vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
            entries = [
                NewEntry(
                    scope_key=scope.key(),
                    text_key=text_key(f"question {t} {model} {i}"),
                    prompt=f"question {t} {model} {i}",
                    response={"text": f"answer {i}"},
                    created_at=time.time(),
                    tenant=scope.tenant,
                    model=model,
                    tags=("faq",) if i % 10 == 0 else (),
                )
                for i in range(per_scope)
            ]
            for at in range(0, per_scope, 50):
                backend.put_many(entries[at : at + 50], list(vectors[at : at + 50]))
            n += per_scope
    return n


def clear_times(backend: Backend) -> list[float]:
    out = []
    for t in range(CLEARED):
        started = time.perf_counter()
        deleted = backend.delete_where(Selector(tenant=f"tenant-{t}"))
        out.append((time.perf_counter() - started) * 1000)
        assert deleted > 0
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--tenants", type=int, default=20)
    p.add_argument("--per-scope", type=int, default=500)
    p.add_argument("--url", default=None)
    p.add_argument("--no-write", action="store_true")
    args = p.parse_args()
    from semcache.backends.redis import RedisBackend

    server = None
    url = args.url
    if url is None:
        from redis_server import RedisStackServer

        server = RedisStackServer(Path(tempfile.mkdtemp(prefix="semcache-ops-bench-")))
        server.start()
        url = server.url
    work = Path(tempfile.mkdtemp(prefix="semcache-ops-"))
    rng = np.random.default_rng(0)
    rows = []
    try:
        hnsw = HnswParams(exact_up_to=256)
        embedded = EmbeddedBackend(work / "a", hnsw=hnsw)
        redis = RedisBackend(url, name=f"ops{uuid.uuid4().hex[:8]}")
        for label, backend in (("embedded", embedded), ("redis", redis)):
            total = fill(backend, args.tenants, args.per_scope, rng)
            if isinstance(backend, EmbeddedBackend):
                backend.flush()
            times = clear_times(backend)
            left = backend.count()
            started = time.perf_counter()
            report = export_entries(backend, FP, work / f"{label}.jsonl")
            export_s = time.perf_counter() - started
            size_mb = (work / f"{label}.jsonl").stat().st_size / 2**20
            target: Backend = (
                RedisBackend(url, name=f"ops{uuid.uuid4().hex[:8]}")
                if label == "embedded"
                else EmbeddedBackend(work / "b", hnsw=hnsw)
            )
            started = time.perf_counter()
            got = import_entries(work / f"{label}.jsonl", target, progress=False)
            import_s = time.perf_counter() - started
            assert got.imported == report.exported == left
            rows.append(
                (
                    label,
                    total,
                    2 * args.per_scope,
                    statistics.median(times),
                    max(times),
                    report.exported / export_s,
                    size_mb,
                    "redis" if label == "embedded" else "embedded",
                    got.imported / import_s,
                )
            )
            print(rows[-1], file=sys.stderr)
            if isinstance(target, RedisBackend):
                target.drop()
            target.close()
        redis.drop()
        redis.close()
        embedded.close()
    finally:
        if server is not None:
            server.stop()
    body = [
        f"Command: `python bench/bench_ops.py --tenants {args.tenants} --per-scope "
        f"{args.per_scope}` ({machine()}). {args.tenants} tenants x 2 models, "
        f"{args.per_scope} random 384-d entries per scope (each scope an HNSW graph); "
        f"`clear(tenant=...)` timed for {CLEARED} tenants in turn, then the rest exported "
        "(JSONL with vectors) and imported into the other backend.",
        "",
        "| backend | entries | one tenant | clear(tenant) median | max | export | file "
        "| import into | import |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for label, total, tenant, med, worst, exp, mb, into, imp in rows:
        body.append(
            f"| {label} | {total:,} | {tenant:,} | {med:.0f} ms | {worst:.0f} ms | "
            f"{exp:,.0f} entries/s | {mb:.0f} MB | {into} | {imp:,.0f} entries/s |"
        )
    text = "\n".join(body)
    print(text)
    if not args.no_write:
        write_section("Operating a store: clear by tenant, export, import", text)


if __name__ == "__main__":
    main()
