"""ANN recall on a realistic million: does HNSW hide hits the cache should serve?

The set (bench/_million_data.py, cached in bench/.cache/million/): MiniLM vectors of every
distinct sentence in ../shared/data, extended to 1,000,000 by a local Gaussian model fitted to
them. Sizes 10k and 100k are real vectors only; 1M is the real ones plus generated ones.
Queries: QQP partners of stored questions, plus generated near-duplicates of stored vectors.

A query counts at a threshold when its EXACT nearest stored vector is at or above it (a hit
the cache should serve); recall@1 = the backend's first result is that vector, or one exactly
as close. Each backend holds one scope with all n entries; a lookup is one ``search(k=4)``
with a precomputed vector (no embedding), timed through the backend (ANN + payload fetch).

- embedded: ``EmbeddedBackend`` (hnswlib graph + SQLite), reopened from disk after the build.
- semcache-redis: ``RedisBackend`` on a Redis Stack 7.4 server.
- redisvl: ``SemanticCache.check(vector=...)`` (FLAT, exact) at 10k and 100k, as in
  bench_redis.py.

Every ``ef_search`` of ``EFS`` is measured on the same graph (the sweep: the recall curve the
size-aware default was derived from, on the "derive" half of the queries), then the default
``HnswParams()`` once (reported on the held-out half and on all). The two 1M builds run in
processes of their own (they may outlive the run; a later run picks them up) while this one
builds and measures the smaller sizes; a size is measured once all its builds are there.

    python bench/bench_ann_million.py [--sizes 10000 100000 1000000] [--url redis://...]

Without ``--url`` a Redis Stack server is started (tests/redis_server.py) and stopped at the
end; with it, builds already there (count and a marker match) are reused. Writes the
"ANN recall on a realistic million" section of docs/BENCHMARKS.md and docs/ann_million_nn.png.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _million_data as md
from _report import ROOT, write_section

sys.path.insert(0, str(ROOT / "tests"))

from semcache import EmbeddedBackend, ModelFingerprint
from semcache.backends import vector_index as vi
from semcache.backends.vector_index import HnswIndex, HnswParams
from semcache.policy import DEFAULT_MIN_SIMILARITY

TITLE = "ANN recall on a realistic million"
SIZES = (10_000, 100_000, 1_000_000)
EFS = (16, 32, 64, 128, 256, 512)
THRESHOLDS = (0.90, DEFAULT_MIN_SIMILARITY)
K = 4
SCOPE = "bench-scope"
FINGERPRINT = ModelFingerprint(model="sentence-transformers/all-MiniLM-L6-v2", dim=384)
PLOT = ROOT / "docs" / "ann_million_nn.png"
REDISVL_UP_TO = 100_000


@dataclass
class Prepared:
    data: np.ndarray
    queries: md.Queries
    info: dict[str, Any]


# -- the set ----------------------------------------------------------------------------------


def prepare(sizes: tuple[int, ...], threads: int) -> Prepared:
    t0 = time.perf_counter()
    s = md.sentences()
    real, embed_meta = md.real_vectors(s.texts, threads)
    stored = md.stored_rows(s)
    real_stored = np.asarray(real[stored.rows])
    basis_path = md.CACHE / "kernel.npy"
    if not basis_path.exists():
        np.save(basis_path, md.kernel(real_stored))
    basis = np.load(basis_path)
    scale_path = md.CACHE / "scale.npy"
    if not scale_path.exists():
        np.save(scale_path, md.local_scale(real_stored, threads))
    scale = np.load(scale_path)
    model = md.fit_model(real_stored, basis, scale)
    total = max(sizes)
    data, parents = md.build_set(real, stored, basis, scale, model, total)
    qs = md.queries(real, data, stored, basis, sizes, s.texts)
    dist = distribution(real_stored, basis, scale, model, data, parents)
    counts: dict[str, int] = {}
    for src in s.sources:
        counts[src] = counts.get(src, 0) + 1
    info = {
        "sentences": len(s.texts),
        "by_source": counts,
        "qqp_dups": len(s.qqp_dups),
        "stored_real": len(stored.rows),
        "qqp_queries": int((qs.kind == "qqp").sum()),
        "qqp_available": len(stored.queries),
        "embed": embed_meta,
        "h": model.h,
        "fit": model.fit,
        "distribution": dist,
        "prepare_s": time.perf_counter() - t0,
    }
    return Prepared(data, qs, info)


def _quantiles(x: np.ndarray) -> list[float]:
    return [round(float(v), 4) for v in np.quantile(x, (0.05, 0.25, 0.5, 0.75, 0.95))]


def distribution(
    real: np.ndarray,
    basis: np.ndarray,
    scale: np.ndarray,
    model: md.Model,
    data: np.ndarray,
    parents: np.ndarray,
) -> dict[str, Any]:
    """Real vs generated: cosine to the nearest reference vector (held-out real rows vs fresh
    children), nearest-neighbour cosine inside the 1M set (real rows vs generated rows), and
    the cosine of random pairs. Exact; 3,000 points each. Also draws the plot."""
    path = md.CACHE / "distribution.json"
    if path.exists():
        return dict(json.loads(path.read_text()))
    rng = np.random.default_rng(md.SEED + 3)
    n = min(3000, len(real) // 3)  # smaller only in a --smoke run
    perm = rng.permutation(len(real))
    held, ref = perm[:n], np.sort(perm[n:])
    ref_vecs = real[ref]
    real_new = md.nn_cos(real[held], ref_vecs)
    z = rng.standard_normal((n, basis.shape[1])).astype(np.float32)
    gen_new = md.nn_cos(md.children(real, basis, scale, rng.choice(ref, n), model.h, z), ref_vecs)
    is_real = np.flatnonzero(parents < 0)
    is_gen = np.flatnonzero(parents >= 0)
    out: dict[str, Any] = {
        "new_vs_reference": {"real": _quantiles(real_new), "generated": _quantiles(gen_new)},
    }
    panels = [("cosine of a new vector to the nearest\nreference real vector", real_new, gen_new)]
    if len(is_gen) >= n:
        r_rows = np.sort(rng.choice(is_real, n, replace=False))
        g_rows = np.sort(rng.choice(is_gen, n, replace=False))
        both = np.concatenate([r_rows, g_rows])
        nn = md.nn_cos(np.asarray(data[both]), data, self_rows=both)
        out["in_set"] = {"real": _quantiles(nn[:n]), "generated": _quantiles(nn[n:])}
        panels.append((f"nearest-neighbour cosine inside the {len(data):,} set", nn[:n], nn[n:]))
        a, b = rng.choice(is_real, (2, 20_000)), rng.choice(is_gen, (2, 20_000))
        out["random_pairs"] = {
            "real": _quantiles(np.einsum("ij,ij->i", data[a[0]], data[a[1]])),
            "generated": _quantiles(np.einsum("ij,ij->i", data[b[0]], data[b[1]])),
        }
    plot(panels, md.CACHE / PLOT.name if md.SMOKE else PLOT)
    path.write_text(json.dumps(out, indent=1))
    return out


def plot(panels: list[tuple[str, np.ndarray, np.ndarray]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 3.8))
    axes = np.atleast_1d(axes)
    bins = np.linspace(0.2, 1.0, 81)
    for ax, (title, r, g) in zip(axes, panels, strict=True):
        ax.hist(r, bins=bins, alpha=0.55, density=True, label="real MiniLM")
        ax.hist(g, bins=bins, alpha=0.55, density=True, label="generated")
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("cosine similarity")
        ax.legend(fontsize=8)
    axes[0].set_ylabel("density (3,000 points each)")
    fig.tight_layout()
    path.parent.mkdir(exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


# -- builds -----------------------------------------------------------------------------------


def rss_anon() -> int:
    """Anonymous resident bytes of this process (the memory-mapped set is not counted)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) * 1024
    return 0


