"""Threshold calibration and false hits on QQP and PAWS: static thresholds against adaptive ones.

    python bench/bench_calibration.py [--qqp-limit 20000] [--delta 0.01] [--regions 8]

For each data set (a seeded sample of 20,000 QQP pairs; all 8,000 PAWS-Wiki dev pairs), with
all-MiniLM-L6-v2 (embeddings cached in bench/.cache):

1. a calibration report on all pairs: docs/calibration_<set>.json and .png;
2. a fixed 50/50 split into *tune* and *measure* halves by a hash of each pair's group (pairs that
   share a sentence, directly or through other pairs, stay on one side);
3. on the tune half, the best static threshold meeting the bound (the lowest whose one-sided 95%
   Clopper-Pearson upper bound on the false-hit rate is <= delta) and an AdaptiveThresholds model
   (k-means regions of the query vectors; a region goes below the pooled threshold only where its
   own pairs certify it, and the bound is kept over everything served; k fixed in advance), each
   also with the lexical guard (vetoed tune pairs are left out when tuning);
4. on the measure half, each policy replayed through a real SemanticCache (store text_a, look up
   text_b, one scope per pair): hit rate, recall, false-hit rate with its 95% interval. The
   adaptive policy is measured frozen, and "online" with each served hit's label fed back.

Writes the "Calibration and false hits" section of docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np
from _pairs_cache import SOURCES, PairSet, load
from _report import ROOT, write_section

from semcache.embedders.base import Embedder
from semcache.matching.bounds import clopper_pearson, lowest_safe_threshold
from semcache.matching.guards import LexicalGuard
from semcache.measure.calibration import calibrate
from semcache.measure.pairs import read_pairs
from semcache.measure.plot import plot_report
from semcache.measure.replay import (
    ReplayResult,
    make_cache,
    replay,
    tune_adaptive,
    vetoed,
)

DOCS = ROOT / "docs"

# Written after reading the tables of the run committed with it; re-check after a re-run.
FINDINGS = """**What the tables show (honestly).**
- **delta = 1% is out of reach on both sets with this model**, for every policy: no threshold
  on any slice has a 95% upper bound <= 1%. QQP's labels are noisier than 1% even where no
  matcher can be wrong: of its 33 pairs whose texts are equal after normalisation, 5 are
  labelled non-duplicates (15%). PAWS is built from word-swapped sentences with nearly
  identical embeddings. Both policies therefore serve essentially nothing at 1% (a few
  exact-text hits), so at 1% there is no static threshold to compare against.
- **At the bounds the data allows (QQP, delta = 15%, 20%, 25%), the adaptive policy beats the
  best static threshold on hit rate while its measured false-hit rate stays under delta**, both
  tuned on one half and measured on the other: 9.3% vs 8.7% hits at 15% (false-hit rate 0.138),
  16.2% vs 15.4% at 20% (0.190), 23.8% vs 22.1% at 25% (0.233); with the lexical guard 12.0% vs
  10.3% at 15%. The gain is modest (3-17% more hits) because the k-means regions of QQP
  questions differ only a little in where duplicates start. At 25% the adaptive policy's own
  95% upper bound on the measure half is also under delta (0.2475); at 15% and 20% both
  policies' upper bounds land slightly over delta (a threshold certified at exactly delta on
  one sample sits near delta on another), so the point estimates, not the bounds, are under it.
- How the adaptive policy gets there: the pooled (static) threshold is the default; a region
  goes lower only where its own pairs certify a lower threshold at delta, and the other regions
  share the lowest threshold at which the bound still holds over everything served. It never
  serves a region below the static threshold on the strength of other regions' evidence. The
  sensitivity table shows k=4..32 all serve more than k=1; k=16/32 drift to delta or a hair
  over, k=8 was fixed before the runs.
- PAWS: the thresholds that meet 20% or 25% on the tune half (0.998+) do not hold on the other
  half (25-27% false hits) for any policy: on PAWS cosine similarity is not the signal.
- Online feedback recomputes the thresholds after each verdict (p95 decision latency of a few
  milliseconds, against ~0.1 ms frozen); its hit rate moves within noise of the frozen policy.
