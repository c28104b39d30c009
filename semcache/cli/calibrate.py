"""``semcache calibrate PAIRS``: a threshold with a false-hit bound, from labelled pairs.

Writes ``<name>.calibration.json`` (load it with
:func:`semcache.measure.calibration.policy_from_calibration`) and a precision/recall plot beside it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np

from semcache.embedders.base import Embedder
from semcache.measure.calibration import CalibrationReport, calibrate, pair_similarities
from semcache.measure.pairs import read_pairs

__all__ = ["register", "run_calibration"]


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "calibrate",
        help="choose a threshold from labelled pairs with a false-hit bound",
        description=(
            "Embed labelled pairs (JSONL text_a/text_b/label, optionally .gz, or a TSV with "
            "sentence1/sentence2/label like PAWS) and report, per threshold, precision, recall "
            "and a Clopper-Pearson upper bound on the false-hit rate."
        ),
    )
    p.add_argument("pairs", type=Path, help="labelled pairs file")
    p.add_argument("--model", default=None, help="model name or local directory (default: MiniLM)")
    p.add_argument("--delta", type=float, default=0.01, help="false-hit bound (default 0.01)")
    p.add_argument("--confidence", type=float, default=0.95, help="bound confidence (0.95)")
    p.add_argument("--out", type=Path, default=Path("."), help="output directory")
    p.add_argument("--limit", type=int, default=None, help="use the first N pairs")
    p.add_argument("--no-plot", action="store_true", help="skip the PNG plot")
    p.set_defaults(func=_main)


def run_calibration(
    pairs_path: Path,
    *,
    embedder: Embedder,
    delta: float = 0.01,
    confidence: float = 0.95,
    out: Path = Path("."),
    limit: int | None = None,
    plot: bool = True,
) -> CalibrationReport:
    """Calibrate on a pairs file; writes the JSON report (and the plot) into ``out``."""
    pairs = read_pairs(pairs_path, limit=limit)
    sims = pair_similarities(embedder, pairs)
    labels = np.array([p.label for p in pairs], dtype=bool)
    report = calibrate(
        sims,
        labels,
        delta=delta,
        confidence=confidence,
        source=pairs_path.name,
        model=embedder.fingerprint.to_dict(),
    )
    stem = pairs_path.name.split(".")[0]
    out.mkdir(parents=True, exist_ok=True)
    report.write(out / f"{stem}.calibration.json")
    if plot:
        from semcache.measure.plot import plot_report

        plot_report(report, out / f"{stem}.calibration.png")
    return report


def _summary(report: CalibrationReport) -> str:
    lines = [f"{'threshold':>9}  {'hits':>6}  {'false':>5}  {'precision':>9}  {'recall':>6}  "
             f"{'fh-rate':>7}  {'fh-upper':>8}"]  # fmt: skip
    step = {True: 10, False: 50}  # in thousandths: every 0.01 from 0.90, every 0.05 below
    shown = [
        p
        for p in report.points
        if p.hits and round(p.threshold * 1000) % step[p.threshold >= 0.9] == 0
    ]
    for p in shown:
        lines.append(
            f"{p.threshold:9.4f}  {p.hits:6d}  {p.false_hits:5d}  {p.precision:9.4f}  "
            f"{p.recall:6.4f}  {p.false_hit_rate:7.4f}  {p.false_hit_upper:8.4f}"
        )
    if report.recommended is None:
        lines.append(f"no threshold has a false-hit upper bound <= {report.delta:g}")
    else:
        rec = report.point(report.recommended)
        lines.append(
            f"recommended min_similarity = {report.recommended:.4f}: recall {rec.recall:.3f}, "
            f"false-hit rate {rec.false_hit_rate:.4f} (<= {rec.false_hit_upper:.4f} at "
            f"{report.confidence:.0%})"
        )
    return "\n".join(lines)


def _main(args: argparse.Namespace) -> int:
    from semcache.embedders.base import DEFAULT_MODEL
    from semcache.embedders.sentence_transformers import SentenceTransformerEmbedder

    embedder = SentenceTransformerEmbedder(args.model or DEFAULT_MODEL)
    report = run_calibration(
        args.pairs,
        embedder=embedder,
        delta=args.delta,
        confidence=args.confidence,
        out=args.out,
        limit=args.limit,
        plot=not args.no_plot,
    )
    print(_summary(report))
    print(
        f"report: {args.out / (args.pairs.name.split('.')[0] + '.calibration.json')}",
        file=sys.stderr,
    )
    return 0