def new_entries(start: int, stop: int) -> list[Any]:
    from semcache.models import NewEntry

    return [
        NewEntry(
            scope_key=SCOPE, text_key=f"t{i}", prompt=f"p{i}", response={"i": i}, created_at=1.0
        )
        for i in range(start, stop)
    ]


def embedded_dir(n: int) -> Path:
    return md.CACHE / f"embedded_{n}"


def build_embedded(data: np.ndarray, n: int) -> dict[str, Any]:
    from tqdm import tqdm

    path = embedded_dir(n)
    shutil.rmtree(path, ignore_errors=True)
    mem0 = rss_anon()
    t = time.perf_counter()
    backend = EmbeddedBackend(path, autosave_seconds=1e9)
    backend.bind(FINGERPRINT)
    for s in tqdm(range(0, n, 10_000), desc=f"embedded build {n}", unit="10k", file=sys.stderr):
        e = min(n, s + 10_000)
        backend.put_many(new_entries(s, e), list(np.asarray(data[s:e])))
    backend.flush()
    load_s = time.perf_counter() - t
    mem = rss_anon() - mem0
    backend.close()
    disk = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    return {"load_s": load_s, "disk_per_entry": disk / n, "build_rss_per_entry": mem / n}


def redis_name(n: int) -> str:
    return f"annm{n}"


