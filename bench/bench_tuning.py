"""Tuned matcher and verifier on QQP and PAWS: train on the tune halves, measure on the others.

    python bench/bench_tuning.py train embedder
    python bench/bench_tuning.py train verifier --epochs 2 --threads 2
    python bench/bench_tuning.py report

The split is the calibration bench's (bench/_pairs_cache.py ``PairSet.split``: 50/50 by a hash
of each pair's group, so no sentence is on both sides). ``train`` fits on a 12,000-pair sample of
the QQP tune half plus three copies of the PAWS tune half (its non-paraphrases are the hard
negatives) and writes the model to bench/.cache/tuned-<kind>
(never committed). ``report`` measures, on the measure halves only: the calibration curves of the
untuned and tuned embedders, the verifier on its own and behind a similarity band, the PAWS
false-hit rate at the default settings, the delta = 1% question, and the hit-path latency with
and without the verifier. It writes the "Tuned matcher and verifier" section of
docs/BENCHMARKS.md and docs/tuning_*.png.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import sys
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np
from _pairs_cache import CACHE, SOURCES, PairSet, load
from _report import ROOT
from tqdm import tqdm

from semcache.measure.pairs import LabelledPair, read_pairs
from semcache.policy import DEFAULT_MIN_SIMILARITY

DOCS = ROOT / "docs"
MODELS = {"embedder": CACHE / "tuned-embedder", "verifier": CACHE / "tuned-verifier"}


def halves(name: str) -> tuple[list[LabelledPair], list[LabelledPair]]:
    """(tune, measure) pairs of a data set, split exactly as the calibration bench splits them."""
    pairs = read_pairs(SOURCES[name])
    empty = np.empty((0, 0), dtype=np.float32)
    ps = PairSet(name, pairs, np.arange(len(pairs)), empty, empty, np.empty(0, dtype=bool))
    tune = ps.split()
    return (
        [p for p, t in zip(pairs, tune, strict=True) if t],
        [p for p, t in zip(pairs, tune, strict=True) if not t],
    )


def training_pairs(qqp_limit: int | None, paws_repeat: int) -> list[LabelledPair]:
    """QQP tune half (optionally a seeded sample) + the PAWS tune half ``paws_repeat`` times."""
    qqp, _ = halves("qqp")
    paws, _ = halves("paws")
    rng = random.Random(0)
    if qqp_limit is not None and qqp_limit < len(qqp):
        qqp = rng.sample(qqp, qqp_limit)
    pairs = qqp + paws * paws_repeat
    rng.shuffle(pairs)
    return pairs


def train(
    kind: str,
    budget: float,
    qqp_limit: int | None,
    paws_repeat: int,
    seq: int,
    threads: int,
    lr: float | None,
    epochs: int,
    base: Path | None,
) -> None:
    from semcache.measure.tuning import TuneConfig, tune_embedder, tune_verifier

    pairs = training_pairs(qqp_limit, paws_repeat)
    print(f"training the {kind} on {len(pairs)} pairs ({sum(p.label for p in pairs)} positive)",
          file=sys.stderr)  # fmt: skip
    config = TuneConfig(
        epochs=epochs,
        batch_size=32,
        max_seq_length=seq,
        time_budget=budget,
        threads=threads,
        matryoshka_dims=(256, 128) if kind == "embedder" else (),
        learning_rate=lr,
    )
    fit = tune_embedder if kind == "embedder" else tune_verifier
    out = MODELS[kind]
    if base is not None and base.resolve() == out.resolve():
        raise SystemExit(f"--base {base} is the output directory; copy it aside first")
    result = fit(pairs, out, base=None if base is None else str(base), config=config)
    print(json.dumps(result.to_dict(), indent=1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="stage", required=True)
    t = sub.add_parser("train")
    t.add_argument("kind", choices=sorted(MODELS))
    t.add_argument("--budget", type=float, default=3000.0, help="seconds of training")
    t.add_argument("--qqp-limit", type=int, default=12000,
                   help="sample of the QQP tune half (0: all of it)")  # fmt: skip
    t.add_argument("--paws-repeat", type=int, default=3, help="copies of the PAWS tune half")
    t.add_argument("--max-seq-length", type=int, default=128)
    t.add_argument("--lr", type=float, default=None, help="peak learning rate (library default)")
    t.add_argument("--epochs", type=int, default=1)
    t.add_argument("--threads", type=int, default=1)
    t.add_argument("--base", type=Path, default=None, help="continue from this model directory")
    r = sub.add_parser("report")
    r.add_argument("--qqp-limit", type=int, default=0,
                   help="a sample of the QQP file to measure on (0: all)")  # fmt: skip
    r.add_argument("--paws-limit", type=int, default=None)
    r.add_argument("--latency-only", action="store_true", help="re-measure latency, re-render")
    r.add_argument("--models", type=Path, default=CACHE, help="where tuned-embedder/verifier are")
    args = parser.parse_args()
    if args.stage == "train":
        train(
            args.kind,
            args.budget,
            args.qqp_limit or None,
            args.paws_repeat,
            args.max_seq_length,
            args.threads,
            args.lr,
            args.epochs,
            args.base,
        )
    else:
        MODELS.update({k: args.models / v.name for k, v in MODELS.items()})
        if args.latency_only:
            relatency()
        else:
            report(args.qqp_limit or None, args.paws_limit)


# -- report ---------------------------------------------------------------------------------------

PRECISION = 0.95
DEFAULT_FLOOR = DEFAULT_MIN_SIMILARITY  # the library's default threshold
TITLES = {"qqp": "QQP", "paws": "PAWS-Wiki"}


@dataclass
class Measured:
    """One data set's measure half: labels, guard vetoes, similarities and verifier scores."""

    name: str
    pairs: list[LabelledPair]
    labels: np.ndarray
    veto: np.ndarray
    base: np.ndarray
    tuned: np.ndarray
    score: np.ndarray
    ps: PairSet  # the whole set, untuned vectors (the adaptive model is fit on its tune half)


