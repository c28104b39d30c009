"""Cold start of the embedded retrieval store: time to the first hybrid result after a restart.

The SciFact corpus is indexed once (MiniLM chunk vectors from bench/.cache) into a store
directory, and one sparse query saves its BM25 index. Then each run is a fresh Python process
that opens the store and answers one hybrid query (BM25 + int8-rescored HNSW, RRF) with a
precomputed query vector, so model loading and query embedding are not in the figure:

- before: the code of ``--before`` (default ``../../main``: the main branch, which rebuilds BM25
  from SQLite at the first sparse query);
- after: this tree, ``bm25.npz`` present and current (loaded);
- after, file removed: this tree with ``bm25.npz`` deleted first (rebuilt, then saved).

    OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 python bench/bench_cold_start.py [--runs 5]

Writes the "Retrieval store cold start" section of docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import ROOT, write_section

TITLE = "Retrieval store cold start"
DATA = ROOT.parent / "shared" / "data" / "beir-scifact"

_CHILD = """
import json, sys, time
t0 = time.perf_counter()
import numpy as np
from semcache.models import ModelFingerprint
from semcache.retrieval import HybridRetriever
from semcache.retrieval.store import EmbeddedRetrievalStore
from semcache.measure.retrieval import EvalSettings
path, fp, query = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
vector = np.array(json.loads(sys.argv[4]), dtype=np.float32)
class Precomputed:
    fingerprint = ModelFingerprint.from_dict(fp)
    def embed(self, texts):
        raise RuntimeError("the vector is passed")
t_import = time.perf_counter()
store = EmbeddedRetrievalStore(path, EvalSettings().store)
t_open = time.perf_counter()
hits = HybridRetriever(store, Precomputed()).retrieve(query, 10, vector=vector)
t_first = time.perf_counter()
builds = getattr(store, "bm25_builds", None)
store.close()
print(json.dumps({"import_ms": (t_import - t0) * 1000, "open_ms": (t_open - t_import) * 1000,
                  "first_ms": (t_first - t_open) * 1000, "top": hits[0].chunk.id,
                  "builds": builds}))
"""


def build(path: Path) -> tuple[dict[str, object], str, list[float], int]:
    """Index SciFact into ``path``; the fingerprint, a query, its vector and the chunk count."""
    from semcache import SentenceTransformerEmbedder
    from semcache.measure.beir import load_beir
    from semcache.measure.retrieval import EvalSettings
    from semcache.retrieval import Indexer
    from semcache.retrieval.chunking import RecursiveSplitter
    from semcache.retrieval.store import EmbeddedRetrievalStore
    from semcache.retrieval.vector_cache import VectorCache

    ds = load_beir(DATA, split="train")
    embedder = SentenceTransformerEmbedder(memo_size=0)
    settings = EvalSettings()
    with EmbeddedRetrievalStore(path, settings.store) as store:
        splitter = RecursiveSplitter.for_embedder(embedder, settings.chunking)
        cache = VectorCache(ROOT / "bench" / ".cache")
        Indexer(store, embedder, splitter, progress=True, vector_cache=cache).upsert(ds.corpus)
        query = next(iter(ds.queries.values()))
        store.sparse(query, 10)  # builds and saves bm25.npz
        chunks = store.count()
    vector = embedder.embed([query])[0].tolist()
    return embedder.fingerprint.to_dict(), query, vector, chunks


def cold(code: Path, path: Path, fp: dict[str, object], query: str, vector: list[float]) -> dict:
    env = {**os.environ, "PYTHONPATH": str(code), "OMP_NUM_THREADS": "1"}
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, str(path), json.dumps(fp), query, json.dumps(vector)],
        capture_output=True,
        text=True,
        env=env,
        check=True,
        cwd=code,
    )
    result: dict = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--before", type=Path, default=ROOT.parent.parent / "main")
    args = parser.parse_args()
    load = os.getloadavg()[0]
    before_rev = subprocess.run(
        ["git", "-C", str(args.before), "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    with tempfile.TemporaryDirectory(prefix="semcache-cold-") as tmp:
        path = Path(tmp) / "store"
        fp, query, vector, chunks = build(path)
        size_mb = (path / "bm25.npz").stat().st_size / 1e6
        cases = {"before (main: rebuild from SQLite)": [], "after (bm25.npz loaded)": []}
        cases["after, bm25.npz removed (rebuild + save)"] = []
        tops = set()
        for _ in range(args.runs):  # interleaved, so a change in machine load hits every case
            for label, runs in cases.items():
                code = args.before if label.startswith("before") else ROOT
                if "removed" in label:
                    (path / "bm25.npz").unlink()
                r = cold(code, path, fp, query, vector)
                tops.add(r["top"])
                runs.append(r)
                print(label, r, flush=True)
    assert len(tops) == 1, f"the cases disagree on the top hit: {tops}"
    lines = [
        f"SciFact corpus ({chunks:,} chunks, MiniLM vectors, the `EvalSettings` store: int8 "
        f"rescoring over HNSW), one store directory; `bm25.npz` is {size_mb:.1f} MB. Each run is "
        "a fresh process: open the store, then one `HybridRetriever.retrieve` (BM25 + dense, "
        "RRF, k=10) with a precomputed query vector (model load and query embedding excluded). "
        f"Median of {args.runs} runs per case, cases interleaved; load average "
        f"{load:.1f} at the start on 2 shared cores. All cases return the same top hit.",
        "",
        "| case | open store ms | open -> first hybrid result ms | total ms | BM25 builds |",
        "|---|---|---|---|---|",
    ]
    for label, runs in cases.items():
        o = statistics.median(r["open_ms"] for r in runs)
        f = statistics.median(r["first_ms"] for r in runs)
        builds = runs[0]["builds"]
        lines.append(
            f"| {label} | {o:.0f} | {f:.0f} | {o + f:.0f} | "
            f"{'n/a (not counted)' if builds is None else builds} |"
        )
    lines += [
        "",
        f"Command: `OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 python bench/bench_cold_start.py "
        f'--runs {args.runs}` ("before" runs the code at `--before`, here {before_rev}: the '
        "main branch without persisted BM25; after a merge, point it at that commit's "
        "checkout).",
    ]
    write_section(TITLE, "\n".join(lines))


if __name__ == "__main__":
    main()