def redis_backend(url: str, n: int, hnsw: HnswParams | None = None, timeout: float = 5.0) -> Any:
    """The size's cache; slow calls do not open the circuit (a shared machine stalls at times)."""
    from semcache.backends.breaker import BreakerParams
    from semcache.backends.redis import RedisBackend, RedisConnection

    return RedisBackend(
        url,
        name=redis_name(n),
        hnsw=hnsw,
        connection=RedisConnection(socket_timeout=timeout),
        breaker=BreakerParams(slow_call_seconds=None),
    )


def build_redis(url: str, data: np.ndarray, n: int) -> dict[str, Any]:
    from tqdm import tqdm

    backend = redis_backend(url, n, timeout=60.0)
    backend.bind(FINGERPRINT)
    backend.clear()
    client = backend.client
    mem0 = int(client.info("memory")["used_memory"])
    t = time.perf_counter()
    for s in tqdm(range(0, n, 1000), desc=f"semcache-redis build {n}", unit="k", file=sys.stderr):
        e = min(n, s + 1000)
        backend.put_many(new_entries(s, e), list(np.asarray(data[s:e])))
    load_s = time.perf_counter() - t
    mem = (int(client.info("memory")["used_memory"]) - mem0) / n
    backend.close()
    return {"load_s": load_s, "redis_mem_per_entry": mem}


def build_path(kind: str, n: int) -> Path:
    return md.CACHE / f"build_{kind}_{n}.json"


def built(kind: str, n: int, url: str) -> bool:
    """A finished build of this kind and size is there (its record, and the data in place)."""
    if not build_path(kind, n).exists():
        return False
    if kind == "embedded":
        return (embedded_dir(n) / "hnsw").is_dir()
    import redis

    client = redis.Redis.from_url(url)
    try:
        marker = client.get(f"bench:{redis_name(n)}:built")
        return marker is not None and marker.decode() == str(n)
    finally:
        client.close()


def build(kind: str, n: int, url: str, data: np.ndarray) -> None:
    load1 = os.getloadavg()[0]
    pid_file(kind, n).write_text(str(os.getpid()))
    rec = build_embedded(data, n) if kind == "embedded" else build_redis(url, data, n)
    rec["load_avg_start"] = load1
    build_path(kind, n).write_text(json.dumps(rec, indent=1))
    if kind == "redis":
        import redis

        client = redis.Redis.from_url(url)
        client.set(f"bench:{redis_name(n)}:built", str(n))
        client.close()


# -- measurement -------------------------------------------------------------------------------


@dataclass
class Run:
    rows: np.ndarray  # the first result's row (-1: none)
    ms: np.ndarray


SWEEP_QUERIES = 3000  # per ef: a fixed sample of the counted queries (the default: all of them)


def sweep_sample(sel: np.ndarray) -> np.ndarray:
    pick = np.random.default_rng(md.SEED + 4).permutation(len(sel))[:SWEEP_QUERIES]
    return np.sort(sel[pick])


def run(search: Callable[[np.ndarray], int], vectors: np.ndarray) -> Run:
    for q in vectors[:20]:
        search(q)  # warm up
    rows, ms = np.empty(len(vectors), dtype=np.int64), np.empty(len(vectors))
    for i, q in enumerate(vectors):
        t = time.perf_counter()
        rows[i] = search(q)
        ms[i] = (time.perf_counter() - t) * 1000
    return Run(rows, ms)