def measure_half(name: str, limit: int | None, tuned_embedder, verifier) -> Measured:
    from semcache.embedders.sentence_transformers import SentenceTransformerEmbedder
    from semcache.matching.guards import LexicalGuard
    from semcache.measure.replay import vetoed

    ps = load(name, SentenceTransformerEmbedder(batch_size=64, memo_size=0), limit=limit)
    meas = ~ps.split()
    pairs = [p for p, m in zip(ps.pairs, meas, strict=True) if m]
    models = "".join((MODELS[k] / "semcache_tuning.json").read_text() for k in sorted(MODELS))
    tag = f"{name}_{len(pairs)}_{hashlib.blake2b(models.encode(), digest_size=6).hexdigest()}"
    path = CACHE / f"tuning_measure_{tag}.npz"
    if path.exists():
        with np.load(path, allow_pickle=False) as z:
            tuned, score = z["tuned"], z["score"]
    else:
        from semcache.measure.replay import embed_pairs

        a, b = embed_pairs(tuned_embedder, pairs, batch=128)
        tuned = np.einsum("ij,ij->i", a, b)
        # the replay stores text_a and looks text_b up: the verifier sees (query, cached)
        score = np.empty(len(pairs), dtype=np.float32)
        step = 256
        for s in tqdm(range(0, len(pairs), step), desc=f"verifier {name}", unit="chunk"):
            chunk = pairs[s : s + step]
            score[s : s + len(chunk)] = verifier.score([(p.text_b, p.text_a) for p in chunk])
        np.savez(path, tuned=tuned, score=score)
    return Measured(
        name=name,
        pairs=pairs,
        labels=ps.labels[meas],
        veto=vetoed([LexicalGuard()], pairs),
        base=ps.similarity[meas],
        tuned=tuned,
        score=score,
        ps=ps,
    )


