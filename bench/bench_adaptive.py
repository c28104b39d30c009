"""Adaptive thresholds: the cost of one decision with 10k observations, before and after counts.

What is measured: one *decision* = ``for_query(query, vector)`` and its threshold for one
candidate, then ``served(...)`` and ``feedback(...)`` (a verdict on every decision, the worst
case: each one changes the counts, so the next decision re-solves). Regions: 8 centroids of
384-d random unit vectors; the model first learns from ``--observations`` labelled pairs
(a logistic truth around a per-region boundary), then ``--decisions`` decisions are timed.

- *before*: the code at ``--baseline`` (default ``main``), extracted with ``git archive`` and run
  in a subprocess: observations in lists, a full re-solve (sort) after every verdict;
- *after*: counts per (region, 0.001 bin), in memory, and shared through SQLite
  (``SqliteLearnedState``) and Redis (``RedisLearnedState``; a Redis Stack server is started
  unless ``--url`` is given). With a shared state the decision itself does no I/O: a worker
  thread writes the verdicts and re-reads the store, so its cost is reported separately (one
  ``refresh()``: write the pending verdicts and read every count, after 20 new verdicts).

Run: ``python bench/bench_adaptive.py`` (``--observations 10000 --decisions 3000``). Results go
to the "## Adaptive thresholds: decision latency" section of docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
CODE = os.environ.get("BENCH_ADAPTIVE_CODE")  # set for the baseline's subprocess
sys.path.insert(0, CODE or str(ROOT))
sys.path.insert(1, str(ROOT / "bench"))
sys.path.insert(2, str(ROOT / "tests"))

from semcache.matching.adaptive import AdaptiveConfig, AdaptiveThresholds  # noqa: E402
from semcache.models import Candidate, Entry  # noqa: E402

TITLE = "Adaptive thresholds: decision latency"
DIM, REGIONS = 384, 8


def _unit(rng: np.random.Generator, n: int) -> np.ndarray:
    x = rng.standard_normal((n, DIM)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _labelled(rng: np.random.Generator, centroids: np.ndarray, n: int) -> tuple[Any, Any, Any]:
    vectors = centroids[rng.integers(0, REGIONS, n)] + 0.05 * _unit(rng, n)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    region = np.argmax(vectors @ centroids.T, axis=1)
    boundary = np.linspace(0.80, 0.94, REGIONS)[region]
    sims = rng.uniform(0.6, 1.0, n)
    ok = rng.random(n) < 1.0 / (1.0 + np.exp(-(sims - boundary) / 0.01))
    return vectors.astype(np.float32), sims, ok


def measure(state: Any, observations: int, decisions: int) -> dict[str, Any]:
    """Decision latencies (ms) of a model with ``observations``, and the refresh cost if shared."""
    rng = np.random.default_rng(0)
    centroids = _unit(rng, REGIONS)
    config = AdaptiveConfig(delta=0.02, initial_threshold=0.97)
    kwargs = {} if state is None else {"state": state}
    model = AdaptiveThresholds(config, centroids=centroids, **kwargs)
    model.fit(*_labelled(rng, centroids, observations))
    vectors, sims, ok = _labelled(rng, centroids, decisions)
    entries = [
        Entry(id=f"e{i}", scope_key="s", text_key=f"t{i}", prompt="p", response=1, created_at=0)
        for i in range(decisions)
    ]
    samples, cpu = [], []
    for i in range(decisions):
        began, began_cpu = time.perf_counter(), time.thread_time()
        model.for_query("q", vectors[i])(Candidate(entries[i], float(sims[i])))
        model.served(entries[i].id, vectors[i], float(sims[i]))
        model.feedback(entries[i].id, bool(ok[i]))
        cpu.append((time.thread_time() - began_cpu) * 1000)
        samples.append((time.perf_counter() - began) * 1000)
    out: dict[str, Any] = {"samples": samples, "cpu": cpu, "thresholds": model.thresholds()}
    if state is not None:
        refreshes = []
        for j in range(30):
            for i in range(20):
                n = (j * 20 + i) % decisions
                model.served(f"r{n}", vectors[n], float(sims[n]))
                model.feedback(f"r{n}", bool(ok[n]))
            began = time.perf_counter()
            model.refresh()
            refreshes.append((time.perf_counter() - began) * 1000)
        out["refresh"] = refreshes
        out["errors"] = model.state_errors
        model.close()
    return out


def _baseline(ref: str, observations: int, decisions: int) -> dict[str, Any]:
    """:func:`measure` on the code at git ``ref``, in a subprocess."""
    with tempfile.TemporaryDirectory() as tmp:
        archive = Path(tmp) / "code.tar"
        subprocess.run(
            ["git", "-C", str(ROOT), "archive", "-o", str(archive), ref, "semcache"], check=True
        )
        with tarfile.open(archive) as tar:
            tar.extractall(tmp, filter="data")
        env = {**os.environ, "BENCH_ADAPTIVE_CODE": tmp}
        done = subprocess.run(
            [sys.executable, __file__, "--child", str(observations), str(decisions)],
            env=env,
            check=True,
            capture_output=True,
            text=True,
        )
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def _row(name: str, *series: list[float]) -> str:
    from _report import percentiles

    cells = []
    for samples in series:
        p = percentiles(samples)
        cells += [f"{p['p50']:.3f}", f"{p['p95']:.3f}"]
    return f"| {name} | {' | '.join(cells)} |"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--observations", type=int, default=10_000)
    ap.add_argument("--decisions", type=int, default=3_000)
    ap.add_argument("--baseline", default="main", help="git ref of the 'before' code")
    ap.add_argument("--url", help="a Redis Stack server (else one is started)")
    ap.add_argument("--child", nargs=2, type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        result = measure(None, *args.child)
        print(json.dumps({"samples": result["samples"], "cpu": result["cpu"]}))
        return

    import redis
    from _report import write_section
    from redis_server import RedisStackServer

    from semcache.matching.learned_redis import RedisLearnedState
    from semcache.matching.learned_state import SqliteLearnedState

    n, d = args.observations, args.decisions
    results: dict[str, dict[str, Any]] = {}
    print("before ...", flush=True)
    results[f"before ({args.baseline}), in memory"] = _baseline(args.baseline, n, d)
    print("after, memory ...", flush=True)
    results["after, in memory"] = measure(None, n, d)
    with tempfile.TemporaryDirectory() as tmp:
        print("after, SQLite ...", flush=True)
        results["after, SQLite state"] = measure(SqliteLearnedState(Path(tmp) / "l.sqlite3"), n, d)
        server = None
        url = args.url
        if url is None:
            server = RedisStackServer(Path(tmp) / "redis")
            server.start()
            url = server.url
        try:
            print("after, Redis ...", flush=True)
            client = redis.Redis.from_url(url)
            prefix = f"bench:learned:{time.time_ns()}"
            results["after, Redis state"] = measure(RedisLearnedState(client, prefix), n, d)
            client.close()
        finally:
            if server is not None:
                server.stop()

    lines = [
        f"One decision = `for_query` + the candidate's threshold + `served` + `feedback`, with a "
        f"verdict on every decision (each one changes the counts, so every decision re-solves), "
        f"after {n:,} labelled observations in {REGIONS} regions (384-d); {d:,} decisions timed. "
        "Milliseconds: wall clock, and the CPU time of the deciding thread (`time.thread_time`), "
        f"which leaves out preemption by other processes (load average {os.getloadavg()[0]:.1f} "
        f"on {os.cpu_count()} cores during this run).",
        "",
        "| code / state | wall p50 | wall p95 | CPU p50 | CPU p95 |",
        "|---|---|---|---|---|",
    ]
    lines += [_row(name, r["samples"], r["cpu"]) for name, r in results.items()]
    lines += [
        "",
        "With a shared state the decision does no I/O: a worker thread writes the verdicts and "
        "re-reads the counts (every `refresh_every`, 1 s by default). The cost of one such "
        "round (`refresh()`: write 20 pending verdicts, read every count), which bounds how "
        "stale another replica's verdicts can be beyond `refresh_every`:",
        "",
        "| state | p50 | p95 | errors |",
        "|---|---|---|---|",
    ]
    for name, r in results.items():
        if "refresh" in r:
            lines.append(_row(name.replace("after, ", ""), r["refresh"]) + f" {r['errors']} |")
    lines += [
        "",
        "Before: observations in per-region lists, every threshold re-solved by sorting all of "
        "them after each verdict. After: counts per (region, similarity bin of 0.001), solved "
        "from cumulative counts in O(regions x bins) (`semcache/matching/binned.py`).",
        "",
        f"Command: `python bench/bench_adaptive.py --observations {n} --decisions {d}`",
    ]
    body = "\n".join(lines)
    print(body)
    write_section(TITLE, body)


if __name__ == "__main__":
    main()