def found(r: Run, data: np.ndarray, vectors: np.ndarray, best: np.ndarray) -> np.ndarray:
    """The first result is the exact nearest vector or one exactly as close."""
    ok = r.rows >= 0
    sims = np.full(len(r.rows), -2.0, dtype=np.float32)
    idx = np.flatnonzero(ok)
    order = np.argsort(r.rows[idx])
    rows = r.rows[idx][order]
    sims[idx[order]] = np.einsum("ij,ij->i", np.asarray(data[rows]), vectors[idx[order]])
    return np.asarray(sims >= best - 1e-5)


def score(r: Run, p: Prepared, n: int, sel: np.ndarray) -> dict[str, Any]:
    q = p.queries
    ok = found(r, p.data, q.vectors[sel], q.best[n][sel])
    out: dict[str, Any] = {
        "p50": float(np.percentile(r.ms, 50)),
        "p95": float(np.percentile(r.ms, 95)),
    }
    best = q.best[n][sel]
    derive = q.derive[sel]
    for th in THRESHOLDS:
        for name, part in (("all", np.ones(len(sel), bool)), ("derive", derive), ("held", ~derive)):
            m = part & (best >= th)
            out[f"{name}@{th:.2f}"] = [int(ok[m].sum()), int(m.sum())]
    return out


def text_row(found_: list[Any]) -> int:
    return int(found_[0].entry.text_key[1:]) if found_ else -1


def measure_embedded(p: Prepared, n: int, sel: np.ndarray, sweep: bool) -> dict[str, Any]:
    vecs = p.queries.vectors[sel]
    mem0 = rss_anon()
    t = time.perf_counter()
    backend = EmbeddedBackend(embedded_dir(n), autosave_seconds=1e9, hnsw=HnswParams())
    backend.bind(FINGERPRINT)
    backend.search(SCOPE, vecs[0], K, now=2.0)  # loads the graph
    open_s = time.perf_counter() - t
    out: dict[str, Any] = {"open_s": open_s, "rss_per_entry": (rss_anon() - mem0) / n}

    def search(q: np.ndarray) -> int:
        return text_row(backend.search(SCOPE, q, K, now=2.0))

    graph = backend._indexes()._scopes[SCOPE].index  # bench only: the sweep sets ef in place
    if not isinstance(graph, HnswIndex):  # a scope this small is searched exactly
        return out | {"default_ef": "exact", "default": score(run(search, vecs), p, n, sel)}
    default_params = graph._params
    out["default_ef"] = default_params.ef_for(len(graph))
    out["default"] = score(run(search, vecs), p, n, sel)
    if sweep:
        out["sweep"] = {}
        ss = sweep_sample(sel)
        for ef in EFS:
            graph._params = HnswParams(ef_search=ef)
            out["sweep"][ef] = score(run(search, p.queries.vectors[ss]), p, n, ss)
            print(f"embedded {n} ef {ef}: {out['sweep'][ef]}", file=sys.stderr, flush=True)
        graph._params = default_params
    backend.close()
    return out


def measure_redis(url: str, p: Prepared, n: int, sel: np.ndarray, sweep: bool) -> dict[str, Any]:
    vecs = p.queries.vectors[sel]

    def searcher(params: HnswParams | None) -> tuple[Any, Callable[[np.ndarray], int]]:
        backend = redis_backend(url, n, params)
        backend.bind(FINGERPRINT)
        return backend, lambda q: text_row(backend.search(SCOPE, q, K, now=2.0))

    out: dict[str, Any] = {}
    backend, search = searcher(None)
    out["default_ef"] = backend.hnsw.ef_for(n)
    out["plan"] = backend.plan(SCOPE, K)
    out["default"] = score(run(search, vecs), p, n, sel)
    backend.close()
    if sweep:
        out["sweep"] = {}
        ss = sweep_sample(sel)
        for ef in EFS:
            backend, search = searcher(HnswParams(ef_search=ef))
            out["sweep"][ef] = score(run(search, p.queries.vectors[ss]), p, n, ss)
            backend.close()
            print(f"redis {n} ef {ef}: {out['sweep'][ef]}", file=sys.stderr, flush=True)
    return out


def measure_redisvl(url: str, p: Prepared, n: int, sel: np.ndarray) -> dict[str, Any]:
    import bench_redis

    lookup, info = bench_redis.redisvl_cache(url, p.data[:n])
    r = run(lambda q: -1 if (row := lookup(q)) is None else row, p.queries.vectors[sel])
    info["drop"]()
    return {"load_s": info["load_s"], "redis_mem_per_entry": info["mem"]} | {
        "default": score(r, p, n, sel)
    }