def rates(served: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    from semcache.matching.bounds import clopper_pearson_upper

    hits = int(served.sum())
    false = int((served & ~labels).sum())
    return {
        "hits": hits,
        "false": false,
        "hit_rate": hits / len(labels),
        "precision": 1 - false / hits if hits else 1.0,
        "recall": (hits - false) / max(int(labels.sum()), 1),
        "fh_rate": false / hits if hits else 0.0,
        "fh_upper": clopper_pearson_upper(false, hits),
    }


def curve(score: np.ndarray, eligible: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, ...]:
    """Precision and recall of serving eligible pairs with score >= each distinct score."""
    s = np.where(eligible, score, -np.inf)
    order = np.argsort(-s, kind="stable")
    s, y = s[order], labels[order]
    keep = np.isfinite(s)
    s, y = s[keep], y[keep]
    tp, fp = np.cumsum(y), np.cumsum(~y)
    last = np.append(s[1:] != s[:-1], True)
    tp, fp, s = tp[last], fp[last], s[last]
    return s, tp / np.maximum(tp + fp, 1), tp / max(int(labels.sum()), 1), tp + fp


def best_at(score, eligible, labels, precision=PRECISION) -> tuple[float, float, int] | None:
    """(cut, recall, hits) with the most recall at >= precision (and >= 20 hits), or None."""
    cut, prec, rec, hits = curve(score, eligible, labels)
    ok = (prec >= precision) & (hits >= 20)
    if not ok.any():
        return None
    i = int(np.argmax(np.where(ok, rec, -1)))
    return float(cut[i]), float(rec[i]), int(hits[i])


def pipelines(m: Measured):
    """(settings, score, eligible) of every pipeline in the grid: floor -> guard -> verifier on
    [floor, high), with score 2.0 for candidates served above the band without the verifier."""
    for emb, sims in (("untuned", m.base), ("tuned", m.tuned)):
        for floor in (0.6, 0.7, 0.8, 0.9):
            for high in (0.95, 0.98, 0.99, 1.0):
                for blend in (0.0, 0.5):
                    decision = (1 - blend) * m.score + blend * sims
                    yield (
                        {"embedder": emb, "floor": floor, "high": high, "blend": blend},
                        np.where(sims >= high, 2.0, decision),
                        (sims >= floor) & ~m.veto,
                    )


def certified_at(score, eligible, labels, precision=PRECISION) -> tuple[float, float, int] | None:
    """(cut, recall, hits) of the lowest cut whose one-sided 95% Clopper-Pearson upper bound on
    the false-hit rate is <= 1 - precision (what ``semcache calibrate`` certifies), or None."""
    from semcache.matching.bounds import lowest_safe_threshold

    if not eligible.any():
        return None
    cut = lowest_safe_threshold(score[eligible], labels[eligible], 1 - precision)
    if cut is None:
        return None
    r = rates(eligible & (score >= cut), labels)
    return cut, r["recall"], r["hits"]


#: How an operating point is chosen on half A: the most recall among the cuts that meet the
#: precision as measured (at least 20 hits), or among the cuts whose bound certifies it.
RULES = {"measured": best_at, "certified": certified_at}


def held_out(m: Measured) -> dict[str, object]:
    """Precision >= 0.95 without reading the operating point off the data it is scored on.

    The measure pairs are halved (A: even positions, B: odd). Under each rule of RULES, the
    setting and cut with the most recall on one half are applied, unchanged, to the other; both
    ways round (A -> B and B -> A). Beside each, the untuned static threshold's best recall at
    that precision read off the scoring half itself (generous to it)."""
    even = np.arange(len(m.labels)) % 2 == 0
    everything = np.ones(len(m.labels), dtype=bool)
    families = {
        "untuned MiniLM, static threshold": [({}, m.base, everything)],
        "untuned + lexical guard": [({}, m.base, ~m.veto)],
        "tuned + lexical guard": [({}, m.tuned, ~m.veto)],
        "best pipeline of the grid": list(pipelines(m)),
    }
    out: dict[str, object] = {"pairs_a": int(even.sum()), "pairs_b": int((~even).sum())}
    for fold, (pick_on, score_on) in {"A -> B": (even, ~even), "B -> A": (~even, even)}.items():
        base = best_at(m.base[score_on], everything[score_on], m.labels[score_on])
        rows: dict[str, object] = {"untuned_read_off": base}
        for rule, pick in RULES.items():
            table: dict[str, object] = {}
            for name, members in families.items():
                chosen = None
                for key, score, eligible in members:
                    best = pick(score[pick_on], eligible[pick_on], m.labels[pick_on])
                    if best is not None and (chosen is None or best[1] > chosen[1][1]):
                        chosen = (key, best, score, eligible)
                if chosen is None:
                    table[name] = None
                    continue
                key, (cut, recall, _), score, eligible = chosen
                scored = rates((eligible & (score >= cut))[score_on], m.labels[score_on])
                table[name] = {"settings": key, "cut": cut, "recall_chosen": recall,
                               "scored": scored}  # fmt: skip
            rows[rule] = table
        out[fold] = rows
    return out


def pipeline(m: Measured, sims: np.ndarray, floor: float, high: float, min_score: float,
             blend: float = 0.0) -> np.ndarray:  # fmt: skip
    """What choose() serves: floor -> guard -> band verifier (one candidate per lookup)."""
    decision = (1 - blend) * m.score + blend * sims  # VerifierBand.decision
    return (sims >= floor) & ~m.veto & ((sims >= high) | (decision >= min_score))


def delta_check(score: np.ndarray, eligible: np.ndarray, labels: np.ndarray,
                delta: float = 0.01) -> dict[str, object]:  # fmt: skip
    """Lowest cut whose 95% upper bound is <= delta on half A (even positions), applied to B."""
    from semcache.matching.bounds import lowest_safe_threshold

    a = np.arange(len(labels)) % 2 == 0
    s = np.where(eligible, score, -np.inf)
    pick = a & eligible
    t = lowest_safe_threshold(s[pick], labels[pick], delta) if pick.any() else None
    whole = lowest_safe_threshold(s[eligible], labels[eligible], delta) if eligible.any() else None
    out: dict[str, object] = {"cut_on_a": t, "cut_on_all": whole}
    if t is not None:
        out["on_b"] = rates((s >= t)[~a], labels[~a])
    if whole is not None:
        out["on_all"] = rates(s >= whole, labels)
    # how clean the most confident hits are: false hits among the top 200 by score
    top = np.argsort(-s, kind="stable")[:200]
    out["false_in_top200"] = int((~labels[top]).sum())
    return out


def adaptive_with_verifier(m: Measured, delta: float = 0.01) -> dict[str, object]:
    """AdaptiveThresholds (k=8, fit on the tune half at delta) + guard + the verifier on
    candidates within ``verify_margin`` of their threshold, replayed through a real cache."""
    from semcache.backends import MemoryBackend
    from semcache.cache import SemanticCache
    from semcache.embedders.sentence_transformers import SentenceTransformerEmbedder
    from semcache.matching.adaptive import AdaptiveConfig, AdaptiveThresholds, kmeans_centroids
    from semcache.matching.guards import LexicalGuard
    from semcache.measure.replay import replay
    from semcache.policy import CachePolicy

    tune = m.ps.split()
    meas = ~tune
    verdict = {(p.text_b, p.text_a): float(x) for p, x in zip(m.pairs, m.score, strict=True)}

    def confirms(query: str, cand) -> bool:  # the verifier's own verdicts, precomputed
        return verdict.get((query, cand.entry.prompt), 0.0) >= 0.5

    embedder = SentenceTransformerEmbedder(memo_size=0)
    out: dict[str, object] = {}
    for margin in (0.05, 0.1):
        cents = kmeans_centroids(m.ps.b[tune], 8, seed=0)
        model = AdaptiveThresholds(
            AdaptiveConfig(delta=delta, initial_threshold=1.0, verify_margin=margin),
            centroids=cents,
            verifier=confirms,
        ).fit(m.ps.b[tune], m.ps.similarity[tune], m.ps.labels[tune])
        floor = max(-1.0, min(model.thresholds()) - margin)  # the verifier sees both sides
        with SemanticCache(
            embedder=embedder,
            backend=MemoryBackend(),
            policy=CachePolicy(min_similarity=floor, max_entries=None, candidates=1),
            guards=[LexicalGuard()],
            thresholds=model,
        ) as cache:
            r = replay(cache, m.pairs, m.ps.a[meas], m.ps.b[meas], name=f"margin {margin}")
        out[f"margin {margin}"] = {
            "hits": r.hits, "false": r.false_hits, "hit_rate": r.hit_rate, "recall": r.recall,
            "fh_rate": r.false_hit_rate, "fh_upper": r.false_hit_upper, "verified": model.verified,
        }  # fmt: skip
    return out


def latency(verifier, pairs: list[LabelledPair], band) -> dict[str, float]:
    """p50/p95 of real lookups (embed, search, guards, verifier) on hits, without/with it."""
    import time

    from semcache.backends import MemoryBackend
    from semcache.cache import SemanticCache
    from semcache.embedders.sentence_transformers import SentenceTransformerEmbedder
    from semcache.keys import Scope
    from semcache.matching.verifier import CrossEncoderVerifier
    from semcache.policy import CachePolicy

    embedder = SentenceTransformerEmbedder(memo_size=0)
    banded = CrossEncoderVerifier(verifier.model, band=band)
    out: dict[str, float] = {}
    timings: dict[str, list[float]] = {"off": [], "on": []}
    hit_ids: set[int] = set()
    for mode in ("off", "on", "off", "on"):  # interleaved twice against drifting machine load
        with SemanticCache(
            embedder=embedder,
            backend=MemoryBackend(),
            policy=CachePolicy(min_similarity=DEFAULT_FLOOR, exact_tier=False),
            verifier=banded if mode == "on" else None,
        ) as cache:
            for i, p in enumerate(pairs):
                cache.store(p.text_a, i, Scope(namespace=f"p{i}"))
            for i, p in enumerate(pairs):
                start = time.perf_counter()
                r = cache.lookup(p.text_b, Scope(namespace=f"p{i}"))
                elapsed = (time.perf_counter() - start) * 1000
                if mode == "off" and r.hit:
                    hit_ids.add(i)
                if i in hit_ids:
                    timings[mode].append(elapsed)
    for mode, xs in timings.items():
        arr = np.asarray(xs)
        out[f"{mode}_p50"] = float(np.percentile(arr, 50))
        out[f"{mode}_p95"] = float(np.percentile(arr, 95))
    out["hits"] = len(hit_ids)
    st = banded.stats()
    out["verified_share"] = st.calls / max(st.calls + st.above_band, 1)
    out["verifier_p50"] = st.latency_p50_ms
    out["verifier_p95"] = st.latency_p95_ms
    return out


def plot(m: Measured, path: Path, extra: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 5))
    everything = np.ones(len(m.labels), dtype=bool)
    lines = {
        "untuned MiniLM, static threshold": (m.base, everything),
        "tuned MiniLM, static threshold": (m.tuned, everything),
        "cross-encoder verifier alone": (m.score, everything),
        **{k: (v[0], v[1]) for k, v in extra.items()},
    }
    for label, (score, eligible) in lines.items():
        _, prec, rec, _ = curve(score, eligible, m.labels)
        ax.plot(rec, prec, label=label)
    ax.axhline(PRECISION, color="k", linewidth=0.8, linestyle=":")
    ax.set_xlabel("recall (hits on duplicates / duplicates)")
    ax.set_ylabel("precision (1 - false-hit rate)")
    ax.set_ylim(0.3, 1.01)
    ax.set_xlim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower left")
    ax.set_title(f"{TITLES[m.name]} measure half ({len(m.labels):,} pairs, never trained on)",
                 fontsize=10)  # fmt: skip
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def report(qqp_limit: int | None, paws_limit: int | None) -> None:
    import torch

    torch.set_num_threads(1)
    from semcache.embedders.sentence_transformers import SentenceTransformerEmbedder
    from semcache.matching.verifier import CrossEncoderVerifier, VerifierBand

    tuned_embedder = SentenceTransformerEmbedder(str(MODELS["embedder"]), memo_size=0,
                                                 batch_size=64)  # fmt: skip
    verifier = CrossEncoderVerifier.load(MODELS["verifier"])
    sets = {
        "qqp": measure_half("qqp", qqp_limit, tuned_embedder, verifier),
        "paws": measure_half("paws", paws_limit, tuned_embedder, verifier),
    }
    summary: dict[str, object] = {}
    for name, m in sets.items():
        summary[name] = evaluate(m)
    bands = {"default band": VerifierBand(), "band to 1.0": VerifierBand(high=1.0)}
    summary["latency"] = {
        name: {"band": str(b), **latency(verifier, sets["qqp"].pairs[:400], b)}
        for name, b in bands.items()
    }
    summary["runs"] = {
        k: json.loads((MODELS[k] / "semcache_tuning.json").read_text())["result"]
        for k in sorted(MODELS)
    }
    (CACHE / "tuning_summary.json").write_text(json.dumps(summary, indent=1, default=float))
    print(json.dumps(summary, indent=1, default=float))
    write_doc(summary)


