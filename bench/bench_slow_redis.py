"""A slow (not dead) Redis: throughput and latency of a decorated function, before and after the
slow-call breaker and the lookup budget.

    python bench/bench_slow_redis.py [--threads 8] [--seconds 20] [--url redis://...]

A function wrapped by ``@cached`` over a ``RedisBackend`` (hashing embedder, so embedding costs
nothing; the upstream answers at once, so the figures are the cache's own cost) is called by
``--threads`` threads for ``--seconds`` per phase, over 64 prompts stored beforehand (healthy
calls are exact hits):

1. *healthy*: default settings (``CachePolicy.lookup_budget`` and
   ``BreakerParams.slow_call_seconds`` at their defaults);
2. *slow, errors-only breaker, no budget*: the settings before issue #14, with Redis slowed by
   another connection issuing ``CLIENT PAUSE 300 ALL`` every 0.31 s (busy ~97% of the time;
   every command waits for the pause to end, then succeeds);
3. *slow, defaults*: the same slowness with the default settings.

Reported per phase: calls/s, p50/p99/max latency per call, circuit openings (closed -> open),
cache failures counted (``info().errors``, each one a call that went upstream) and errors
surfaced to callers (must be 0). Without ``--url`` a private Redis Stack server is started
(tests/redis_server.py); with ``--url`` that server is paused, so never point it at a shared one.
Results go to the "Slow Redis" section of docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np
from _report import ROOT, write_section

from semcache import CachePolicy, SemanticCache, cached
from semcache.backends.breaker import DEFAULT_SLOW_CALL_SECONDS, BreakerParams
from semcache.backends.redis import RedisBackend
from semcache.policy import DEFAULT_LOOKUP_BUDGET
from semcache.testing import HashingEmbedder

SECTION = "Slow Redis"
PROMPTS = [f"question number {i} about the weather in city {i % 7}" for i in range(64)]
PAUSE_MS = 300
PAUSE_EVERY = 0.31


@dataclass
class Phase:
    name: str
    calls: int
    seconds: float
    latencies_ms: list[float]
    openings: int
    failures: int
    surfaced: int

    def row(self) -> str:
        lat = np.asarray(self.latencies_ms)
        p50, p99 = np.percentile(lat, [50, 99]) if len(lat) else (float("nan"),) * 2
        return (
            f"| {self.name} | {self.calls / self.seconds:,.0f} | {p50:.2f} | {p99:.2f} | "
            f"{lat.max() if len(lat) else float('nan'):.0f} | {self.openings} | "
            f"{self.failures:,} | {self.surfaced} |"
        )


class Slowdown:
    """Another connection pausing every client of the server for ``PAUSE_MS`` every
    ``PAUSE_EVERY`` seconds: commands wait, then succeed."""

    def __init__(self, url: str) -> None:
        import redis

        self.client = redis.Redis.from_url(url)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.is_set():
            self.client.execute_command("CLIENT", "PAUSE", str(PAUSE_MS), "ALL")
            self.stop.wait(PAUSE_EVERY)

    def __enter__(self) -> Slowdown:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()
        time.sleep(PAUSE_MS / 1000 + 0.05)  # let the last pause end
        self.client.close()


def build(url: str, *, before: bool) -> tuple[SemanticCache, RedisBackend, Any]:
    """The cache (settings before issue #14 if ``before``) and a decorated, instant upstream."""
    breaker = BreakerParams(slow_call_seconds=None) if before else BreakerParams()
    backend = RedisBackend(url, name="slow-bench", breaker=breaker)
    policy = CachePolicy(lookup_budget=None) if before else CachePolicy()
    cache = SemanticCache(embedder=HashingEmbedder(dim=64), backend=backend, policy=policy)

    @cached(cache, coalesce=False)
    def chat(*, model: str, messages: list[dict[str, str]]) -> dict[str, str]:
        return {"content": "the upstream's answer"}

    return cache, backend, chat


def run_phase(
    name: str, url: str, threads: int, seconds: float, *, before: bool, slow: bool
) -> Phase:
    cache, backend, chat = build(url, before=before)
    for prompt in PROMPTS:  # stored (if not yet) and warm
        chat(model="m", messages=[{"role": "user", "content": prompt}])
    cache.reset_stats()
    openings = backend.breaker.openings
    latencies: list[list[float]] = [[] for _ in range(threads)]
    surfaced = [0] * threads
    stop = threading.Event()

    def work(i: int) -> None:
        rng = np.random.default_rng(i)
        mine = latencies[i]
        while not stop.is_set():
            prompt = PROMPTS[int(rng.integers(len(PROMPTS)))]
            t = time.perf_counter()
            try:
                chat(model="m", messages=[{"role": "user", "content": prompt}])
            except Exception:  # noqa: BLE001 - counted: none may reach a caller
                surfaced[i] += 1
            mine.append((time.perf_counter() - t) * 1000)

    workers = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
    slowdown = Slowdown(url) if slow else None
    if slowdown is not None:
        slowdown.__enter__()
    started = time.perf_counter()
    for w in workers:
        w.start()
    time.sleep(seconds)
    stop.set()
    for w in workers:
        w.join()
    elapsed = time.perf_counter() - started
    if slowdown is not None:
        slowdown.__exit__()
    flat = [x for part in latencies for x in part]
    phase = Phase(
        name=name,
        calls=len(flat),
        seconds=elapsed,
        latencies_ms=flat,
        openings=backend.breaker.openings - openings,
        failures=cache.info().errors,
        surfaced=sum(surfaced),
    )
    cache.close()
    print(phase.row(), flush=True)
    return phase


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--url", help="a Redis Stack server to pause (default: start one)")
    args = parser.parse_args()
    # One warning per failed lookup would flood stderr (and cost more than the lookup itself).
    logging.getLogger("semcache").setLevel(logging.ERROR)

    server: Any = None
    url = args.url
    if url is None:
        sys.path.insert(0, str(ROOT / "tests"))
        from redis_server import RedisStackServer

        server = RedisStackServer(Path(tempfile.mkdtemp(prefix="slow-redis-")))
        server.start()
        url = server.url
    try:
        phases = [
            run_phase("healthy", url, args.threads, args.seconds, before=False, slow=False),
            run_phase(
                "slow, before (errors-only breaker, no budget)",
                url,
                args.threads,
                args.seconds,
                before=True,
                slow=True,
            ),
            run_phase(
                f"slow, after (slow-call breaker, {DEFAULT_LOOKUP_BUDGET:g} s budget)",
                url,
                args.threads,
                args.seconds,
                before=False,
                slow=True,
            ),
        ]
    finally:
        if server is not None:
            server.stop()

    header = (
        "| phase | calls/s | p50 ms | p99 ms | max ms | circuit openings | cache failures "
        "(went upstream) | errors surfaced |\n|---|---|---|---|---|---|---|---|"
    )
    body = (
        f"`python bench/bench_slow_redis.py --threads {args.threads} --seconds {args.seconds:g}`"
        ": a `@cached` function over `RedisBackend` (hashing embedder, an upstream that answers "
        f"at once), {args.threads} threads for {args.seconds:g} s per phase over 64 stored "
        f"prompts. Slow = another connection issues `CLIENT PAUSE {PAUSE_MS} ALL` every "
        f"{PAUSE_EVERY} s: every command waits for the pause to end, then succeeds (the "
        "socket timeout is 0.5 s). *Before* is the settings before "
        "issue #14 (`BreakerParams(slow_call_seconds=None)`, `CachePolicy(lookup_budget=None)`); "
        f"*after* is the defaults (`slow_call_seconds={DEFAULT_SLOW_CALL_SECONDS:g}`, "
        f"`lookup_budget={DEFAULT_LOOKUP_BUDGET:g}`).\n\n"
        + header
        + "\n"
        + "\n".join(p.row() for p in phases)
        + "\n\nWith the defaults, consecutive slow calls open the circuit; while it is open a "
        "call is refused in microseconds and goes upstream (the upstream here is instant, so "
        "calls/s can exceed the healthy figure); one probe per `reset_seconds` (1 s) pays the "
        "slowness, and when it is slow the circuit re-opens (a probe that lands between two "
        "pauses closes it until the next slow calls: hence several openings). A lookup over its "
        "budget is a miss too. Either way the caller gets an answer: a cache failure is counted "
        "(`info().errors`), never raised. The max column is calls that were already waiting on "
        "Redis when the circuit opened (the first calls of the phase, which also open their "
        "pooled connections, a few round trips each waiting out a pause, and the calls let "
        "through after a probe closed it): a blocking call cannot be interrupted, so the budget "
        "ends such a lookup only after its step, and the breaker is what keeps the rest fast."
    )
    write_section(SECTION, body)


if __name__ == "__main__":
    main()
