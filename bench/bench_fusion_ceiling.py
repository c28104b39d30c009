"""How much can fusion give on the shared sets? A ceiling and a learned fusion (writes
"Fusion: learned weights and the ceiling").

On the cached per-query runs of bench/_fusion_runs.py:
- *fixed weights*: min-max fusion at BM25 weight 0.0, 0.1, ..., 1.0, the best one per set;
- *per-query oracle*: for each query the best of those eleven weights, chosen with its
  judgements: a ceiling for any fusion that sets one BM25 weight per query (agreement gating,
  score-distribution weights, a learned gate), not a method;
- *learned*: a linear scorer over six per-chunk features, every BM25 feature multiplied by the
  query's top-10 agreement (so no agreement leaves dense's ranking), trained with a pairwise
  logistic loss (judged against unjudged chunks of a query) on one set's three variants and
  scored on the other's, both ways (leave one set out, as for the shipped fusion).

    OMP_NUM_THREADS=1 python bench/bench_fusion_ceiling.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _fusion_runs import load_runs
from _fusion_study import Variant, doc_of, margins, per_query, variants
from _report import write_section

from semcache.measure.metrics import ndcg_at_k
from semcache.measure.retrieval import to_documents
from semcache.retrieval.adaptive import AgreementFusion, agreement
from semcache.retrieval.fusion import MinMax, Ranking, WeightedFusion

SETS = ("beir-scifact", "msmarco-trecdl-subset-5k")
WEIGHTS = np.round(np.linspace(0.0, 1.0, 11), 1)
RRF_K = 20.0
L2 = 0.01  # the middle of 1e-3, 1e-2, 1e-1; all three are printed
NEGATIVES = 60  # unjudged chunks per query in the pairwise loss (best-ranked first)


def features(sparse: Ranking, dense: Ranking) -> tuple[list[str], np.ndarray]:
    """Per chunk: dense reciprocal rank and min-max score, and four agreement-gated BM25 terms."""
    ids = list(dict.fromkeys([c for c, _ in dense] + [c for c, _ in sparse]))
    rank_s = {c: i for i, (c, _) in enumerate(sparse, 1)}
    rank_d = {c: i for i, (c, _) in enumerate(dense, 1)}
    mm_s = dict(zip([c for c, _ in sparse], MinMax()([s for _, s in sparse]), strict=True))
    mm_d = dict(zip([c for c, _ in dense], MinMax()([s for _, s in dense]), strict=True))
    ag = agreement(dense, sparse, 10)
    rows = []
    for c in ids:
        rr_s = RRF_K / (RRF_K + rank_s[c]) if c in rank_s else 0.0
        rr_d = RRF_K / (RRF_K + rank_d[c]) if c in rank_d else 0.0
        s, d = mm_s.get(c, 0.0), mm_d.get(c, 0.0)
        rows.append([rr_d, d, rr_s * ag, s * ag, rr_s * ag * ag, s * ag * ag])
    return ids, np.array(rows)


def built(v: Variant) -> list[tuple[str, list[str], np.ndarray, np.ndarray]]:
    out = []
    for q, sparse, dense in v.runs:
        ids, x = features(sparse, dense)
        y = np.array([1.0 if v.qrels[q].get(doc_of(c), 0) > 0 else 0.0 for c in ids])
        out.append((q, ids, x, y))
    return out


def train(data: list, l2: float, steps: int = 300, lr: float = 5.0) -> np.ndarray:
    """Pairwise logistic loss, each query weighted equally; gradient descent from dense alone."""
    diffs, weights = [], []
    for _q, _ids, x, y in data:
        pos, neg = np.where(y > 0)[0], np.where(y == 0)[0][:NEGATIVES]
        if len(pos) and len(neg):
            d = (x[pos][:, None, :] - x[neg][None, :, :]).reshape(-1, x.shape[1])
            diffs.append(d)
            weights.append(np.full(len(d), 1.0 / len(d)))
    d, wt = np.concatenate(diffs), np.concatenate(weights)
    wt /= wt.sum()
    w = np.zeros(d.shape[1])
    w[0] = 1.0
    for _ in range(steps):
        g = -((wt / (1.0 + np.exp(d @ w)))[:, None] * d).sum(0) + l2 * w
        w -= lr * g
    return w


def scored(v: Variant, data: list, w: np.ndarray) -> np.ndarray:
    out = []
    for q, ids, x, _y in data:
        ranking = sorted(zip(ids, (x @ w).tolist(), strict=True), key=lambda t: -t[1])
        out.append(ndcg_at_k(to_documents(ranking, doc_of, 100), v.qrels[q], 10))
    return np.array(out)


def main() -> int:
    sets = {n: variants(load_runs(n)) for n in SETS}
    lines = [
        "| set | BM25 | dense | best fixed BM25 weight: margin | per-query oracle weight: "
        "margin | AgreementFusion() margin |",
        "|---|---:|---:|---|---:|---:|",
    ]
    for n in SETS:
        v = sets[n][0]
        m = np.array([
            per_query(v.runs, v.qrels,
                      lambda b, d, w=w: WeightedFusion(weights=(w, 1 - w),
                                                       normalization=MinMax()).fuse([b, d]))
            for w in WEIGHTS
        ])  # fmt: skip
        best = v.best.mean()
        i = int(np.argmax(m.mean(1)))
        lines.append(
            f"| {n} | {v.bm25.mean():.4f} | {v.dense.mean():.4f} | {WEIGHTS[i]:.1f}: "
            f"{m[i].mean() - best:+.4f} | {m.max(0).mean() - best:+.4f} "
            f"| {margins(AgreementFusion(), [v])[0][0]:+.4f} |"
        )
        print(lines[-1], flush=True)
    data = {n: [built(v) for v in vs] for n, vs in sets.items()}
    learned = [
        "| trained on | l2 | margins there (original, 50% / 30% words) | held out on "
        "| margins there | AgreementFusion() there |",
        "|---|---:|---|---|---|---|",
    ]
    for l2 in (1e-3, L2, 1e-1):
        for fit, test in ((SETS[0], SETS[1]), (SETS[1], SETS[0])):
            w = train([q for b in data[fit] for q in b], l2)
            there = [scored(v, b, w).mean() - v.best.mean()
                     for v, b in zip(sets[fit], data[fit], strict=True)]  # fmt: skip
            held = [scored(v, b, w).mean() - v.best.mean()
                    for v, b in zip(sets[test], data[test], strict=True)]  # fmt: skip
            af = [margins(AgreementFusion(), [v])[0][0] for v in sets[test]]
            learned.append(
                f"| {fit} | {l2:g} | {', '.join(f'{x:+.4f}' for x in there)} | {test} "
                f"| {', '.join(f'{x:+.4f}' for x in held)} "
                f"| {', '.join(f'{x:+.4f}' for x in af)} |"
            )
            print(learned[-1], flush=True)
    body = "\n".join(
        [
            "Command: `OMP_NUM_THREADS=1 python bench/bench_fusion_ceiling.py` (on the cached "
            "runs of `bench/_fusion_runs.py`). Margin = mean nDCG@10 minus the better single "
            "retriever's on that set. "
            + (__doc__ or "").split("\n\n")[1].replace("\n  ", " ").replace(":\n-", ":\n\n-"),
            "",
            *lines,
            "",
            *learned,
            "",
            NOTE,
        ]
    )
    write_section("Fusion: learned weights and the ceiling", body)
    return 0


# Written after reading the run committed with it; re-check after a re-run.
NOTE = """\
**What this shows.** On MS MARCO the best fixed BM25 weight gains +0.0044 over dense, and even
an oracle that picks, per query and with its judgements, the best of eleven weights gains
+0.0435: the +0.02 target is half of a ceiling that no gate without judgements reaches, on 43
queries (intervals about +-0.01). On SciFact a fixed 0.5/0.5 gains +0.049, but that weight is the
one that loses 7-12 points once BM25 is weak ("Fusion settings"). The learned scorer does not do
better held out: trained on SciFact it gains +0.0085 on MS MARCO (`AgreementFusion()` -0.0003)
and stays within 0.005 on the weak-BM25 variants, but trained on MS MARCO it gains +0.005 on
SciFact (`AgreementFusion()` +0.018). With two sets, no direction reaches +0.02 on the other, so
`AgreementFusion()` stays the default and no learned fusion ships."""

if __name__ == "__main__":
    sys.exit(main())