def relatency() -> None:
    """Re-measure the hit-path latency with the saved summary's other figures; re-render."""
    import torch

    torch.set_num_threads(1)
    from semcache.matching.verifier import CrossEncoderVerifier, VerifierBand

    summary = json.loads((CACHE / "tuning_summary.json").read_text())
    verifier = CrossEncoderVerifier.load(MODELS["verifier"])
    _, qqp = halves("qqp")
    bands = {"default band": VerifierBand(), "band to 1.0": VerifierBand(high=1.0)}
    summary["latency"] = {
        name: {"band": str(b), **latency(verifier, qqp[:400], b)} for name, b in bands.items()
    }
    (CACHE / "tuning_summary.json").write_text(json.dumps(summary, indent=1, default=float))
    write_doc(summary)


def evaluate(m: Measured) -> dict[str, object]:
    """The figures of one measure half (printed as JSON; the doc section is written from them)."""
    from semcache.matching.verifier import VerifierBand

    everything = np.ones(len(m.labels), dtype=bool)
    out: dict[str, object] = {"pairs": len(m.labels), "positives": int(m.labels.sum())}
    blended = (m.tuned + m.score) / 2  # VerifierBand(blend=0.5) over the tuned embedder
    for key, score in (("untuned", m.base), ("tuned", m.tuned), ("verifier_alone", m.score),
                       ("blend", blended)):  # fmt: skip
        out[f"best_{key}"] = best_at(score, everything, m.labels)
        out[f"best_{key}_guard"] = best_at(score, ~m.veto, m.labels)
    # static thresholds, untuned and tuned
    for key, sims in (("untuned", m.base), ("tuned", m.tuned)):
        out[f"static_{key}"] = {f"{t:.3f}": rates(sims >= t, m.labels)
                                for t in (0.8, 0.85, 0.9, 0.95, 0.98)}  # fmt: skip
    # pipelines: floor -> guard -> band verifier, over a grid
    grid = []
    for key, score, eligible in pipelines(m):
        share = float((eligible & (score < 2.0)).sum() / max(eligible.sum(), 1))
        grid.append({**key, "best": best_at(score, eligible, m.labels),
                     "verified_share_of_eligible": share})  # fmt: skip
    out["grid"] = grid
    out["held_out"] = held_out(m)
    # the default settings (CachePolicy() + LexicalGuard), untuned against tuned, and with the
    # verifier: its default band, then other bands and cut-offs
    band = VerifierBand()
    out["default"] = {}
    for emb, sims in (("untuned", m.base), ("tuned", m.tuned)):
        out["default"][emb] = rates((sims >= DEFAULT_FLOOR) & ~m.veto, m.labels)
        out["default"][f"{emb} + verifier (default band)"] = rates(
            pipeline(m, sims, DEFAULT_FLOOR, band.high, band.min_score, band.blend), m.labels
        )
        for high in (0.99, 1.0):
            for blend, ms in ((0.0, 0.5), (0.0, 0.8), (0.5, 0.8)):
                out["default"][f"{emb} + verifier (high {high}, blend {blend}, min {ms})"] = rates(
                    pipeline(m, sims, DEFAULT_FLOOR, high, ms, blend), m.labels
                )
    out["default_band"] = {"low": band.low, "high": band.high, "min_score": band.min_score}
    # delta = 1%: choose the cut on one half of the measure pairs, check it on the other
    families = {
        "untuned static": (m.base, everything),
        "untuned static + guard": (m.base, ~m.veto),
        "tuned static + guard": (m.tuned, ~m.veto),
        "verifier alone": (m.score, everything),
        "untuned >= 0.7 + guard + verifier": (m.score, (m.base >= 0.7) & ~m.veto),
        "tuned >= 0.7 + guard + verifier": (m.score, (m.tuned >= 0.7) & ~m.veto),
        "tuned >= 0.7 + guard + blended verifier": (blended, (m.tuned >= 0.7) & ~m.veto),
        "untuned >= 0.9 + guard + verifier": (m.score, (m.base >= 0.9) & ~m.veto),
    }
    out["delta"] = {k: delta_check(sc, el, m.labels) for k, (sc, el) in families.items()}
    out["adaptive_verifier"] = adaptive_with_verifier(m)
    plot(m, DOCS / f"tuning_{m.name}.png", {
        "untuned >= 0.7 + guard + verifier (band to 1.0)": (m.score, (m.base >= 0.7) & ~m.veto),
        "tuned >= 0.7 + guard + verifier (band to 1.0)": (m.score, (m.tuned >= 0.7) & ~m.veto),
        "verifier blended with tuned cosine (0.5)": (blended, everything),
    })  # fmt: skip
    return out


