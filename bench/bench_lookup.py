"""Lookup latency of the embedded cache: hit, miss and exact-repeat paths at 10k and 100k entries.

    python bench/bench_lookup.py [--sizes 10000 100000] [--queries 300]

The cache holds ``size`` entries: 2,000 real Quora questions (embedded with all-MiniLM-L6-v2) and
random unit vectors for the rest. Timed queries are each asked once, so the embedder's memo
never helps the semantic paths:

- hit: the paraphrase (QQP duplicate) of a stored question, above the threshold -> embed + search
- miss: an unrelated question -> embed + search, nothing served
- exact repeat: a stored question again, with other case and spacing -> exact tier, no embedding

The peer is bare embedding (``embedder.embed([q])`` of the same kind of question, memo off).
torch runs on one thread (``torch.set_num_threads(1)``; OMP_NUM_THREADS=1), as in the tests.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
from _report import ROOT, percentiles, write_section
from tqdm import tqdm

from semcache import EmbeddedBackend, Scope, SemanticCache, SentenceTransformerEmbedder, Tier
from semcache.keys import text_key
from semcache.models import NewEntry
from semcache.policy import DEFAULT_MIN_SIMILARITY

QQP = ROOT.parent / "shared" / "data" / "qqp" / "pairs.jsonl.gz"
SCOPE = Scope(model="gpt-4o-mini")


def load_questions(n_pairs: int, seed: int) -> tuple[list[tuple[str, str]], list[str]]:
    with gzip.open(QQP, "rt") as f:
        rows = [json.loads(line) for line in f]
    rng = random.Random(seed)
    rng.shuffle(rows)
    dupes = [(r["text_a"], r["text_b"]) for r in rows if r["label"] == 1][:n_pairs]
    used = {q for pair in dupes for q in pair}
    others = [r["text_a"] for r in rows if r["label"] == 0 and r["text_a"] not in used]
    return dupes, others


def fill(cache: SemanticCache, stored: list[str], size: int, rng: np.random.Generator) -> None:
    """Store the real questions, then random unit vectors up to ``size`` entries."""
    vectors = cache.embedder.embed(stored)
    for text, vec in zip(stored, vectors, strict=True):
        cache.store(text, {"kind": "value", "value": f"answer to {text}"}, SCOPE, vector=vec)
    scope_key = SCOPE.key()
    dim = vectors.shape[1]
    todo = size - len(stored)
    for start in tqdm(
        range(0, todo, 10_000), desc=f"filling {size:,}", unit="10k", file=sys.stderr
    ):
        count = min(10_000, todo - start)
        filler = rng.standard_normal((count, dim)).astype(np.float32)
        filler /= np.linalg.norm(filler, axis=1, keepdims=True)
        cache.backend.put_many(
            [
                NewEntry(
                    scope_key=scope_key,
                    text_key=text_key(f"filler {start + i}"),
                    prompt=f"filler {start + i}",
                    response={"kind": "value", "value": "x"},
                    created_at=0.0,
                )
                for i in range(count)
            ],
            list(filler),
        )


def timed(fn: Callable[..., Any], *args: Any) -> tuple[float, Any]:
    """Milliseconds one call takes, and its result."""
    t = time.perf_counter()
    result = fn(*args)
    return (time.perf_counter() - t) * 1000, result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    ap.add_argument("--queries", type=int, default=300)
    ap.add_argument("--plot", type=Path, default=ROOT / "docs" / "bench_lookup.png")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(1)
    n = args.queries
    dupes, others = load_questions(2000, seed=7)
    stored = [a for a, _ in dupes]
    embedder = SentenceTransformerEmbedder(memo_size=0)
    bare_embedder = SentenceTransformerEmbedder(memo_size=0)
    rows, samples = [], {}
    for size in args.sizes:
        with (
            tempfile.TemporaryDirectory() as tmp,
            SemanticCache(embedder=embedder, backend=EmbeddedBackend(tmp)) as cache,
        ):
            fill(cache, stored, size, np.random.default_rng(size))
            # Warm up model and index.
            for q in others[-20:]:
                cache.lookup(q, SCOPE)
            # Find paraphrases that do hit at the default threshold (measured, not assumed).
            hit_queries = []
            for _, b in dupes:
                if len(hit_queries) == n:
                    break
                if cache.lookup(b, SCOPE).tier is Tier.SEMANTIC:
                    hit_queries.append(b)
            # Fresh embedder state: each timed text is new to the memo (memo is off anyway).
            bare_texts = others[n : 2 * n]
            miss_texts = others[:n]
            exact_texts = [f"  {a.upper()} " for a in stored[:n]]
            # Interleaved, so load from other processes hits every path alike.
            m = min(len(hit_queries), len(bare_texts), len(miss_texts), len(exact_texts))
            bare, hit, miss, exact = [], [], [], []
            hit_res, miss_res, exact_res = [], [], []
            lookup = cache.lookup
            for i in range(m):
                bare.append(timed(bare_embedder.embed, [bare_texts[i]])[0])
                for texts, times, results in (
                    (hit_queries, hit, hit_res),
                    (miss_texts, miss, miss_res),
                    (exact_texts, exact, exact_res),
                ):
                    ms, result = timed(lookup, texts[i], SCOPE)
                    times.append(ms)
                    results.append(result)
            assert all(r.tier is Tier.SEMANTIC for r in hit_res)
            assert all(r.tier is Tier.EXACT for r in exact_res)
            missed = sum(not r.hit for r in miss_res)
            stats = {
                k: percentiles(v)
                for k, v in (("bare", bare), ("hit", hit), ("miss", miss), ("exact", exact))
            }
            samples[size] = {"bare embedding": bare, "hit": hit, "miss": miss, "exact": exact}
            rows.append((size, stats, m, missed))
            print(size, json.dumps(stats), file=sys.stderr)

    lines = [
        "Command: `python bench/bench_lookup.py` (torch on 1 thread). Embedded backend, default",
        "HNSW (M=16, ef_construction=200, ef_search=64), default threshold "
        f"{DEFAULT_MIN_SIMILARITY} and lexical guard,",
        "all-MiniLM-L6-v2 on torch (the ONNX path: see the embedding section).",
        "Each timed query is a different text, so the embedder's memo never helps.",
        "The cache holds 2,000 real Quora questions plus random unit vectors up to the size.",
        "",
        "| entries | path | p50 ms | p95 ms | p50 vs bare embedding |",
        "|---:|---|---:|---:|---:|",
    ]
    for size, stats, m, missed in rows:
        base = stats["bare"]["p50"]
        for key, name in (
            ("bare", "bare embedding (peer)"),
            ("hit", f"hit (n={m})"),
            ("miss", f"miss (n={m}, {missed} missed)"),
            ("exact", f"exact repeat (n={m})"),
        ):
            s = stats[key]
            lines.append(
                f"| {size:,} | {name} | {s['p50']:.2f} | {s['p95']:.2f} | {s['p50'] / base:.2f}x |"
            )
    lines += ["", f"![lookup latency]({args.plot.name})"]
    write_section("Lookup latency (embedded backend)", "\n".join(lines))
    plot(samples, args.plot)


def plot(samples: dict[int, dict[str, list[float]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(samples), figsize=(6 * len(samples), 4), squeeze=False)
    bins = np.logspace(-2, 2, 60)
    for ax, (size, series) in zip(axes[0], samples.items(), strict=True):
        for name, values in series.items():
            ax.hist(values, bins=bins, alpha=0.5, label=name)
        ax.set_xscale("log")
        ax.set_xlabel("latency (ms, log scale)")
        ax.set_ylabel("queries")
        ax.set_title(f"{size:,} entries")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
