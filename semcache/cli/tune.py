"""``semcache tune PAIRS --out DIR``: fine-tune the embedder, or train a verifier, on pairs.

A held-out part of the pairs is never trained on. It is split by groups of pairs that share a
text, so no held-out sentence is seen in training. The calibration curve on it is reported
before and after, and written beside the model as ``before.calibration.json`` /
``after.calibration.json`` (and ``.png``).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from semcache.errors import ConfigurationError
from semcache.measure.calibration import CalibrationReport, calibrate, pair_similarities
from semcache.measure.pairs import LabelledPair, read_pairs
from semcache.measure.tuning import (
    ADAPTER_FILE,
    TuneConfig,
    TuneResult,
    holdout_split,
    tune_embedder,
    tune_verifier,
)

__all__ = ["register", "run_tune"]

#: Thresholds swept for a verifier's probability (the embedder's use the calibration default).
SCORE_THRESHOLDS = [round(0.05 * i, 2) for i in range(1, 20)] + [0.97, 0.98, 0.99]


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "tune",
        help="fine-tune the embedder, or train a verifier, on labelled pairs",
        description=(
            "Fine-tune a sentence-transformers embedder on labelled pairs (JSONL text_a/text_b/"
            "label or a PAWS-style TSV; duplicates and hard non-duplicates), or with --verifier "
            "train a cross-encoder verifier from the packaged MiniLM weights, on CPU, within a "
            "time budget. Reports the calibration curve on a held-out part before and after."
        ),
    )
    p.add_argument("pairs", type=Path, nargs="+", help="labelled pairs file(s)")
    p.add_argument("--out", type=Path, required=True, help="model directory to write")
    p.add_argument("--verifier", action="store_true", help="train a cross-encoder verifier")
    p.add_argument("--model", default=None, help="base model directory (default: MiniLM)")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument(
        "--learning-rate", type=float, default=None, help="peak rate (2e-5 embedder, 7e-5 verifier)"
    )
    p.add_argument("--max-seq-length", type=int, default=128)
    p.add_argument("--time-budget", type=float, default=None, help="seconds of training")
    p.add_argument("--matryoshka", default="", help="extra sizes to train, e.g. 256,128")
    p.add_argument("--holdout", type=float, default=0.2, help="fraction held out (0.2)")
    p.add_argument(
        "--delta", type=float, default=0.01, help="false-hit bound of the reports (default 0.01)"
    )
    p.add_argument("--limit", type=int, default=None, help="use the first N pairs of each file")
    p.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    p.add_argument("--no-plot", action="store_true", help="skip the PNG plots")
    p.add_argument(
        "--lora-rank",
        type=int,
        default=None,
        help="train a LoRA adapter of this rank on the packaged MiniLM (writes "
        "adapter.safetensors, ~1.5 MB) instead of a whole model",
    )
    p.set_defaults(func=_main)


def run_tune(
    pairs: Sequence[LabelledPair],
    out: Path,
    *,
    verifier: bool = False,
    base: str | None = None,
    config: TuneConfig | None = None,
    holdout: float = 0.2,
    delta: float = 0.01,
    plot: bool = True,
) -> tuple[TuneResult, CalibrationReport, CalibrationReport]:
    """Train on all but a held-out part; return the run and the before/after reports."""
    from semcache.embedders.base import DEFAULT_MODEL
    from semcache.embedders.sentence_transformers import SentenceTransformerEmbedder

    config = config or TuneConfig()
    if config.lora_rank is not None and base is not None:
        raise ConfigurationError("LoRA adapters are trained on the packaged MiniLM: drop --model")
    train, held = holdout_split(pairs, holdout)
    fit = tune_verifier if verifier else tune_embedder
    result = fit(train, out, base=base, config=config)
    labels = np.array([p.label for p in held], dtype=bool)
    original = SentenceTransformerEmbedder(base or DEFAULT_MODEL, memo_size=0)
    before = calibrate(
        pair_similarities(original, held),
        labels,
        source=f"held out ({len(held)} pairs), before",
        delta=delta,
        model=original.fingerprint.to_dict(),
    )
    if verifier:
        from semcache.matching.verifier import CrossEncoderVerifier

        if config.lora_rank is None:
            judge = CrossEncoderVerifier.load(out)
        else:
            from semcache.embedders.adapter import read_adapter
            from semcache.matching.onnx_verifier import torch_cross_encoder

            judge = CrossEncoderVerifier(torch_cross_encoder(read_adapter(out / ADAPTER_FILE)))
        scores = judge.score([(p.text_a, p.text_b) for p in held])
        after = calibrate(
            scores,
            labels,
            thresholds=SCORE_THRESHOLDS,
            source=f"held out ({len(held)} pairs), verifier score",
            delta=delta,
            model={"model": str(out), "kind": "cross-encoder"},
        )
    else:
        if config.lora_rank is None:
            tuned = SentenceTransformerEmbedder(str(out), memo_size=0)
        else:
            from semcache.embedders.adapter import read_adapter

            tuned = SentenceTransformerEmbedder(
                memo_size=0, adapter=read_adapter(out / ADAPTER_FILE)
            )
        after = calibrate(
            pair_similarities(tuned, held),
            labels,
            source=f"held out ({len(held)} pairs), tuned",
            delta=delta,
            model=tuned.fingerprint.to_dict(),
        )
    for name, report in (("before", before), ("after", after)):
        report.write(out / f"{name}.calibration.json")
        if plot:
            from semcache.measure.plot import plot_report

            plot_report(report, out / f"{name}.calibration.png")
    return result, before, after


def best_recall_at(report: CalibrationReport, precision: float) -> tuple[float, float] | None:
    """(threshold, recall) of the sweep point with the most recall at ``>= precision``."""
    ok = [p for p in report.points if p.hits and p.precision >= precision]
    if not ok:
        return None
    best = max(ok, key=lambda p: (p.recall, -p.threshold))
    return best.threshold, best.recall


def _summary(before: CalibrationReport, after: CalibrationReport, what: str) -> str:
    lines = [f"held out: {before.pairs} pairs, {before.positives} duplicates"]
    lines.append(
        f"{'precision >=':>12}  {'before: t':>9} {'recall':>6}  {what + ': t':>12} {'recall':>6}"
    )
    for target in (0.8, 0.9, 0.95, 0.98):
        cells = []
        for report in (before, after):
            got = best_recall_at(report, target)
            cells.append("        -      -" if got is None else f"{got[0]:9.4f} {got[1]:6.3f}")
        lines.append(f"{target:12.2f}  {cells[0]}  {cells[1]:>19}")
    for name, report in (("before", before), (what, after)):
        t = "none" if report.recommended is None else f"{report.recommended:.4f}"
        lines.append(f"certified at delta={report.delta:g} ({name}): {t}")
    return "\n".join(lines)


def _main(args: argparse.Namespace) -> int:
    dims = tuple(int(d) for d in args.matryoshka.split(",") if d.strip())
    config = TuneConfig(
        epochs=args.epochs,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        max_seq_length=args.max_seq_length,
        time_budget=args.time_budget,
        matryoshka_dims=dims,
        threads=args.threads,
        lora_rank=args.lora_rank,
    )
    pairs = [p for path in args.pairs for p in read_pairs(path, limit=args.limit)]
    result, before, after = run_tune(
        pairs,
        args.out,
        verifier=args.verifier,
        base=args.model,
        config=config,
        holdout=args.holdout,
        delta=args.delta,
        plot=not args.no_plot,
    )
    print(json.dumps(result.to_dict(), indent=1), file=sys.stderr)
    print(_summary(before, after, "verifier" if args.verifier else "tuned"))
    print(f"model: {args.out}", file=sys.stderr)
    return 0