# -- the BENCHMARKS.md section ------------------------------------------------------------------

# Written after reading the figures of the run committed with it; re-check after a re-run.
FINDINGS = """**What the tables show (honestly).**
- **Training**: the embedder on 23,856 pairs (a 12,000-pair sample of the QQP tune half plus
  three copies of the PAWS tune half), one epoch, 28 min on one thread; the verifier on 36,219
  pairs (the whole QQP tune half, 24,363 pairs, plus three copies of the PAWS half), two epochs,
  46 min on two threads. This is the fifth recipe tried: the first two trained on a split where
  3,355 of the 3,901 PAWS measure pairs shared a sentence with a training pair (their figures
  were optimistic and are gone); the third gave the verifier one epoch, which left it weak; the
  fourth gave it only the 12,000-pair QQP sample. Its head needs a faster rate than the
  embedder (7e-5, the library's default for it).
- **PAWS false-hit rate at the default settings is halved (target met).** `CachePolicy()`
  (0.95 + lexical guard): 0.535 with the untuned model, 0.255 with the tuned embedder (-52%),
  0.247 adding the verifier's default band (-54%); fewer hits remain (recall 0.85 -> 0.62).
- **QQP gets better too**: at the default settings the false-hit rate falls from 0.122 to 0.104
  (0.097 with the verifier's band) while the hit rate rises from 8.6% to 9.5%; at 0.9,
  precision 0.780 -> 0.824 and recall 0.432 -> 0.505. The embedder costs nothing in the hit path.
- **Precision >= 0.95 on QQP at 10x the untuned recall: NOT met held out.** On the whole QQP
  measure half (23,609 pairs) no untuned static threshold reaches precision 0.95 with 20 hits,
  even read off the scored pairs, so "10x the untuned recall" has no untuned figure to multiply;
  the verifier alone reaches 0.95 there at recall 0.0489 (431 hits). Held out (setting and cut
  chosen on one half, scored on the other) the best pipeline lands at precision 0.940 (recall
  0.052, A -> B) and 0.941 (recall 0.057, B -> A), against 0.895 at recall 0.018 for the untuned
  threshold chosen the same way (B -> A; none qualifies on A). No matcher is *certified* at
  0.95 on either half (95% upper bound on the false-hit rate <= 0.05): that needs roughly 97%
  measured precision over a few hundred hits, and QQP's labels sit near that ceiling. Of each
  matcher's 200 most confident pairs, 6 (verifier) to 15 (untuned cosine) are labelled
  non-duplicates, and 15% of the pairs whose texts are identical after normalisation are too.
- **A third verifier epoch did not help QQP** (continued from this model at 2e-5, 23 min,
  `train verifier --qqp-limit 0 --base <this model> --lr 2e-5` then `report`; its tables are not
  kept here): on its own the verifier then reached 0.95 at recall 0.0385 (was 0.0489); held out,
  the best pipeline landed at precision 0.922 (A -> B, recall 0.102) and 0.944 (B -> A, recall
  0.056). PAWS gained a little (false-hit rate with the default band 0.244). The two-epoch model
  stays the one reported.
- **Latency**: the verifier call costs about as much as a lookup (one MiniLM-L6 pass on the
  pair), so the p50 ratio follows the share of hits inside the band: 1.26x with the default band
  (49% of hits verified at the 0.95 floor), 2.00x with the band up to 1.0 (every hit verified).
- **delta = 1% is infeasible on both sets** for every policy here (static, tuned, verifier,
  adaptive): no cut is certified even on half A. Adaptive thresholds + verifier (k=8, fit at
  delta = 1%) serve 8-16% of QQP lookups at a 10-15% false-hit rate: the verifier's verdicts,
  learned as observations, are more lenient than the labels and pull the thresholds down.
- Operating points in the "best recall" tables are read off the measure half for every row
  alike (optimistic for all rows equally); the held-out table and the delta rows choose on
  one half and check on the other.
"""


