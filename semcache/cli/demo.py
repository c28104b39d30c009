"""``semcache demo``: a realistic question stream through the cache, and the figures."""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

__all__ = ["register"]


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "demo",
        help="replay a realistic question stream through the cache over a simulated LLM",
        description=(
            "Replays labelled Quora question pairs as a stream of user questions through "
            "@cached over a simulated LLM (real embedding model, real HNSW index) and prints "
            "hit rate, false hits, latency and tokens saved."
        ),
    )
    p.add_argument("--pairs", type=Path, help="labelled pairs JSONL(.gz); default: bundled sample")
    p.add_argument("--requests", type=int, default=600, help="requests to replay (default 600)")
    p.add_argument("--users", type=int, default=32, help="concurrent users (default 32)")
    p.add_argument("--min-similarity", type=float, default=None,
                   help="threshold (default 0.95, CachePolicy's)")  # fmt: skip
    p.add_argument("--latency-scale", type=float, default=1.0, help="scale simulated LLM latency")
    p.add_argument("--dir", type=Path, help="cache directory to keep (default: a temporary one)")
    p.add_argument("--model", default=None, help="embedding model name or local path")
    p.add_argument(
        "--volatile",
        choices=("cap_ttl", "bypass", "off"),
        default="cap_ttl",
        help="volatile prompts (weather, prices, 'latest'...): reuse for 5 minutes at most "
        "(cap_ttl, the default), never cache (bypass), or treat like any other (off)",
    )
    p.add_argument(
        "--untuned",
        action="store_true",
        help="the plain model without the shipped matcher (its LoRA adapter and the verifier "
        "on its band; docs/model_card.md), to compare",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from tqdm import tqdm

    from semcache import CachePolicy, EmbeddedBackend, SemanticCache, default_embedder
    from semcache.matching.verifier import CrossEncoderVerifier, default_verifier
    from semcache.measure.demo import SimulatedLLM, build_stream, load_pairs, run_demo
    from semcache.policy import DEFAULT_MIN_SIMILARITY, VolatilePolicy

    pairs = load_pairs(args.pairs)
    stream, cluster, negatives = build_stream(pairs, args.requests, seed=args.seed)
    print(f"loading the embedding model ({args.model or 'all-MiniLM-L6-v2'}) ...", file=sys.stderr)
    # ONNX Runtime when it exports and agrees with torch, else torch; one thread per call
    # either way: the demo's user threads share the machine's cores.
    # The shipped matcher (tuned embedder + verifier on its band) for the packaged model, as
    # default_embedder() does; --untuned or another --model: the plain model, no verifier.
    shipped = not args.untuned and not args.model
    embedder = default_embedder(
        **({"model": args.model} if args.model else {}), threads=1, tuned=shipped
    )
    verifier: CrossEncoderVerifier | None = default_verifier(threads=1) if shipped else None
    policy = CachePolicy(
        min_similarity=(
            DEFAULT_MIN_SIMILARITY if args.min_similarity is None else args.min_similarity
        ),
        volatile={
            "off": None,
            "cap_ttl": VolatilePolicy(),
            "bypass": VolatilePolicy(action="bypass"),
        }[args.volatile],
    )
    with tempfile.TemporaryDirectory(prefix="semcache-demo-") as tmp:
        where = args.dir or Path(tmp)
        with SemanticCache(
            embedder=embedder, backend=EmbeddedBackend(where), policy=policy, verifier=verifier
        ) as cache:

            def bar(items: Iterable[Any], total: int) -> Iterable[Any]:
                bar: Iterable[Any] = tqdm(
                    items,
                    total=total,
                    desc="requests",
                    unit="req",
                    file=sys.stderr,
                    mininterval=0.2 if sys.stderr.isatty() else 5.0,
                )
                return bar

            report = run_demo(
                cache,
                stream,
                cluster,
                negatives,
                llm=SimulatedLLM(latency_scale=args.latency_scale),
                users=args.users,
                progress=bar,
            )
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
        return 0
    hits = report.requests - report.upstream_calls
    lat = report.latency_ms
    lines = [
        "",
        f"semcache demo: {report.requests} questions from {len(pairs)} labelled Quora pairs, "
        f"{args.users} concurrent users, min_similarity={report.threshold}, "
        f"embedder: {embedder.fingerprint.model}"
        f"{' + shipped adapter' if shipped else ''} on {embedder.backend}"
        f"{', verifier on its band' if verifier else ''}",
        "",
        f"  hit rate            {report.hit_rate:6.1%}  ({hits} served from cache, "
        f"{report.upstream_calls} LLM calls)",
        f"    exact tier        {report.hits_exact:6d}",
        f"    semantic tier     {report.hits_semantic:6d}",
        f"    coalesced         {report.coalesced:6d}  (served after an in-flight twin)",
        f"  correct hits        {report.correct_hits:6d}  (same duplicate cluster)",
        f"  false hits          {report.false_hits_labelled:6d}  (labelled NOT duplicates)",
        f"  unverified hits     {report.unverified_hits:6d}  (no label either way)",
        f"  volatile prompts    {report.volatile:6d}  (guard: {args.volatile})",
        "  latency p50 / p95",
        *(
            f"    {name:<17} {lat[key]['p50']:8.1f} / {lat[key]['p95']:8.1f} ms"
            f"  (n={lat[key]['n']:.0f})"
            for key, name in (("hit", "cache hits"), ("coalesced", "coalesced"), ("miss", "misses"))
            if lat.get(key, {}).get("n")
        ),
        f"  tokens saved        {report.tokens_saved:6d}",
        f"  LLM time saved      {report.llm_seconds_saved:8.1f} s   "
        f"(run took {report.wall_seconds:.1f} s)",
    ]
    if report.examples:
        lines += ["", "  false hits (asked -> served the answer to):"]
        lines += [f"    {q!r}\n      -> {a!r}" for q, a in report.examples]
    print("\n".join(lines))
    return 0
