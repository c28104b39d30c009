"""The fusion study: candidate fusions on cached per-query runs, chosen by leave-one-set-out.

Variants of each shared set: the set itself, and the set with a degraded BM25 (it sees only
50% / 30% of each query's words), which puts BM25 well below dense, the regime of the team's
held-out set (BM25 0.368 vs dense 0.511) where fixed constants lost to dense.

Procedure: for each fusion family (a grid of settings), choose the setting on one set's three
variants by :func:`choose`, then score that setting on the other set's variants (held out);
both directions. The family with the best held-out worst margin is chosen; its shipped setting
is then chosen by the same rule on all six variants pooled.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np

from semcache.measure.metrics import ndcg_at_k, paired_bootstrap
from semcache.measure.retrieval import to_documents
from semcache.retrieval.adaptive import AgreementFusion
from semcache.retrieval.fusion import RRF, Fusion, MinMax, Ranking, WeightedFusion

Run = tuple[str, Ranking, Ranking]  # qid, sparse, dense
VARIANTS = ("bm25", "bm25-drop0.5", "bm25-drop0.7")


def doc_of(chunk: str) -> str:
    return chunk.rsplit("#", 1)[0]


@dataclass(frozen=True)
class Variant:
    name: str
    runs: list[Run]
    qrels: dict[str, dict[str, int]]
    bm25: np.ndarray
    dense: np.ndarray

    @property
    def best(self) -> np.ndarray:
        return self.bm25 if self.bm25.mean() >= self.dense.mean() else self.dense


def _rank(pairs: list[list[object]]) -> Ranking:
    return [(str(c), float(s)) for c, s in pairs]  # type: ignore[arg-type]


def per_query(
    v_runs: list[Run], qrels: dict[str, dict[str, int]], rank: Callable[[Ranking, Ranking], Ranking]
) -> np.ndarray:
    return np.array(
        [ndcg_at_k(to_documents(rank(b, d), doc_of, 100), qrels[q], 10) for q, b, d in v_runs]
    )


def variants(data: dict[str, object]) -> list[Variant]:
    qrels = data["qrels"]
    out = []
    for key in VARIANTS:
        runs = [(r["qid"], _rank(r[key]), _rank(r["dense"])) for r in data["queries"]]
        out.append(
            Variant(
                name=f"{data['name']} / {key}",
                runs=runs,
                qrels=qrels,
                bm25=per_query(runs, qrels, lambda b, d: b),
                dense=per_query(runs, qrels, lambda b, d: d),
            )
        )
    return out


def families() -> dict[str, dict[str, Fusion]]:
    """Each family's grid of settings (label -> fusion)."""
    grids: dict[str, dict[str, Fusion]] = {
        "RRF": {
            f"k={k:g}, w={w:g}/1": RRF(k=k, weights=(w, 1.0))
            for k in (20, 60)
            for w in (0.25, 0.5, 1.0)
        },
        "min-max": {
            f"{ws:g}/{1 - ws:g}": WeightedFusion(weights=(ws, 1 - ws), normalization=MinMax())
            for ws in (0.1, 0.2, 0.3, 0.4, 0.5)
        },
        "agreement-gated (dense leads)": {
            f"depth={dp}, max={mw:g}, sat={sat:g}, power={pw:g}": AgreementFusion(
                depth=dp, max_weight=mw, saturation=sat, power=pw, rrf_k=None
            )
            for dp in (10, 20)
            for mw in (0.3, 0.4, 0.5, 0.6, 0.7)
            for sat in (0.3, 0.5, 1.0)
            for pw in (1.0, 2.0)
        },
        "agreement-gated RRF (dense leads)": {
            f"k={k:g}, depth={dp}, max={mw:g}, sat={sat:g}, power={pw:g}": AgreementFusion(
                rrf_k=k, depth=dp, max_weight=mw, saturation=sat, power=pw
            )
            for k in (20, 60)
            for dp in (10, 20)
            for mw in (0.2, 0.3, 0.4, 0.5)
            for sat in (0.3, 0.5, 1.0)
            for pw in (1.0, 2.0)
        },
    }
    return grids


def margins(fusion: Fusion, vs: Iterable[Variant]) -> list[tuple[float, np.ndarray]]:
    out = []
    for v in vs:
        fused = per_query(v.runs, v.qrels, lambda b, d: fusion.fuse([b, d]))
        out.append((float(fused.mean() - v.best.mean()), fused))
    return out


TOLERANCE = 0.005  # "never worse than the better single retriever by more than noise"
BOTH_GOOD = 0.10  # "both retrievers carry signal": their nDCG@10 within this of each other


def choose(
    grid: dict[str, Fusion], vs: list[Variant], cache: dict[tuple[str, str], float]
) -> tuple[str, float]:
    """The rule, applied to the variants ``vs``: among the settings whose margin is >= -0.005
    on every variant, the one with the largest mean margin on the variants where both
    retrievers are within 0.10 of each other (all variants if none is); if no setting is that
    safe, the one with the largest worst margin. Returns the setting and its worst margin."""
    table: dict[str, list[float]] = {}
    for label, fusion in grid.items():
        row = []
        for v in vs:
            key = (label + repr(fusion), v.name)
            if key not in cache:
                cache[key] = margins(fusion, [v])[0][0]
            row.append(cache[key])
        table[label] = row
    both = [i for i, v in enumerate(vs) if abs(v.bm25.mean() - v.dense.mean()) <= BOTH_GOOD]
    both = both or list(range(len(vs)))
    safe = [label for label, row in table.items() if min(row) >= -TOLERANCE]
    if safe:
        label = max(safe, key=lambda lb: float(np.mean([table[lb][i] for i in both])))
    else:
        label = max(table, key=lambda lb: min(table[lb]))
    return label, float(min(table[label]))


def study(sets: dict[str, list[Variant]]) -> dict[str, object]:
    names = list(sets)
    cache: dict[tuple[str, str], float] = {}
    held_out: dict[str, list[dict[str, object]]] = {}
    for fam, grid in families().items():
        rows = []
        for train in names:
            test = next(n for n in names if n != train)
            label, train_worst = choose(grid, sets[train], cache)
            test_m = [(v.name, margins(grid[label], [v])[0][0]) for v in sets[test]]
            rows.append(
                {
                    "train": train,
                    "test": test,
                    "setting": label,
                    "train_worst": train_worst,
                    "test_margins": test_m,
                    "test_worst": min(m for _, m in test_m),
                }
            )
        held_out[fam] = rows
    score = {fam: min(r["test_worst"] for r in rows) for fam, rows in held_out.items()}
    family = max(score, key=lambda f: score[f])
    pooled = [v for n in names for v in sets[n]]
    setting, pooled_worst = choose(families()[family], pooled, cache)
    return {
        "held_out": held_out,
        "family_score": score,
        "family": family,
        "setting": setting,
        "pooled_worst": pooled_worst,
        "fusion": families()[family][setting],
    }


def intervals(fusion: Fusion, v: Variant) -> dict[str, object]:
    fused = margins(fusion, [v])[0][1]
    diff = fused - v.best
    lo, hi = paired_bootstrap(diff.tolist())
    return {"ndcg": float(fused.mean()), "diff": float(diff.mean()), "ci": (lo, hi)}