def _recall(best: object) -> str:
    if best is None:
        return "none reaches it"
    cut, recall, hits = best  # type: ignore[misc]
    return f"{recall:.4f} ({hits} hits, cut {cut:.4f})"


def _row(name: str, r: dict) -> str:
    return (
        f"| {name} | {r['hits']} | {r['hit_rate']:.4f} | {r['recall']:.4f} | {r['false']} | "
        f"{r['fh_rate']:.4f} | {r['fh_upper']:.4f} |"
    )


def _band(b: dict) -> str:
    return f"[{max(b['low'], DEFAULT_FLOOR)}, {b['high']}), min_score {b['min_score']}"


def _held_out_table(h: dict) -> str:
    rows = [
        "\nThe same, without reading the operating point off the scored pairs: the measure "
        f"pairs are halved (A: even positions, {h['pairs_a']:,} pairs; B: odd, "
        f"{h['pairs_b']:,}); the setting and cut are chosen on one half and applied unchanged "
        f"to the other, both ways round. *measured*: the most recall at precision >= "
        f"{PRECISION} (at least 20 hits); *certified*: the most recall among the cuts whose 95% "
        f"Clopper-Pearson upper bound on the false-hit rate is <= {1 - PRECISION:.2f} (what "
        "`semcache calibrate` certifies). The last column divides the scored half's recall by "
        f"the untuned static threshold's best recall at precision >= {PRECISION} read off that "
        "half itself (the most generous reading for it; '-' where it has none).\n\n"
        "| chosen -> scored | rule | matcher | chosen | hits | precision | recall | "
        "x untuned |\n|---|---|---|---|---:|---:|---:|---:|\n"
    ]
    for fold in ("A -> B", "B -> A"):
        base = h[fold]["untuned_read_off"]
        for rule in RULES:
            for name, c in h[fold][rule].items():
                if c is None:
                    rows.append(f"| {fold} | {rule} | {name} | none reaches it | - | - | - | - |\n")
                    continue
                settings = ", ".join(f"{k} {v}" for k, v in c["settings"].items())
                chosen = f"{settings + ', ' if settings else ''}cut {c['cut']:.4f}"
                r = c["scored"]
                ratio = f"{r['recall'] / base[1]:.1f}x" if base else "-"
                rows.append(
                    f"| {fold} | {rule} | {name} | {chosen} | {r['hits']} | "
                    f"{r['precision']:.4f} | {r['recall']:.4f} | {ratio} |\n"
                )
    rows.append("\nThe untuned static threshold's best recall at precision >= 0.95, read off ")
    rows.append("; ".join(f"the half scored in {f}: {_recall(h[f]['untuned_read_off'])}"
                          for f in ("A -> B", "B -> A")) + ".\n")  # fmt: skip
    return "".join(rows)