# -- the report ---------------------------------------------------------------------------------


def recall(cell: list[int]) -> str:
    found_, count = cell
    return f"{found_ / count:.4f} ({count:,})" if count else "-"


def smallest_ef(r: dict[str, Any], half: str, target: float = 0.99) -> str:
    """The smallest swept ef whose recall@1 on ``half`` reaches ``target`` at every threshold."""
    for ef, m in sorted(r.get("sweep", {}).items(), key=lambda kv: int(kv[0])):
        cells = [m[f"{half}@{th:.2f}"] for th in THRESHOLDS]
        if all(c[1] == 0 or c[0] / c[1] >= target for c in cells):
            return str(ef)
    return f"> {max(EFS)}"


def verdict(results: dict[str, Any], args: argparse.Namespace) -> list[str]:
    """The rule, what the sweep says it needs, and whether the default meets the target."""
    lines = [
        "**The rule** (`HnswParams.ef_search=None`, the new default; "
        "`semcache.backends.vector_index.size_aware_ef`): ef = "
        f"{vi.EF_FLOOR} up to {vi.EF_FROM:,} vectors in the graph, then "
        f"ceil({vi.EF_FLOOR} * (size / {vi.EF_FROM:,}) ^ {vi.EF_GROWTH}), at most {vi.EF_CAP} "
        "(embedded: the scope's graph; Redis: the whole index, which every scope shares). "
        "Smallest swept ef with recall@1 >= 0.99 at both thresholds, derive half / held-out half:",
        "",
        "| entries | backend | derive half | held out | rule's ef |",
        "|---:|---|---:|---:|---:|",
    ]
    for n in args.sizes:
        for kind in ("embedded", "semcache-redis"):
            r = results.get(f"{kind}:{n}")
            if r is not None and "sweep" in r:
                lines.append(
                    f"| {n:,} | {kind} | {smallest_ef(r, 'derive')} | {smallest_ef(r, 'held')} "
                    f"| {vi.size_aware_ef(n)} |"
                )
    short = []
    for key, r in results.items():
        if not isinstance(r, dict) or key.startswith("redisvl"):
            continue
        for th in THRESHOLDS:
            found_, count = r["default"][f"held@{th:.2f}"]
            if count and found_ / count < 0.99:
                short.append(f"{key} at {th:.2f}: {found_ / count:.4f}")
    big = max(args.sizes)
    p50 = {
        k: results[f"{k}:{big}"]["default"]["p50"]
        for k in ("embedded", "semcache-redis")
        if f"{k}:{big}" in results
    }
    lines += [
        "",
        "**Verdict.** Default settings, held-out half: "
        + (
            "recall@1 >= 0.99 at both thresholds for every size and backend measured."
            if not short
            else f"short of 0.99: {'; '.join(short)}."
        )
        + " p50 at "
        + f"{big:,}: "
        + ", ".join(f"{k} {v:.2f} ms" for k, v in p50.items())
        + " (targets: embedded <= 2 ms, Redis <= 3 ms).",
    ]
    return lines


def walls() -> list[float]:
    path = md.CACHE / "wall.json"
    return list(json.loads(path.read_text())) if path.exists() else []


def wall_minutes(results: dict[str, Any]) -> float:
    return (sum(walls()) + results.get("wall_s", 0.0)) / 60


