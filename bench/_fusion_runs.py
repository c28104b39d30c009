"""Per-query BM25 and dense rankings of the shared judged sets, cached as JSON for the fusion study.

Each dataset is indexed once (embeddings cached in bench/.cache); every judged query is run
through BM25, dense (int8-rescored) and a *degraded* BM25 that sees only some of the query's
words (seeded per query), which simulates a corpus where BM25 is much weaker than dense.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import re
import tempfile
import time
from pathlib import Path

from _report import ROOT

from semcache.embedders.base import Embedder
from semcache.measure.beir import BeirDataset, load_beir
from semcache.measure.retrieval import EvalSettings
from semcache.retrieval import Indexer, Int8Rescored
from semcache.retrieval.chunking import RecursiveSplitter
from semcache.retrieval.store import EmbeddedRetrievalStore, EmbeddedStoreConfig
from semcache.retrieval.vector_cache import VectorCache

CACHE = ROOT / "bench" / ".cache"
DATA = ROOT.parent / "shared" / "data"
DROP_LEVELS = (0.5, 0.7)  # share of query words BM25 does not see, in the degraded variants


def degrade(qid: str, text: str, drop: float) -> str:
    """``text`` with about ``drop`` of its words removed (at least one kept), seeded by ``qid``."""
    words = re.findall(r"\w+", text)
    seed = int(hashlib.sha256(f"{qid}/{drop}".encode()).hexdigest()[:8], 16)
    rng = random.Random(seed)
    keep = max(1, round(len(words) * (1 - drop)))
    idx = sorted(rng.sample(range(len(words)), keep)) if words else []
    return " ".join(words[i] for i in idx) or text


def runs_path(name: str) -> Path:
    return CACHE / f"fusion-runs-{name}.json"


def build_runs(ds: BeirDataset, embedder: Embedder) -> dict[str, object]:
    settings = EvalSettings()
    with tempfile.TemporaryDirectory(prefix="semcache-fusion-") as tmp:
        store = EmbeddedRetrievalStore(tmp, EmbeddedStoreConfig())
        try:
            splitter = RecursiveSplitter.for_embedder(embedder, settings.chunking)
            Indexer(
                store, embedder, splitter, progress=True, vector_cache=VectorCache(CACHE)
            ).upsert(ds.corpus)
            depth = 100 * max(1, math.ceil(store.count() / len(ds.corpus)))
            store.sparse("warm up", 1)
            queries = []
            for qid, text in ds.queries.items():
                vec = embedder.embed([text])[0]
                row: dict[str, object] = {
                    "qid": qid,
                    "bm25": [[c, round(s, 5)] for c, s in store.sparse(text, depth)],
                    "dense": [[c, round(s, 6)] for c, s in store.dense(vec, depth, Int8Rescored())],
                }
                for drop in DROP_LEVELS:
                    weak = degrade(qid, text, drop)
                    row[f"bm25-drop{drop}"] = [
                        [c, round(s, 5)] for c, s in store.sparse(weak, depth)
                    ]
                queries.append(row)
            return {
                "name": ds.name,
                "chunks": store.count(),
                "depth": depth,
                "queries": queries,
                "qrels": ds.qrels,
            }
        finally:
            store.close()


def load_runs(name: str, embedder: Embedder | None = None) -> dict[str, object]:
    path = runs_path(name)
    if path.exists():
        return json.loads(path.read_text())
    if embedder is None:
        from semcache import SentenceTransformerEmbedder

        embedder = SentenceTransformerEmbedder(memo_size=0)
    data = build_runs(load_beir(DATA / name), embedder)
    CACHE.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return data


if __name__ == "__main__":
    import torch

    torch.set_num_threads(1)
    for name in ("msmarco-trecdl-subset-5k", "beir-scifact"):
        t0 = time.perf_counter()
        d = load_runs(name)
        print(name, len(d["queries"]), f"{time.perf_counter() - t0:.0f}s", flush=True)
