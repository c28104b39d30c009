"""HNSW self-recall under replace churn: reusing deleted slots vs keeping them and rebuilding.

    python bench/bench_churn.py [--size 5000] [--rounds 4] [--seed 0]

One graph scope of ``size`` 384-d unit vectors in 5 tight clusters (near-duplicates, as
paraphrased prompts are; uniformly random vectors keep 100% either way). Each churn step replaces
a random entry: its label is removed and a new label added with a new vector, as a replaced cache
entry is. Self-recall@1 is the share of live entries whose own vector finds them as the top hit.

- *reuse slots*: ``HnswIndex(reuse_deleted=True)``, hnswlib writing new labels into deleted
  slots, never rebuilt (the embedded backend before issue #14; graphs past ``REBUILD_UP_TO``);
- *keep and rebuild*: the embedded backend's graphs now (``ScopedIndexes``): deleted slots kept,
  the graph rebuilt once they pass ``REBUILD_AFTER`` of the live vectors.

torch is not involved; numpy and hnswlib run on one thread (OMP_NUM_THREADS=1).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Iterator

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np
from _report import write_section
from numpy.typing import NDArray
from tqdm import tqdm

from semcache.backends.scoped_index import REBUILD_AFTER, REBUILD_UP_TO, ScopedIndexes
from semcache.backends.vector_index import HnswIndex, HnswParams

DIM = 384
CHECKPOINTS = (0.5, 1.0, 2.0, 3.0, 4.0)


class _NoSource:
    """The graphs here are never reloaded: nothing to read back."""

    def scope_ids(self, scope_key: str) -> set[int]:
        raise AssertionError("not reloaded")

    def scope_vectors(
        self, scope_key: str, ids: list[int] | None = None
    ) -> Iterator[tuple[NDArray[np.int64], NDArray[np.float32]]]:
        raise AssertionError("not reloaded")


class _Reusing:
    """A bare graph that reuses deleted slots."""

    def __init__(self) -> None:
        self.index = HnswIndex(DIM, HnswParams(), reuse_deleted=True)
        self.rebuilds = 0

    def add(self, labels: NDArray[np.int64], vectors: NDArray[np.float32]) -> None:
        self.index.add(labels, vectors)

    def remove(self, label: int) -> None:
        self.index.remove(label)

    def top(self, vector: NDArray[np.float32]) -> int:
        return self.index.knn(vector, 1)[0][0]


class _Scoped:
    """One scope of the embedded backend's index manager."""

    def __init__(self) -> None:
        self.indexes = ScopedIndexes(DIM, HnswParams(), None, _NoSource())

    @property
    def rebuilds(self) -> int:
        return self.indexes.rebuilds

    def add(self, labels: NDArray[np.int64], vectors: NDArray[np.float32]) -> None:
        self.indexes.add("s", labels, vectors)

    def remove(self, label: int) -> None:
        self.indexes.remove("s", [label])

    def top(self, vector: NDArray[np.float32]) -> int:
        return self.indexes.knn("s", vector, 1)[0][0]


def run(kind: str, size: int, rounds: float, seed: int) -> dict[str, object]:
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((5, DIM)).astype(np.float32)

    def unit(n: int) -> NDArray[np.float32]:
        x = centers[rng.integers(5, size=n)]
        x = x + 0.01 / np.sqrt(DIM) * rng.standard_normal((n, DIM)).astype(np.float32)
        out: NDArray[np.float32] = x / np.linalg.norm(x, axis=1, keepdims=True)
        return out

    graph = _Reusing() if kind == "reuse" else _Scoped()
    vectors = dict(enumerate(unit(size)))
    graph.add(np.arange(size, dtype=np.int64), np.stack(list(vectors.values())))

    def recall() -> float:
        return float(np.mean([graph.top(v) == i for i, v in vectors.items()]))

    curve = {0.0: recall()}
    live, next_id, spent = list(range(size)), size, 0.0
    marks = {int(c * size): c for c in CHECKPOINTS if c <= rounds}
    for step in tqdm(range(1, int(rounds * size) + 1), desc=kind, unit="replace", file=sys.stderr):
        slot = int(rng.integers(size))
        vector = unit(1)
        start = time.perf_counter()
        graph.remove(live[slot])
        graph.add(np.array([next_id], dtype=np.int64), vector)
        spent += time.perf_counter() - start
        del vectors[live[slot]]
        vectors[next_id] = vector[0]
        live[slot], next_id = next_id, next_id + 1
        if step in marks:
            curve[marks[step]] = recall()
    return {"curve": curve, "ms": 1000 * spent / (rounds * size), "rebuilds": graph.rebuilds}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=int, default=5000)
    ap.add_argument("--rounds", type=float, default=4.0)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    results = {kind: run(kind, args.size, args.rounds, args.seed) for kind in ("reuse", "keep")}
    points = [0.0, *(c for c in CHECKPOINTS if c <= args.rounds)]
    head = "| graph | " + " | ".join(f"{p:g}x churn" for p in points)
    lines = [
        f"`python bench/bench_churn.py --size {args.size} --rounds {args.rounds:g} "
        f"--seed {args.seed}`: one graph scope of {args.size:,} 384-d unit vectors in 5 tight "
        "clusters (near-duplicates), default `HnswParams`; each step replaces a random entry "
        "(its label removed, a new label added). Self-recall@1 (share of live entries whose own "
        f"vector is the top hit) after each multiple of the size replaced. *keep and rebuild* "
        f"is the embedded backend's graphs up to {REBUILD_UP_TO:,} vectors now (rebuilt once "
        f"deleted slots pass {REBUILD_AFTER:.0%} of the live ones); *reuse slots* is hnswlib's "
        "`replace_deleted`, the graphs before issue #14 and larger graphs now.",
        "",
        head + " | ms per replace | rebuilds |",
        "|---|" + "---:|" * (len(points) + 2),
    ]
    for kind, name in (("reuse", "reuse slots"), ("keep", "keep and rebuild")):
        r = results[kind]
        curve = r["curve"]
        assert isinstance(curve, dict)
        cells = " | ".join(f"{100 * curve[p]:.2f}%" for p in points)
        lines.append(f"| {name} | {cells} | {r['ms']:.2f} | {r['rebuilds']} |")
    body = "\n".join(lines)
    print(body)
    write_section("HNSW recall under churn (embedded backend)", body)


if __name__ == "__main__":
    main()
