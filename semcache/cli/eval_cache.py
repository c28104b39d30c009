"""``semcache eval cache PAIRS``: replay labelled pairs through a real cache, store then look up.

Pairs are split 50/50 into a *tune* half (the static threshold, or the adaptive model, is learned
there) and a *measure* half (reported); see :mod:`semcache.measure.replay`.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from semcache.measure.pairs import read_pairs
from semcache.measure.replay import (
    embed_pairs,
    make_cache,
    replay,
    tune_adaptive,
    tune_split,
    tune_static,
    vetoed,
)
from semcache.policy import Guard

__all__ = ["register"]


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "cache",
        help="replay labelled pairs (store then look up): hit rate, false-hit rate, latency",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("pairs", type=Path, help="labelled pairs (JSONL text_a/text_b/label or TSV)")
    p.add_argument("--model", default=None, help="model name or local directory (default MiniLM)")
    p.add_argument("--delta", type=float, default=0.01, help="false-hit bound to tune for")
    p.add_argument("--threshold", type=float, default=None, help="static threshold (else tuned)")
    p.add_argument("--regions", type=int, default=8, help="adaptive regions (k-means centroids)")
    p.add_argument("--no-adaptive", action="store_true", help="replay the static policy only")
    p.add_argument("--feedback", action="store_true", help="give labels as feedback on hits")
    p.add_argument("--guard", action="store_true", help="add the default guards")
    p.add_argument("--limit", type=int, default=None, help="use the first N pairs")
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    p.set_defaults(func=_main)


def _main(args: argparse.Namespace) -> int:
    from semcache.embedders.base import DEFAULT_MODEL
    from semcache.embedders.sentence_transformers import SentenceTransformerEmbedder
    from semcache.matching.guards import default_guards

    embedder = SentenceTransformerEmbedder(args.model or DEFAULT_MODEL, memo_size=0)
    pairs = read_pairs(args.pairs, limit=args.limit)
    a, b = embed_pairs(embedder, pairs)
    split = tune_split(len(pairs))
    tune = [p for p, t in zip(pairs, split, strict=True) if t]
    measure = [p for p, t in zip(pairs, split, strict=True) if not t]
    guards: list[Guard] = list(default_guards(embedder)) if args.guard else []
    labels = np.array([p.label for p in tune], dtype=bool)
    sims = np.einsum("ij,ij->i", a[split], b[split])
    sims[vetoed(guards, tune)] = -1.0  # a vetoed pair is never served: tune without it
    static = args.threshold if args.threshold is not None else tune_static(sims, labels, args.delta)
    caches = {f"static {static:.4f}": make_cache(embedder, static, guards=guards)}
    if not args.no_adaptive:
        model = tune_adaptive(b[split], sims, labels, delta=args.delta, regions=args.regions)
        caches[f"adaptive k={model.regions}"] = make_cache(
            embedder, static, guards=guards, model=model
        )
    results = []
    print(f"tune {len(tune)} pairs, measure {len(measure)} pairs, delta {args.delta:g}")
    for name, cache in caches.items():
        with cache:
            r = replay(cache, measure, a[~split], b[~split], name=name, feedback=args.feedback)
        results.append(r)
        print(r.line())
    if args.json is not None:
        args.json.write_text(json.dumps([asdict(r) for r in results], indent=1) + "\n")
        print(f"results: {args.json}", file=sys.stderr)
    return 0
