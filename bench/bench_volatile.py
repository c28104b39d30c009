"""The volatile-prompt detector: precision and recall on the labelled fixture, its latency, and
its effect on the demo.

    OMP_NUM_THREADS=1 python bench/bench_volatile.py [--requests 600] [--no-demo] [--day 2000]

- **Detector quality** on ``tests/data/volatile_prompts.jsonl`` (written for this project; see
  ``tests/data/README.md``), per half: ``A`` (the rules were tuned on it), ``B`` (held out for
  the first version of the rules, whose three misses and one false alarm were then fixed, so
  no longer held out) and ``C`` (written after the rules were frozen; never tuned on).
- **Latency**: :func:`semcache.matching.volatile.is_volatile` per prompt, over every fixture
  question and the demo's Quora sample (median and p95 of per-call times, 20 rounds).
- **Share flagged** among the Quora questions of the full data (``../shared/data/qqp``), which
  are not labelled for volatility.
- **The demo** (``semcache demo``: the bundled Quora sample through ``@cached`` over the
  simulated LLM, real MiniLM and HNSW) three times on the same stream: the guard off, on with
  the default ``cap_ttl`` (5 minutes) and on with ``bypass``.
- **A simulated day** of fixture questions with a manual clock, the same three ways: hit rate
  and *stale hits* (a question labelled volatile served an answer older than 5 minutes).
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from _report import ROOT, percentiles, write_section

from semcache.matching.volatile import is_volatile, volatility

FIXTURE = ROOT / "tests" / "data" / "volatile_prompts.jsonl"
QQP = ROOT.parent / "shared" / "data" / "qqp" / "pairs.jsonl.gz"


def quality(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Precision, recall and the confusion counts of the detector on labelled rows."""
    tp = fp = fn = tn = 0
    errors: list[str] = []
    for r in rows:
        got, want = is_volatile(r["text"]), bool(r["volatile"])
        tp += got and want
        fp += got and not want
        fn += want and not got
        tn += not got and not want
        if got != want:
            errors.append(f"{'FP' if got else 'FN'} ({r['kind']}): {r['text']}")
    precision = tp / (tp + fp) if tp + fp else float("nan")
    recall = tp / (tp + fn) if tp + fn else float("nan")
    return {
        "n": len(rows),
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "tn": tn,
        "precision": precision,
        "recall": recall,
        "errors": errors,
    }


def latency_ms(texts: list[str], rounds: int = 20) -> dict[str, float]:
    """Per-call times of :func:`volatility` in milliseconds."""
    samples = []
    for _ in range(rounds):
        for t in texts:
            start = time.perf_counter_ns()
            volatility(t)
            samples.append((time.perf_counter_ns() - start) / 1e6)
    return percentiles(samples)


