"""``semcache eval retrieval DIR``: nDCG@10 (with a paired bootstrap interval against the better
single retriever), Recall@100, MRR@10, latency and memory per mode."""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import asdict
from typing import Any

from semcache.errors import SemcacheError

__all__ = ["format_table", "register", "run"]


def register(subparsers: Any) -> None:
    p: argparse.ArgumentParser = subparsers.add_parser(
        "retrieval",
        help="score BM25, dense (fp32, int8, binary) and hybrid retrieval on a BEIR folder",
        description="Index a BEIR-layout folder (corpus.jsonl, queries.jsonl, qrels/*.tsv) and "
        "print nDCG@10, Recall@100, MRR@10, search latency and index memory per mode, and each "
        "mode's nDCG@10 difference to the better single retriever with a seeded paired "
        "bootstrap 95% interval (an interval above zero: that mode helps on this data).",
    )
    p.add_argument("directory", help="BEIR folder")
    p.add_argument("--split", default=None, help="qrels split (default: test, or the only one)")
    p.add_argument("--max-queries", type=int, default=None, help="score only the first N queries")
    p.add_argument(
        "--max-tokens",
        type=int,
        default=400,
        help="chunk size (tokens; capped to the embedder's window)",
    )
    p.add_argument("--overlap", type=int, default=60, help="chunk overlap (tokens)")
    p.add_argument("--oversample", type=float, default=4.0, help="int8 rescoring oversampling")
    p.add_argument("--rrf-k", type=float, default=60.0, help="reciprocal rank fusion k")
    p.add_argument(
        "--bootstrap-rounds", type=int, default=10_000, help="paired bootstrap resamples"
    )
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    p.add_argument("--model", default=None, help="sentence-transformers model name or directory")
    p.add_argument("--index-dir", default=None, help="keep the index here (default: temporary)")
    p.add_argument("--cache-dir", default=None, help="embedding cache directory")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def _mb(n: int) -> str:
    return f"{n / 1e6:.2f}" if n else "-"


def _bpv(x: float) -> str:
    return "-" if math.isnan(x) else f"{x:.0f}"


def format_table(result: Any) -> str:
    """A fixed-width table of a :class:`~semcache.measure.retrieval.RetrievalEval`."""
    head = (
        f"{result.dataset} ({result.split}): {result.documents} docs, {result.chunks} chunks "
        f"(<= {result.chunking.max_tokens} tokens, overlap {result.chunking.overlap_tokens}), "
        f"{result.queries} queries; query embedding p50 {result.embed_p50_ms:.1f} ms "
        f"(not in the latencies below)"
    )
    cols = (
        f"{'mode':<21}{'nDCG@10':>8}{'vs best (95% CI)':>28}{'R@100':>8}{'MRR@10':>8}"
        f"{'p50 ms':>8}{'p95 ms':>8}{'RAM MB':>8}{'disk MB':>8}{'RAM B/v':>8}{'disk B/v':>9}"
    )
    lines = [head, cols]
    for m in result.modes:
        lines.append(
            f"{m.name:<21}{m.ndcg_at_10:>8.4f}{_interval(m):>28}{m.recall_at_100:>8.4f}"
            f"{m.mrr_at_10:>8.4f}{m.latency_p50_ms:>8.2f}{m.latency_p95_ms:>8.2f}"
            f"{_mb(m.ram_bytes):>8}{_mb(m.disk_bytes):>8}{_bpv(m.ram_bytes_per_vector):>8}"
            f"{_bpv(m.disk_bytes_per_vector):>9}"
        )
    lines.append(
        f"vs best: mean per-query nDCG@10 difference to {result.best_single} (the better single "
        "retriever here), paired bootstrap 95% interval; an interval above 0 means the mode "
        "helps on this data, one spanning 0 cannot be told apart from it."
    )
    return "\n".join(lines)


def _interval(m: Any) -> str:
    if math.isnan(m.vs_best):
        return "-"
    return f"{m.vs_best:+.4f} ({m.vs_best_low:+.4f}, {m.vs_best_high:+.4f})"


def run(args: argparse.Namespace) -> int:
    from semcache.embedders.base import DEFAULT_MODEL
    from semcache.embedders.sentence_transformers import SentenceTransformerEmbedder
    from semcache.measure.beir import load_beir
    from semcache.measure.retrieval import EvalSettings, evaluate
    from semcache.retrieval.chunking import ChunkingConfig
    from semcache.retrieval.fusion import RRF

    try:
        dataset = load_beir(args.directory, args.split)
        settings = EvalSettings(
            chunking=ChunkingConfig(max_tokens=args.max_tokens, overlap_tokens=args.overlap),
            oversample=args.oversample,
            fusion=RRF(k=args.rrf_k),
            max_queries=args.max_queries,
            bootstrap_rounds=args.bootstrap_rounds,
            seed=args.seed,
        )
        embedder = SentenceTransformerEmbedder(args.model or DEFAULT_MODEL)
        result = evaluate(
            dataset,
            embedder,
            settings=settings,
            index_dir=args.index_dir,
            cache_dir=args.cache_dir,
            progress=not args.quiet,
        )
    except (SemcacheError, OSError) as e:
        print(f"semcache eval retrieval: {e}", file=sys.stderr)
        return 2
    if args.json:
        data = asdict(result)
        print(json.dumps(data, indent=2, default=str))
    else:
        print(format_table(result))
    return 0