"""
TITLES = {"qqp": "Quora Question Pairs (QQP)", "paws": "PAWS-Wiki dev (adversarial)"}


def identical_texts(name: str) -> str:
    """How the whole source file labels pairs whose texts are equal after normalisation."""
    from semcache.keys import text_key

    pairs = read_pairs(SOURCES[name])
    same = [p for p in pairs if text_key(p.text_a) == text_key(p.text_b)]
    false = sum(not p.label for p in same)
    return (
        f"Label noise floor: of all {len(pairs):,} pairs in the file, {len(same)} have texts "
        f"that are equal after semcache's normalisation (`text_key`: Unicode NFKC, case, "
        f"whitespace, trailing punctuation); {false} of them are labelled non-equivalent"
        + (f" ({false / len(same):.0%})" if same else "")
        + ".\n\n"
    )


def report_files(ps: PairSet, embedder: Embedder, delta: float) -> str:
    report = calibrate(
        ps.similarity,
        ps.labels,
        delta=delta,
        source=f"{ps.name} ({len(ps.pairs)} pairs)",
        model=embedder.fingerprint.to_dict(),
    )
    report.write(DOCS / f"calibration_{ps.name}.json")
    plot_report(report, DOCS / f"calibration_{ps.name}.png")
    rows = []
    for t in (0.80, 0.85, 0.90, 0.925, 0.95, 0.975, 0.99):
        p = report.point(t)
        rows.append(
            f"| {p.threshold:.3f} | {p.hits} | {p.false_hits} | {p.precision:.4f} | "
            f"{p.recall:.4f} | {p.false_hit_upper:.4f} |"
        )
    rec = (
        f"recommended at delta = {delta:g}: **{report.recommended:.4f}**"
        if report.recommended is not None
        else f"**no threshold** has a false-hit upper bound <= {delta:g}"
    )
    return (
        f"All {len(ps.pairs):,} pairs ({int(ps.labels.sum()):,} duplicates); {rec}. "
        f"Plot `docs/calibration_{ps.name}.png`, report `docs/calibration_{ps.name}.json`.\n\n"
        "| threshold | hits | false hits | precision | recall | false-hit upper (95%) |\n"
        "|---:|---:|---:|---:|---:|---:|\n" + "\n".join(rows) + "\n"
    )


def row(r: ReplayResult, note: str = "") -> str:
    lo, hi = r.false_hit_ci
    return (
        f"| {r.policy}{note} | {r.hits} | {r.hit_rate:.4f} | {r.recall:.4f} | {r.false_hits} | "
        f"{r.false_hit_rate:.4f} | {lo:.4f}–{hi:.4f} | {r.false_hit_upper:.4f} |"
    )


def compare(ps: PairSet, embedder: Embedder, delta: float, regions: int) -> tuple[str, dict]:
    tune = ps.split()
    meas = ~tune
    pairs_t = [p for p, t in zip(ps.pairs, tune, strict=True) if t]
    pairs_m = [p for p, t in zip(ps.pairs, tune, strict=True) if not t]
    sims = ps.similarity
    guard = LexicalGuard()
    veto_t = vetoed([guard], pairs_t)
    results: list[ReplayResult] = []
    figures: dict[str, float | int | None] = {}
    for guarded in (False, True):
        guards = [guard] if guarded else []
        s_t = sims[tune].copy()
        if guarded:
            s_t[veto_t] = -1.0
        label = " + guard" if guarded else ""
        static = lowest_safe_threshold(s_t, ps.labels[tune], delta)
        t = 1.0 if static is None else static
        with make_cache(embedder, t, guards=guards) as cache:
            r = replay(cache, pairs_m, ps.a[meas], ps.b[meas], name=f"static {t:.4f}{label}")
        results.append(r)
        figures[f"static{label}"] = static
        for online in (False, True):
            model = tune_adaptive(ps.b[tune], s_t, ps.labels[tune], delta=delta, regions=regions)
            if not online:
                ths = model.thresholds()
                figures[f"adaptive thresholds{label}"] = [round(x, 4) for x in ths]
            name = f"adaptive k={regions}{' online' if online else ''}{label}"
            with make_cache(embedder, t, guards=guards, model=model) as cache:
                r = replay(cache, pairs_m, ps.a[meas], ps.b[meas], name=name, feedback=online)
            results.append(r)
        print(*(r.line() for r in results[-3:]), sep="\n", file=sys.stderr)
    # shadow mode: the plain static policy projected while serving nothing, with feedback
    t0 = figures["static"]
    with make_cache(embedder, 1.0 if t0 is None else float(t0), shadow=True) as cache:
        shadow = replay(cache, pairs_m, ps.a[meas], ps.b[meas], name="shadow", feedback=True)
        info = cache.info()
    shadow_line = (
        f"Shadow mode (the plain static threshold, nothing served, each would-be hit's label fed "
        f"back): {shadow.hits} hits served, projected hit rate {info.projected_hit_rate:.4f} "
        f"with {info.shadow_false_hits} projected false hits out of {info.shadow_hits} "
        "(the same decisions as the static row).\n"
    )
    table = (
        "| policy (tuned on the tune half) | hits | hit rate | recall | false hits | "
        "false-hit rate | 95% CI | upper (95%, one-sided) |\n"
        "|---|---:|---:|---:|---:|---:|---:|---:|\n" + "\n".join(row(r) for r in results) + "\n"
    )
    # sensitivity to k (array level: same decisions as the cache replay, without the guard)
    sens = []
    for k in (1, 4, 8, 16, 32):
        model = tune_adaptive(ps.b[tune], sims[tune], ps.labels[tune], delta=delta, regions=k)
        ths = np.array(model.thresholds())
        reg = [model.region(v) for v in ps.b[meas]]
        served = sims[meas] >= ths[reg]
        hits, false = int(served.sum()), int((served & ~ps.labels[meas]).sum())
        _, hi = clopper_pearson(false, hits)
        sens.append(
            f"| {k} | {hits} | {hits / meas.sum():.4f} | {false} | "
            f"{false / max(hits, 1):.4f} | {hi:.4f} |"
        )
    sens_table = (
        "| regions k | hits | hit rate | false hits | false-hit rate | 95% CI high |\n"
        "|---:|---:|---:|---:|---:|---:|\n" + "\n".join(sens) + "\n"
    )
    figures["tune"] = int(tune.sum())
    figures["measure"] = int(meas.sum())
    figures["results"] = [r.line() for r in results]  # type: ignore[assignment]
    body = (
        table
        + "\n"
        + shadow_line
        + "\nSensitivity to the number of regions (no guard; k=8 was fixed in advance, this "
        "table was not used to choose it):\n\n" + sens_table
    )
    return body, figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--qqp-limit", type=int, default=20000)
    parser.add_argument("--deltas", type=float, nargs="+", default=[0.01, 0.15, 0.2, 0.25])
    parser.add_argument("--regions", type=int, default=8)
    args = parser.parse_args()

    import torch

    torch.set_num_threads(1)
    from semcache import SentenceTransformerEmbedder

    embedder = SentenceTransformerEmbedder(batch_size=64, memo_size=0)
    sections = []
    summary = {}
    for name, limit in (("qqp", args.qqp_limit), ("paws", None)):
        ps = load(name, embedder, limit=limit)
        parts = [
            f"### {TITLES[name]}\n\n"
            + identical_texts(name)
            + report_files(ps, embedder, args.deltas[0])
        ]
        for delta in args.deltas:
            table, figures = compare(ps, embedder, delta, args.regions)
            summary[f"{name} {delta:g}"] = figures
            parts.append(
                f"\nTune {figures['tune']:,} pairs, measure {figures['measure']:,} pairs, "
                f"**delta = {delta:g}**:\n\n{table}"
            )
        sections.append("".join(parts))
    (ROOT / "bench" / ".cache").mkdir(parents=True, exist_ok=True)
    Path(ROOT / "bench" / ".cache" / "calibration_summary.json").write_text(
        json.dumps(summary, indent=1)
    )
    intro = (
        "`python bench/bench_calibration.py` (all-MiniLM-L6-v2). A hit is a pair whose "
        "similarity reaches the threshold; a false hit is a hit on a pair labelled not "
        "equivalent; the false-hit rate is false hits / hits (1 - precision) and recall is the "
        "hit rate on true duplicates. Bounds are Clopper-Pearson at 95%.\n\n" + FINDINGS
    )
    write_section("Calibration and false hits", intro + "\n" + "\n".join(sections))


if __name__ == "__main__":
    main()
