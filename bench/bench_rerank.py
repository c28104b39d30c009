"""The reranking stage's cost and gain on both shared sets (writes "Retrieval reranker").

The scorer is :class:`~semcache.retrieval.rerank.CrossEncoderScorer` over the adapter that
bench/train_reranker.py trains (LoRA on the packaged MiniLM plus a one-logit head, trained on the
*fit* queries of SciFact's train qrels). SciFact's judged queries split three ways by a hash of
the query id (:func:`split`): fit, validate (the blend with the fused order, ``fused_weight``, is
chosen on them) and measure (reported here, never trained or chosen on); MS MARCO is never
trained or chosen on.

    OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 python bench/train_reranker.py
    OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 python bench/bench_rerank.py
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _fusion_runs import CACHE, DATA, load_runs
from _report import write_section

from semcache.measure.beir import load_beir
from semcache.measure.metrics import ndcg_at_k, paired_bootstrap, percentile
from semcache.measure.retrieval import to_documents
from semcache.retrieval.adaptive import AgreementFusion
from semcache.retrieval.rerank import CrossEncoderScorer, blend

DEPTH = 20
MAX_LENGTH = 256  # tokens per (query, title + abstract) pair
WEIGHTS = tuple(round(0.1 * i, 1) for i in range(10))  # fused_weight grid
OUT = CACHE / "reranker"
# Written after reading the run committed with it; re-check after a re-run.
NOTE = """\
**What this shows.** A cross-encoder trained here on 277 SciFact queries is a weak judge of
relevance on its own: alone it is 0.044-0.153 below the fused order on SciFact and 0.040-0.054
below on MS MARCO. Blended with the fused order (the fused rank weighted 0.7-0.9) it adds
+0.007 to +0.010 on SciFact's measure queries (the interval of the base-model run is above zero,
the verifier-start run's spans it) and +0.002 on MS MARCO (intervals span zero), for about 0.4-0.9 s
per query on one thread: it costs far more than it gives, so the stage stays **off by
default**. Starting from the shipped verifier's adapter (a cross-encoder that already compares
two texts) learned more in the same time than starting from the base model (validation best
0.680 against 0.661), so that adapter ships as `default_reranker()` (1.6 MB, blend 0.7, chosen
on validation) for a service whose latency budget has the room. What limits it is the training
here: 277 judged queries and 30 minutes of one CPU thread; `ScorerReranker` takes any stronger
cross-encoder you have (`CrossEncoderReranker` wraps a sentence-transformers one)."""


def _bucket(qid: str, salt: str) -> int:
    return int(hashlib.sha256(f"{salt}{qid}".encode()).hexdigest()[:8], 16) % 100


def split(qid: str) -> str:
    """SciFact query -> "fit" (35%), "validate" (15%) or "measure" (50%), by hashes of its id.

    "measure" is the half the first reranker run held out (the same hash), so no run has
    trained on it."""
    if int(hashlib.sha256(qid.encode()).hexdigest()[:8], 16) % 2 == 1:
        return "measure"
    return "fit" if _bucket(qid, "rerank-validate/") < 70 else "validate"


def candidates(name: str) -> tuple[list[tuple[str, str, list[str]]], dict, dict[str, str]]:
    """Per query: (qid, query text, fused top-20 document ids), the qrels and document texts."""
    runs = load_runs(name)
    ds = load_beir(DATA / name)
    texts = {d.id: f"{d.title} {d.text}".strip() for d in ds.corpus}
    fusion = AgreementFusion()
    out = []
    for r in runs["queries"]:
        b = [(c, s) for c, s in r["bm25"]]
        d = [(c, s) for c, s in r["dense"]]
        docs = to_documents(fusion.fuse([b, d]), lambda c: c.rsplit("#", 1)[0], DEPTH)
        out.append((r["qid"], ds.queries[r["qid"]], docs))
    return out, runs["qrels"], texts


def score_all(scorer: CrossEncoderScorer, cands: list, texts: dict[str, str]) -> tuple[list, list]:
    """The scorer's scores of each query's candidates, and the milliseconds each query took."""
    scores, ms = [], []
    for n, (_qid, query, docs) in enumerate(cands, 1):
        t = time.perf_counter()
        scores.append(scorer.score(query, [texts[d] for d in docs]))
        ms.append((time.perf_counter() - t) * 1000)
        if n % 50 == 0:
            print(f"  scored {n}/{len(cands)} queries", file=sys.stderr, flush=True)
    return scores, ms


def ndcgs(cands: list, scores: list | None, qrels: dict, weight: float = 0.0) -> list[float]:
    """nDCG@10 per query of the reranked order (of the fused order with ``scores`` None)."""
    out = []
    for n, (qid, _q, docs) in enumerate(cands):
        order = docs if scores is None else [docs[i] for i, _ in blend(scores[n], weight)]
        out.append(ndcg_at_k(order, qrels[qid], 10))
    return out


def scores_for(scorer: CrossEncoderScorer, sha: str, name: str, cands: list,
               texts: dict[str, str]) -> tuple[list, list]:  # fmt: skip
    """:func:`score_all`, cached per adapter and query set under bench/.cache/reranker/scores/."""
    path = OUT / "scores" / f"{sha[:12]}-{name}.json"
    if path.exists():
        data = json.loads(path.read_text())
        return data["scores"], data["ms"]
    scores, ms = score_all(scorer, cands, texts)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"scores": scores, "ms": ms}))
    return scores, ms


def evaluate(directory: Path, fp32: bool, sets: dict) -> tuple[list[str], str]:
    """Table rows and a description line for the adapter trained into ``directory``."""
    from semcache.embedders.adapter import file_sha256

    adapter = directory / "adapter.safetensors"
    record_path = directory / "semcache_tuning.json"
    record = json.loads(record_path.read_text()) if record_path.exists() else {}
    result, config = record.get("result", {}), record.get("config", {})
    start = "the shipped verifier's adapter" if config.get("resume_from") else "the base model"
    label = f"from {start}"
    sha = file_sha256(adapter)
    t = time.perf_counter()
    scorer = CrossEncoderScorer.load(adapter, max_length=MAX_LENGTH, int8=not fp32)
    load_s = time.perf_counter() - t
    (val, sci_qrels, sci_texts), held, (msm, msm_qrels, msm_texts) = (
        sets["validate"],
        sets["measure"],
        sets["msmarco"],
    )
    val_scores, _ = scores_for(scorer, sha, "validate", val, sci_texts)
    fused_val = float(np.mean(ndcgs(val, None, sci_qrels)))
    by_weight = {w: float(np.mean(ndcgs(val, val_scores, sci_qrels, w))) for w in WEIGHTS}
    best = max(by_weight.values())
    chosen = max(w for w, v in by_weight.items() if v >= best - 1e-9)  # ties: trust fusion more
    print(f"{label}: validate fused {fused_val:.4f}; " + ", ".join(
        f"w={w}: {v:.4f}" for w, v in by_weight.items()), flush=True)  # fmt: skip
    rows = []
    for name, title, cands, qrels, texts in (
        ("measure", "beir-scifact (measure part)", held, sci_qrels, sci_texts),
        ("msmarco", "msmarco-trecdl-subset-5k (test)", msm, msm_qrels, msm_texts),
    ):
        scores, ms = scores_for(scorer, sha, name, cands, texts)
        before = ndcgs(cands, None, qrels)
        for what, w in (("reranker alone", 0.0), (f"blend, fused_weight {chosen}", chosen)):
            after = ndcgs(cands, scores, qrels, w)
            diff = [a - c for a, c in zip(after, before, strict=True)]
            lo, hi = paired_bootstrap(diff)
            rows.append(
                f"| {label} | {title} | {what} | {len(cands)} | {np.mean(before):.4f} "
                f"| {np.mean(after):.4f} | {np.mean(diff):+.4f} ({lo:+.4f} to {hi:+.4f}) "
                f"| {percentile(ms, 50):.0f} | {percentile(ms, 95):.0f} |"
            )
            print(rows[-1], flush=True)
    described = (
        f"- **{label}** (`{directory.resolve().relative_to(CACHE.parent.parent)}`, "
        f"{adapter.stat().st_size / 1e6:.2f} MB): trained "
        f"{result.get('seconds', 0) / 60:.0f} min on one thread, {result.get('pairs_seen', '?')} "
        f"pairs seen ({result.get('pairs', '?')} per epoch, final loss "
        f"{result.get('final_loss', float('nan')):.3f}); loads in {load_s:.1f} s; validate: "
        f"fused {fused_val:.4f}, by fused_weight "
        + ", ".join(f"{w}: {v:.4f}" for w, v in by_weight.items())
        + f"; chosen {chosen}."
    )
    return rows, described


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--adapters", type=Path, nargs="+", default=[OUT], help="training output folders"
    )
    parser.add_argument("--fp32", action="store_true", help="the fp32 ONNX model, not int8")
    args = parser.parse_args()
    sci, sci_qrels, sci_texts = candidates("beir-scifact")
    msm, msm_qrels, msm_texts = candidates("msmarco-trecdl-subset-5k")
    sets = {
        "validate": ([c for c in sci if split(c[0]) == "validate"], sci_qrels, sci_texts),
        "measure": [c for c in sci if split(c[0]) == "measure"],
        "msmarco": (msm, msm_qrels, msm_texts),
    }
    fit = sum(split(c[0]) == "fit" for c in sci)
    rows, described = [], []
    for directory in args.adapters:
        r, d = evaluate(directory, args.fp32, sets)
        rows += r
        described.append(d)
    folders = " ".join(str(d.resolve().relative_to(CACHE.parent.parent)) for d in args.adapters)
    body = [
        "Commands: `OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 python bench/train_reranker.py "
        "[--resume semcache/embedders/adapters/verifier.safetensors --out DIR]`, then "
        f"`OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 python bench/bench_rerank.py --adapters {folders}` "
        "(scores and their timings are cached per adapter under bench/.cache/reranker/scores; "
        "a rerun only rewrites this section).",
        "",
        f"Reranker: `ScorerReranker(CrossEncoderScorer)` over the fused top {DEPTH} documents "
        "(agreement-gated fusion, the default). The scorer is the verifier's kind of model: "
        "the packaged all-MiniLM-L6-v2 reads `[CLS] query [SEP] title + text [SEP]` "
        f"({MAX_LENGTH} tokens) with a LoRA adapter (rank 16) and a one-logit head, on ONNX "
        f"Runtime ({'fp32' if args.fp32 else 'int8'}). Trained (binary cross-entropy, "
        f"`tune_verifier(swap_roles=False)`) on the {fit} *fit* queries of SciFact's train "
        "qrels: judged documents against unjudged ones from each query's fused top 20. "
        "`fused_weight` (the rank blend with the fused order) is chosen on the "
        f"{len(sets['validate'][0])} *validate* queries; the rows are the "
        f"{len(sets['measure'])} *measure* queries and MS MARCO, never trained or chosen on. "
        "'added p50' is the scorer's time per query (one batch of "
        f"{DEPTH} pairs, one thread, on the shared machine), on top of hybrid search.",
        "",
        *described,
        "",
        "| reranker | set | order | queries | fused nDCG@10 | reranked nDCG@10 | gain (95% CI) "
        "| added p50 ms | added p95 ms |",
        "|---|---|---|---:|---:|---:|---|---:|---:|",
        *rows,
        "",
        NOTE,
    ]
    write_section("Retrieval reranker", "\n".join(body))
    print("\n".join(body))
    return 0


if __name__ == "__main__":
    sys.exit(main())