def worst_case_ms() -> tuple[float, str]:
    """The slowest of repeated-phrase inputs of 1,000 and 8,000 characters (best of 5 each):
    what a hostile or pasted prompt can cost, since regular expressions may backtrack."""
    units = [
        "a",
        "is ",
        "if ",
        "make ",
        "how do update ",
        "what week ",
        "the current ",
        "who won ",
        "price of ",
        "bitcoin ",
        "how many dollars ",
        "'today' ",
        "usd to ",
    ]
    worst = (0.0, "")
    for unit in units:
        for n in (1_000, 8_000):
            text = (unit * (n // len(unit) + 1))[:n]
            best = math.inf
            for _ in range(5):
                start = time.perf_counter()
                volatility(text)
                best = min(best, time.perf_counter() - start)
            worst = max(worst, (best * 1000, f"{unit!r} x {n // len(unit)}"))
    return worst


def qqp_questions() -> list[str]:
    with gzip.open(QQP, "rt", encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    return list(dict.fromkeys(t for r in rows for t in (r["text_a"], r["text_b"])))


def demo(requests: int) -> list[tuple[str, Any, int]]:
    """The demo's stream three times: guard off, ``cap_ttl`` (default), ``bypass``."""
    import tempfile

    from semcache import CachePolicy, EmbeddedBackend, SemanticCache, default_embedder
    from semcache.measure.demo import SimulatedLLM, build_stream, load_pairs, run_demo
    from semcache.policy import VolatilePolicy

    pairs = load_pairs()
    stream, cluster, negatives = build_stream(pairs, requests, seed=0)
    flagged = sum(is_volatile(a.question) for a in stream)
    embedder = default_embedder(threads=1)
    out = []
    for name, rule in (
        ("off", None),
        ("cap_ttl (default, 300 s)", VolatilePolicy()),
        ("bypass", VolatilePolicy(action="bypass")),
    ):
        with (
            tempfile.TemporaryDirectory(prefix="semcache-bench-") as tmp,
            SemanticCache(
                embedder=embedder,
                backend=EmbeddedBackend(Path(tmp)),
                policy=CachePolicy(volatile=rule),
            ) as cache,
        ):
            report = run_demo(cache, stream, cluster, negatives, llm=SimulatedLLM(), users=32)
        print(name, report.to_dict(), file=sys.stderr)
        out.append((name, report, flagged))
    return out


def simulated_day(rows: list[dict[str, Any]], n: int, seed: int = 0) -> list[dict[str, Any]]:
    """``n`` questions of the fixture over 24 simulated hours (Zipf popularity, uniform
    arrivals), through ``lookup``/``store`` with MiniLM and a manual clock, three ways.

    A *stale hit* serves a question labelled volatile an answer stored more than 5 minutes
    earlier (whatever the guard; the label, not the detector, decides).
    """
    import random
    import tempfile

    from semcache import CachePolicy, EmbeddedBackend, SemanticCache, default_embedder
    from semcache.policy import VolatilePolicy
    from semcache.testing import ManualClock

    rng = random.Random(seed)
    order = rows[:]
    rng.shuffle(order)
    weights = [1 / (rank + 1) ** 1.1 for rank in range(len(order))]
    asks = rng.choices(order, weights=weights, k=n)
    times = sorted(rng.uniform(0, 86_400) for _ in range(n))
    embedder = default_embedder(threads=1)
    out = []
    for name, rule in (
        ("off", None),
        ("cap_ttl (default, 300 s)", VolatilePolicy()),
        ("bypass", VolatilePolicy(action="bypass")),
    ):
        clock = ManualClock(0.0)
        hits = volatile_hits = stale = 0
        with (
            tempfile.TemporaryDirectory(prefix="semcache-bench-") as tmp,
            SemanticCache(
                embedder=embedder,
                backend=EmbeddedBackend(Path(tmp)),
                policy=CachePolicy(volatile=rule),
                clock=clock,
            ) as cache,
        ):
            for row, at in zip(asks, times, strict=True):
                clock.advance(at - clock.now())
                result = cache.lookup(row["text"])
                if result.entry is not None:
                    hits += 1
                    if row["volatile"]:
                        volatile_hits += 1
                        stale += at - result.entry.created_at > 300.0
                elif result.reason != "volatile":
                    cache.store(row["text"], "answer")
        out.append(
            {
                "guard": name,
                "hit_rate": hits / n,
                "volatile_asks": sum(r["volatile"] for r in asks),
                "volatile_hits": volatile_hits,
                "stale_hits": stale,
            }
        )
        print(out[-1], file=sys.stderr)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=600)
    ap.add_argument("--no-demo", action="store_true", help="skip the three demo runs")
    ap.add_argument("--day", type=int, default=2000, help="questions in the simulated day")
    args = ap.parse_args()

    rows = [json.loads(line) for line in FIXTURE.read_text().splitlines() if line.strip()]
    halves = {h: [r for r in rows if r["half"] == h] for h in ("A", "B", "C")}
    scores = {h: quality(rs) for h, rs in halves.items()}
    scores["A+B+C"] = quality(rows)

    from semcache.measure.demo import load_pairs

    sample = list(dict.fromkeys(t for p in load_pairs() for t in (p.text_a, p.text_b)))
    lat = latency_ms([r["text"] for r in rows] + sample)
    worst = worst_case_ms()
    full = qqp_questions() if QQP.exists() else []
    flagged_full = sum(is_volatile(t) for t in full)

    lines = [
        "`semcache.matching.volatile.is_volatile` (English regular expressions, no model) on "
        "`tests/data/volatile_prompts.jsonl` (322 questions written for it, half volatile, "
        'with hard negatives such as "the current in a circuit" and "the current date in '
        'Python"). Halves A and B are fixed by the SHA-256 of the text (tests/data/README.md). '
        "History, so the figures can be read honestly: rules v1 were tuned on A only and "
        "scored once on B (precision 0.984, recall 0.953: 3 misses, 1 false alarm); those "
        "four were fixed (v2), so B is no longer held out. C was written after v1 was frozen "
        "and scored once on v2: **precision 0.938, recall 0.750** (the clean held-out "
        'figure). v3 (below) added vetoes found on Quora questions ("today" meaning '
        'nowadays, hypotheticals, questions to the reader, a stricter "what is the time" '
        "pattern); the last also removed one of C's two false alarms, so C's v3 precision is "
        "not a clean figure. The same person wrote the questions and the rules: expect lower "
        "figures on real traffic.",
        "",
        "| half | questions | precision | recall | TP | FP | FN | TN |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for h, s in scores.items():
        lines.append(
            f"| {h} | {s['n']} | {s['precision']:.3f} | {s['recall']:.3f} | {s['tp']} | "
            f"{s['fp']} | {s['fn']} | {s['tn']} |"
        )
    lines += ["", "Errors on half C (v3):", ""]
    lines += [f"- {e}" for e in scores["C"]["errors"]] or ["- none"]
    lines += [
        "",
        f"Latency per prompt ({len(rows) + len(sample)} questions x 20 rounds, one thread): "
        f"median {lat['p50'] * 1000:.1f} µs, p95 {lat['p95'] * 1000:.1f} µs. Worst case on "
        f"long repeated-phrase inputs (1,000 and 8,000 characters; a longer prompt is judged "
        f"on its first and last 500): {worst[0]:.2f} ms ({worst[1]}).",
    ]
    lines.append(
        "Real questions are harder than the fixture. In a random 40 of the Quora questions "
        "v2 flagged, the author judged 11 volatile by the fixture's rule; in another random "
        '40 flagged by v3, 16. Most false alarms use "today" or "now" to mean '
        "nowadays or describe the asker's own situation. Under the default `cap_ttl` a false "
        "alarm only shortens that entry's life to 5 minutes; under `bypass` it costs its hits."
    )
    if full:
        lines.append(
            f"Quora questions of the full QQP data flagged volatile: {flagged_full:,} of "
            f"{len(full):,} ({flagged_full / len(full):.1%}); they are not labelled for "
            "volatility, so this is the detector's reach on ordinary questions, not an error rate."
        )
    if not args.no_demo:
        runs = demo(args.requests)
        flagged = runs[0][2]
        lines += [
            "",
            f"The demo (`semcache demo`, {args.requests} requests from the bundled Quora sample, "
            f"32 users, MiniLM, simulated LLM; {flagged} of the requests are flagged volatile), "
            "run three times on the same stream:",
            "",
            "| guard | hit rate | LLM calls | correct hits | false hits (labelled) | "
            "unverified hits | volatile counted |",
            "|---|---|---|---|---|---|---|",
        ]
        for name, rep, _ in runs:
            lines.append(
                f"| {name} | {rep.hit_rate:.1%} | {rep.upstream_calls} | {rep.correct_hits} | "
                f"{rep.false_hits_labelled} | {rep.unverified_hits} | {rep.volatile} |"
            )
        lines += [
            "",
            "The demo's run is shorter than the 5-minute cap, so `cap_ttl` serves what it would "
            "have served anyway; `bypass` shows the most the guard can cost on this stream. "
            "These runs are threaded (coalescing depends on timing): identical runs differ by "
            'about a point of hit rate ("off" gave 20.2% and 19.3% in two runs).',
        ]
    day = simulated_day(rows, args.day)
    lines += [
        "",
        f"A simulated day: {args.day} questions drawn from the fixture (Zipf popularity, "
        "uniform arrival times over 24 hours, a manual clock; `lookup` then `store` on a "
        "miss, MiniLM, threshold 0.95, no TTL). A *stale hit* serves a question labelled "
        "volatile an answer more than 5 minutes old. A third of these asks are volatile, far "
        "more than in the Quora stream, so the cost in hit rate is an upper range; the stale "
        "hits left under the guard are the detector's misses (questions it does not flag).",
        "",
        "| guard | hit rate | volatile asked | volatile served | stale hits |",
        "|---|---|---|---|---|",
    ]
    for d in day:
        lines.append(
            f"| {d['guard']} | {d['hit_rate']:.1%} | {d['volatile_asks']} | "
            f"{d['volatile_hits']} | {d['stale_hits']} |"
        )
    lines += ["", "Command: `OMP_NUM_THREADS=1 python bench/bench_volatile.py`."]
    write_section("Volatile prompts", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