def render(p: Prepared, results: dict[str, Any], args: argparse.Namespace) -> str:
    info = p.info
    src = ", ".join(f"{k} {v:,}" for k, v in sorted(info["by_source"].items(), key=lambda x: -x[1]))
    emb = info["embed"]
    d = info["distribution"]
    t1, t2 = (f"{t:.2f}" for t in THRESHOLDS)
    lines = [
        f"Command: `python bench/bench_ann_million.py --sizes {' '.join(map(str, args.sizes))}` "
        f"(wall time {wall_minutes(results):.0f} min on this machine's 2 shared cores, over "
        f"{len(walls())} invocation(s): the run resumes from what bench/.cache/million/ holds "
        "- the sentences, their vectors, the set, the queries and the builds).",
        "",
        "**The set.** Every distinct sentence of ../shared/data (lower-cased, whitespace "
        f"collapsed): {info['sentences']:,} ({src}); SciFact abstracts and MS MARCO passages "
        "split into sentences by a regex, fragments under 4 words dropped. Embedded with the "
        f"packaged all-MiniLM-L6-v2 (`OnnxEmbedder`, untuned, {emb['threads']} threads, batch "
        f"{emb['batch']}): {emb['seconds']:.0f} s ({emb['count'] / emb['seconds']:.0f} "
        f"sentences/s). Stored: {info['stored_real']:,} real vectors (all but the query side "
        "of each QQP duplicate pair), shuffled; 10k and 100k are real vectors only. 1M adds "
        f"{max(args.sizes) - info['stored_real']:,} generated vectors: each is a stored real "
        "vector p (drawn uniformly) plus Gaussian noise shaped like the data, "
        "`normalize(p + h * s_p * L z)`, z ~ N(0, I), `L L^T` = the covariance of the stored "
        "real vectors, s_p = p's distance to its nearest real neighbour over the median such "
        "distance: an adaptive Gaussian kernel density estimate, i.e. a mixture with one "
        "component per real vector, each with the data's covariance scaled by (h s_p)^2, so "
        "dense regions (near-duplicate questions) stay dense. The one parameter "
        f"h = {info['h']:.3f} was fitted by bisection so that generated "
        "vectors lie as far from the real set as new real sentences do: median cosine to the "
        f"nearest reference vector {info['fit']['target_median']:.4f} for 2,000 held-out real "
        "vectors.",
        "",
        f"![nearest-neighbour cosines, real vs generated]({PLOT.name})",
        "",
        "Quantiles (5%, 25%, 50%, 75%, 95%) of 3,000 exact values each:",
        "",
        "| measure | real | generated |",
        "|---|---|---|",
    ]
    labels = {
        "new_vs_reference": "new vector to the nearest reference real vector (fresh sample)",
        "in_set": "nearest neighbour inside the 1M set",
        "random_pairs": "random pairs (20,000)",
    }
    for key, label in labels.items():
        if key in d:
            lines.append(
                f"| {label} | {', '.join(f'{x:.3f}' for x in d[key]['real'])} "
                f"| {', '.join(f'{x:.3f}' for x in d[key]['generated'])} |"
            )
    lines += [
        "",
        f"**Queries.** {info['qqp_queries']:,} QQP duplicates' second sides (of "
        f"{info['qqp_available']:,} whose first side is stored), plus per size "
        f"{md.NEAR_QUERIES:,} generated near-duplicates of random stored vectors (cosine uniform "
        f"in {md.NEAR_COS[0]}..{md.NEAR_COS[1]}, moved along a direction drawn from the data's "
        "covariance). A query "
        "counts at a threshold when its exact nearest stored vector is at or above it (n in "
        "brackets); recall@1 = the first result of `search(k=4)` is that vector or one exactly "
        f"as close. {t1} and the default threshold {t2} (`CachePolicy().min_similarity`). "
        "Queries are split in two fixed halves (by a hash of the stored partner): the rule "
        "was derived on one, recall on the other is reported as held out.",
        "",
        "**Default settings** (`HnswParams()`, ef_search from the graph size): one lookup = "
        "one `search` with a precomputed vector, through the backend (ANN + payload).",
        "",
        f"| entries | backend | ef | recall@1 >= {t1} held out | recall@1 >= {t2} held out "
        f"| recall@1 >= {t1} all | recall@1 >= {t2} all | p50 ms | p95 ms | build s "
        "| memory/entry |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for n in args.sizes:
        for kind in ("embedded", "semcache-redis", "redisvl"):
            r = results.get(f"{kind}:{n}")
            if r is None:
                continue
            m = r["default"]
            if kind == "embedded":
                mem = f"{r['rss_per_entry']:.0f} B resident, {r['disk_per_entry']:.0f} B on disk"
            else:
                mem = f"{r['redis_mem_per_entry']:.0f} B Redis"
            ef = r.get("default_ef", "exact")
            lines.append(
                f"| {n:,} | {kind} | {ef} | {recall(m[f'held@{t1}'])} | {recall(m[f'held@{t2}'])} "
                f"| {recall(m[f'all@{t1}'])} | {recall(m[f'all@{t2}'])} | {m['p50']:.2f} "
                f"| {m['p95']:.2f} | {r['load_s']:.0f} | {mem} |"
            )
    lines += [
        "",
        "**The sweep** (same graphs, `HnswParams(ef_search=ef)`; a fixed sample of at most "
        f"{SWEEP_QUERIES:,} counted queries; recall@1 on its derive half):",
        "",
        f"| entries | backend | ef | recall@1 >= {t1} | recall@1 >= {t2} | p50 ms | p95 ms |",
        "|---:|---|---:|---:|---:|---:|---:|",
    ]
    for n in args.sizes:
        for kind in ("embedded", "semcache-redis"):
            r = results.get(f"{kind}:{n}")
            if r is None or "sweep" not in r:
                continue
            for ef, m in r["sweep"].items():
                lines.append(
                    f"| {n:,} | {kind} | {ef} | {recall(m[f'derive@{t1}'])} "
                    f"| {recall(m[f'derive@{t2}'])} | {m['p50']:.2f} | {m['p95']:.2f} |"
                )
    lines += ["", *verdict(results, args)]
    if args.note:
        lines += ["", f"**Run note.** {args.note}"]
    missing = [
        f"{kind} {n:,}"
        for n in args.sizes
        for kind in ("embedded", "semcache-redis")
        if f"{kind}:{n}" not in results
    ]
    if missing:
        lines += ["", f"Not measured in this run: {', '.join(missing)}."]
    lines += [
        "",
        "Build: `put_many` in batches (embedded 10,000, Redis 1,000) into an empty backend. "
        f"The two {max(args.sizes):,} builds ran in processes of their own, at the same time, "
        "while the first built and measured the smaller sizes, so build times are slower than "
        "alone (and the machine's 2 cores were shared with other jobs). Memory: "
        "embedded = anonymous resident memory of the reopened backend after its first search "
        "(graph + vectors), and bytes on disk (SQLite + graph snapshot); Redis = growth of "
        "`used_memory` per entry while loading. Latencies: one Python client thread, after 20 "
        "warm-up lookups; p95 carries the scheduling noise of a shared machine.",
    ]
    return "\n".join(lines)


# -- driver -------------------------------------------------------------------------------------


def results_path(kind: str, n: int) -> Path:
    return md.CACHE / f"sweep_{kind}_{n}.json"


def pid_file(kind: str, n: int) -> Path:
    return md.CACHE / f"building_{kind}_{n}.pid"


def building(kind: str, n: int) -> bool:
    """A build of this kind and size is under way in another process (its pid is alive)."""
    path = pid_file(kind, n)
    if not path.exists():
        return False
    try:
        os.kill(int(path.read_text()), 0)
    except (ProcessLookupError, ValueError):
        return False
    return True


def start_big(args: argparse.Namespace, url: str) -> list[subprocess.Popen[bytes]]:
    """Start both builds of the largest size in processes of their own (they may outlive this
    run), unless built or under way; this run builds and measures the smaller sizes meanwhile."""
    big = max(args.sizes)
    procs: list[subprocess.Popen[bytes]] = []
    for kind in ("redis", "embedded"):
        if built(kind, big, url) or building(kind, big):
            continue
        cmd = [sys.executable, __file__, "--url", url, "--sizes", str(big), "--build", kind]
        cmd += ["--smoke", str(args.smoke)] if args.smoke else []
        procs.append(subprocess.Popen(cmd, start_new_session=True))
    return procs


def wait_big(procs: list[subprocess.Popen[bytes]], n: int) -> None:
    """Wait for the largest builds: this run's, or another run's still under way."""
    for proc in procs:
        if proc.wait() != 0:
            raise SystemExit(f"a build of {n} failed: {proc.args}")
    while building("embedded", n) or building("redis", n):
        time.sleep(10)


def measure_size(
    args: argparse.Namespace, url: str, p: Prepared, n: int, results: dict[str, Any]
) -> None:
    """Measure what is built of this size (the largest Redis build may still be under way)."""
    sel = p.queries.at(n, min(THRESHOLDS))
    for kind, key in (("embedded", "embedded"), ("redis", "semcache-redis")):
        if args.only and kind != args.only:
            continue
        if not built(kind, n, url):
            print(f"{key} {n}: not built yet, not measured", file=sys.stderr, flush=True)
            continue
        cached = results_path(kind, n)
        sweep = not cached.exists()
        if kind == "embedded":
            r = measure_embedded(p, n, sel, sweep)
        else:
            r = measure_redis(url, p, n, sel, sweep)
        if sweep and "sweep" in r:
            cached.write_text(json.dumps(r["sweep"], indent=1))
        elif cached.exists():
            r["sweep"] = json.loads(cached.read_text())
        results[f"{key}:{n}"] = r | json.loads(build_path(kind, n).read_text())
        print(f"{key} {n}: {results[f'{key}:{n}']['default']}", file=sys.stderr, flush=True)
    if n <= REDISVL_UP_TO and not args.only:
        results[f"redisvl:{n}"] = measure_redisvl(url, p, n, sel)
        print(f"redisvl {n}: {results[f'redisvl:{n}']['default']}", file=sys.stderr, flush=True)
    path = md.CACHE / f"measured_{n}.json"
    path.write_text(json.dumps({k: v for k, v in results.items() if k.endswith(f":{n}")}))


def measured(n: int) -> dict[str, Any]:
    """What an earlier run measured at this size (a run given ``--measure`` without it)."""
    path = md.CACHE / f"measured_{n}.json"
    return dict(json.loads(path.read_text())) if path.exists() else {}


def log_wall(seconds: float) -> None:
    """Add this invocation's wall time to the record (a run may be resumed)."""
    path = md.CACHE / "wall.json"
    runs = json.loads(path.read_text()) if path.exists() else []
    path.write_text(json.dumps([*runs, round(seconds, 1)]))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    ap.add_argument("--url", help="an existing Redis Stack server (default: start one)")
    ap.add_argument("--threads", type=int, default=2, help="embedding and model-fitting threads")
    ap.add_argument("--build", choices=["embedded", "redis"], help=argparse.SUPPRESS)
    ap.add_argument("--smoke", type=int, help="a quick check on this many sentences (own cache)")
    ap.add_argument("--no-write", action="store_true", help="print the section, docs/ untouched")
    ap.add_argument("--note", help="a remark on this run, printed in the section")
    ap.add_argument("--only", choices=["embedded", "redis"], help="measure one backend only")
    ap.add_argument(
        "--measure",
        type=int,
        nargs="*",
        help="measure only these sizes (the others: as an earlier run measured them)",
    )
    args = ap.parse_args(argv)
    args.sizes = sorted(args.sizes)
    wall0 = time.perf_counter()
    if args.smoke:
        md.CACHE = md.CACHE / f"smoke{args.smoke}"
        md.SMOKE = args.smoke
    if args.build:  # the background build of the largest size
        n = args.sizes[0]
        sets = sorted(md.CACHE.glob("set_*.npy"), key=lambda f: int(f.stem[4:]))
        data = np.load(sets[-1], mmap_mode="r")  # the full set; its first n rows
        build(args.build, n, args.url, data)
        return
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so the server is stopped
    p = prepare(tuple(args.sizes), args.threads)
    print(json.dumps({k: v for k, v in p.info.items() if k != "fit"}, indent=1), file=sys.stderr)
    server = None
    url = args.url
    if url is None:
        from redis_server import RedisStackServer

        server = RedisStackServer(Path(tempfile.mkdtemp(prefix="semcache-annm-")))
        server.start()
        url = server.url
    results: dict[str, Any] = {}
    try:
        procs = start_big(args, url)
        for n in args.sizes:
            if n == max(args.sizes):
                wait_big(procs, n)
            for kind in ("embedded", "redis"):
                if (args.only and kind != args.only) or n == max(args.sizes):
                    continue
                if not built(kind, n, url) and not building(kind, n):
                    build(kind, n, url, p.data)
            if args.measure is None or n in args.measure:
                measure_size(args, url, p, n, results)
            else:
                results.update(measured(n))
            results["wall_s"] = time.perf_counter() - wall0
            (md.CACHE / "results.json").write_text(json.dumps(results, indent=1, default=str))
            if args.no_write:
                print(render(p, results, args))
            else:
                write_section(TITLE, render(p, results, args))
    finally:
        if server is not None:
            server.stop()
        log_wall(time.perf_counter() - wall0)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"wall {time.perf_counter() - wall0:.0f} s, peak RSS {peak:.0f} MB", file=sys.stderr)


if __name__ == "__main__":
    main()