HEAD = (
    "| policy | hits | hit rate | recall | false hits | false-hit rate | upper (95%) |\n"
    "|---|---:|---:|---:|---:|---:|---:|\n"
)


def write_doc(summary: dict) -> None:
    from _report import write_section

    parts = [
        "Commands (CPU; the embedder on one torch thread, the verifier on two, on the shared "
        "2-core machine):\n\n"
        "```\npython bench/bench_tuning.py train embedder\n"
        "python bench/bench_tuning.py train verifier --qqp-limit 0 --epochs 2 --threads 2\n"
        "python bench/bench_tuning.py report\n```\n\n"
        "Training data: the *tune* halves of the calibration bench's fixed split (50/50 by a "
        "hash of each pair's group: pairs sharing a sentence, directly or through other pairs, "
        "stay on one side, so no measured sentence was trained on) of QQP and of PAWS-Wiki dev: "
        "QQP pairs (a 12,000-pair sample of its half for the embedder, all of it for the "
        "verifier) plus three copies of the PAWS half (its non-paraphrases are the hard "
        "negatives). Everything below is measured on the *measure* halves of both files, never "
        "trained on. Plots: "
        "`docs/tuning_qqp.png`, `docs/tuning_paws.png` (precision against recall).\n\n" + FINDINGS
    ]
    runs = summary.get("runs", {})
    if runs:
        parts.append(
            "\n**Training runs.**\n\n| model | pairs | steps (planned) | pairs seen | "
            "minutes | pairs/s | budget stop |\n|---|---:|---:|---:|---:|---:|---|\n"
        )
        for kind, r in runs.items():
            parts.append(
                f"| {kind} | {r['pairs']} | {r['steps']} ({r['planned_steps']}) | "
                f"{r['pairs_seen']} | {r['seconds'] / 60:.1f} | {r['pairs_per_second']:.1f} | "
                f"{r['stopped_by_budget']} |\n"
            )
    for name in ("qqp", "paws"):
        m = summary[name]
        parts.append(
            f"\n### {TITLES[name]} measure half ({m['pairs']:,} pairs, "
            f"{m['positives']:,} positive)\n\n"
        )
        parts.append(
            f"Best recall at precision >= {PRECISION} (the operating point is read off "
            "the measure half for every row alike, at least 20 hits):\n\n"
            "| matcher | recall at precision >= 0.95 |\n|---|---|\n"
        )
        for key, label in (
            ("untuned", "untuned MiniLM, static threshold"),
            ("untuned_guard", "untuned + lexical guard"),
            ("tuned", "tuned MiniLM, static threshold"),
            ("tuned_guard", "tuned + lexical guard"),
            ("verifier_alone", "cross-encoder verifier on every pair"),
            ("verifier_alone_guard", "verifier + lexical guard"),
            ("blend", "verifier blended with the tuned cosine (blend 0.5)"),
            ("blend_guard", "blended + lexical guard"),
        ):
            parts.append(f"| {label} | {_recall(m['best_' + key])} |\n")
        grid = sorted((g for g in m["grid"] if g["best"] is not None), key=lambda g: -g["best"][1])[
            :6
        ]
        if grid:
            parts.append(
                "\nPipelines (floor -> lexical guard -> verifier on [floor, high)), "
                "the six with the most recall at precision >= 0.95:\n\n"
                "| embedder | floor | band high | blend | recall (hits, min_score) | "
                "share of candidates verified |\n|---|---:|---:|---:|---|---:|\n"
            )
            for g in grid:
                parts.append(
                    f"| {g['embedder']} | {g['floor']} | {g['high']} | {g.get('blend', 0.0)} | "
                    f"{_recall(g['best'])} | {g['verified_share_of_eligible']:.2f} |\n"
                )
        parts.append(_held_out_table(m["held_out"]))
        parts.append(
            "\nStatic thresholds before and after tuning the embedder (no guard):\n\n"
            "| threshold | untuned precision | untuned recall | tuned precision | "
            "tuned recall |\n|---:|---:|---:|---:|---:|\n"
        )
        for t, u in m["static_untuned"].items():
            v = m["static_tuned"][t]
            parts.append(
                f"| {t} | {u['precision']:.4f} | {u['recall']:.4f} | "
                f"{v['precision']:.4f} | {v['recall']:.4f} |\n"
            )
        parts.append(
            f"\nThe default settings (`CachePolicy()`: min_similarity {DEFAULT_FLOOR} + lexical "
            "guard), untuned against tuned embedder, without and with the verifier (default "
            f"band {_band(m['default_band'])}; other bands and cut-offs below it):\n\n" + HEAD
        )
        for name, r in m["default"].items():
            parts.append(_row(name, r) + "\n")
        parts.append(
            "\ndelta = 1% (one-sided 95% Clopper-Pearson upper bound on the false-hit "
            "rate): the lowest cut certified on half A of the measure pairs (even "
            "positions), applied to half B; and the cut certified on the whole half:\n\n"
            "| policy | cut on A | B: hits / false / upper | whole half: hit rate "
            "(upper) | false among the 200 top-scored |\n|---|---:|---|---|---:|\n"
        )
        for pol, d in m["delta"].items():
            b = d.get("on_b")
            w = d.get("on_all")
            cut = "none" if d["cut_on_a"] is None else f"{d['cut_on_a']:.4f}"
            bs = "-" if b is None else f"{b['hits']} / {b['false']} / {b['fh_upper']:.4f}"
            ws = "none" if w is None else f"{w['hit_rate']:.4f} ({w['fh_upper']:.4f})"
            parts.append(f"| {pol} | {cut} | {bs} | {ws} | {d['false_in_top200']} |\n")
        parts.append(
            "\nAdaptive thresholds (k=8 regions fit on the tune half at delta = 1%) + "
            "guard + the verifier deciding candidates within `verify_margin` of their "
            "threshold (replayed through a real cache on the whole measure half):\n\n" + HEAD
        )
        for name, r in m["adaptive_verifier"].items():
            parts.append(_row(f"adaptive + verifier, {name} ({r['verified']} verified)", r) + "\n")
    parts.append(
        "\n### Hit-path latency\n\nReal lookups (embed the query, search, lexical guard, "
        "verifier) through a `SemanticCache` with the untuned MiniLM and threshold "
        f"{DEFAULT_FLOOR}, on the QQP measure pairs (of the first 400) that hit without the "
        "verifier; one torch thread, "
        "two interleaved rounds per configuration, on the shared machine:\n\n"
        "| band | hits timed | p50 ms without / with | p95 ms without / with | p50 ratio | "
        "share verified | verifier call p50 ms |\n|---|---:|---|---|---:|---:|---:|\n"
    )
    for lat in summary["latency"].values():
        parts.append(
            f"| {lat['band']} | {lat['hits']} | {lat['off_p50']:.2f} / {lat['on_p50']:.2f} | "
            f"{lat['off_p95']:.2f} / {lat['on_p95']:.2f} | {lat['on_p50'] / lat['off_p50']:.2f}x "
            f"| {lat['verified_share']:.0%} | {lat['verifier_p50']:.2f} |\n"
        )
    write_section("Tuned matcher and verifier", "".join(parts))


if __name__ == "__main__":
    main()
