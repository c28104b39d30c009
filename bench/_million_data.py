"""The realistic million: real MiniLM vectors of every distinct sentence in ../shared/data,
extended to 1M by a fitted local Gaussian model, with planted queries. Cached in
bench/.cache/million/ (each step is skipped when its file is there).

Steps (see bench_ann_million.py for the command):

1. ``sentences``: every distinct sentence of QQP, PAWS (dev), STS-B (all splits), MRPC train,
   the GPTCache pairs, SciFact (title + abstract) and the MS MARCO passages. Passages are split
   into sentences with a regex (end punctuation, then a space and a capital or digit); split
   fragments under 4 words are dropped. "Distinct" = lower-cased with whitespace collapsed
   (all-MiniLM-L6-v2 lower-cases, so case variants embed identically).
2. ``real``: their vectors from the packaged all-MiniLM-L6-v2 (``OnnxEmbedder``, untuned).
3. ``stored``: the second side of each QQP duplicate pair is a planted query, so it is kept out
   of the stored set; everything else is stored, shuffled.
4. ``model``: the extension, a Gaussian kernel density estimate. A generated vector is a
   stored real vector (the parent, drawn uniformly) plus Gaussian noise shaped like the real
   data, ``x = normalize(p + h * s_p * L z)``, z ~ N(0, I), ``L L^T`` = the covariance of the
   stored real vectors, ``s_p`` = the parent's distance to its nearest real neighbour over the
   median such distance: an adaptive Gaussian kernel density estimate, i.e. a mixture with one
   component per real vector, each with the data's covariance scaled by (h s_p)^2 (dense
   regions stay dense). The one parameter, the bandwidth ``h``, is fitted by bisection so
   that generated vectors sit as far from the real set as new real sentences do: the median
   cosine to the nearest reference vector of 2,000 children matches that of 2,000 held-out
   real vectors.
5. ``set``: the 1M vectors, stored real (shuffled) first, then generated; the first n rows are
   the set of size n (10k and 100k are all real).
6. ``queries``: QQP partners (at most ``QQP_QUERIES``) of stored first sides, plus, per size,
   ``NEAR_QUERIES`` generated near-duplicates of vectors of that size's set (cosine uniform in
   0.90..0.98 to their source, moved along a direction drawn from the data's covariance); each
   with a fixed half (True = derive, False = held out) and its exact nearest stored vector at
   every size.
"""

from __future__ import annotations

import gzip
import hashlib
import itertools
import json
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data"
CACHE = ROOT / "bench" / ".cache" / "million"

TOTAL = 1_000_000
QQP_QUERIES = 8000
NEAR_QUERIES = 4000
NEAR_COS = (0.90, 0.98)
SEED = 17
SMOKE: int | None = None  # a quick check: this many sentences (set by --smoke)

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[\"'(\[]?[A-Z0-9])")


def split_sentences(text: str, min_words: int = 4) -> list[str]:
    """Regex sentence split of a passage; fragments under ``min_words`` words are dropped."""
    parts = (" ".join(p.split()) for p in _SENTENCE_END.split(text))
    return [p for p in parts if len(p.split()) >= min_words]


def _key(text: str) -> str:
    return " ".join(text.lower().split())


def _tsv(path: Path, cols: tuple[int, ...], header: bool = True) -> Iterator[list[str]]:
    with open(path, encoding="utf-8-sig", newline="") as f:
        lines = f.read().splitlines()
    for line in lines[1 if header else 0 :]:
        parts = line.split("\t")
        if len(parts) > max(cols):
            yield [parts[c] for c in cols]


def _pair_sources() -> Iterator[tuple[str, str, str, int | None]]:
    """(source, text_a, text_b, duplicate label or None) of every pair set."""
    with gzip.open(DATA / "qqp" / "pairs.jsonl.gz", "rt", encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            yield "qqp", row["text_a"], row["text_b"], int(row["label"])
    for a, b in _tsv(DATA / "paws-wiki" / "dev.tsv", (1, 2)):
        yield "paws", a, b, None
    for split in ("train", "dev", "test"):
        for a, b in _tsv(DATA / "stsb" / f"sts-{split}.csv", (5, 6), header=False):
            yield "stsb", a, b, None
    for a, b in _tsv(DATA / "mrpc-train" / "msr_paraphrase_train.txt", (3, 4)):
        yield "mrpc", a, b, None
    for row in json.loads((DATA / "gptcache-mock-pairs" / "mock_data.json").read_text()):
        yield "gptcache", row["origin"], row["similar"], None


def _passages() -> Iterator[tuple[str, str]]:
    for source, folder in (("scifact", "beir-scifact"), ("msmarco", "msmarco-trecdl-subset-5k")):
        with open(DATA / folder / "corpus.jsonl", encoding="utf-8") as f:
            for line in f:
                doc = json.loads(line)
                if doc.get("title", "").strip():
                    yield source, " ".join(doc["title"].split())
                for s in split_sentences(doc["text"]):
                    yield source, s


@dataclass
class Sentences:
    texts: list[str]
    sources: list[str]  # the first source each distinct sentence was seen in
    qqp_dups: list[tuple[int, int]]  # (stored side, query side) of QQP duplicates
    seconds: float


def sentences() -> Sentences:
    path = CACHE / "sentences.json.gz"
    if path.exists():
        with gzip.open(path, "rt", encoding="utf-8") as f:
            d = json.load(f)
        return Sentences(d["texts"], d["sources"], [tuple(p) for p in d["qqp_dups"]], d["seconds"])
    t0 = time.perf_counter()
    index: dict[str, int] = {}
    texts: list[str] = []
    sources: list[str] = []

    def add(source: str, text: str) -> int:
        text = " ".join(text.split())
        key = _key(text)
        at = index.get(key)
        if at is None:
            at = index[key] = len(texts)
            texts.append(text)
            sources.append(source)
        return at

    dups: list[tuple[int, int]] = []
    for source, a, b, label in _pair_sources():
        if not a.strip() or not b.strip():
            continue
        ia, ib = add(source, a), add(source, b)
        if source == "qqp" and label == 1 and ia != ib:
            dups.append((ia, ib))
    for source, s in _passages():
        add(source, s)
    if SMOKE is not None:
        texts, sources, dups = _subset(texts, sources, dups, SMOKE)
    out = Sentences(texts, sources, dups, time.perf_counter() - t0)
    CACHE.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt", encoding="utf-8") as f:
        json.dump({"texts": texts, "sources": sources, "qqp_dups": dups, "seconds": out.seconds}, f)
    return out


def _subset(
    texts: list[str], sources: list[str], dups: list[tuple[int, int]], n: int
) -> tuple[list[str], list[str], list[tuple[int, int]]]:
    rng = np.random.default_rng(SEED)
    some = np.array(dups)[rng.permutation(len(dups))[: n // 8]].ravel()  # some QQP queries too
    rest = rng.permutation(len(texts))[: n - len(some)]
    keep = np.unique(np.concatenate([some, rest]))
    new = {int(old): i for i, old in enumerate(keep)}
    pairs = [(new[a], new[b]) for a, b in dups if a in new and b in new]
    return [texts[i] for i in keep], [sources[i] for i in keep], pairs


def real_vectors(texts: list[str], threads: int, batch: int = 64) -> tuple[np.ndarray, dict]:
    """MiniLM vectors of ``texts`` (cached), and how long embedding took."""
    path, meta_path = CACHE / "real.npy", CACHE / "real.json"
    if path.exists() and meta_path.exists():
        return np.load(path, mmap_mode="r"), json.loads(meta_path.read_text())
    from tqdm import tqdm

    from semcache.embedders.onnx import OnnxEmbedder

    embedder = OnnxEmbedder(memo_size=0, intra_op_threads=threads, batch_size=batch)
    order = np.argsort([len(t) for t in texts], kind="stable")  # little padding per batch
    out = np.empty((len(texts), embedder.dim), dtype=np.float32)
    step = 4096
    t0 = time.perf_counter()
    for start in tqdm(range(0, len(texts), step), desc="embedding", unit="4k"):
        idx = order[start : start + step]
        out[idx] = embedder.embed([texts[i] for i in idx])
    seconds = time.perf_counter() - t0
    meta = {
        "seconds": seconds,
        "count": len(texts),
        "threads": threads,
        "batch": batch,
        "model": embedder.fingerprint.model,
        "backend": embedder.backend,
    }
    np.save(path, out)
    meta_path.write_text(json.dumps(meta, indent=1))
    return np.load(path, mmap_mode="r"), meta


# -- the model -------------------------------------------------------------------------------


def kernel(vectors: np.ndarray) -> np.ndarray:
    """``L`` with ``L @ L.T`` = the covariance of the vectors (their principal axes, scaled)."""
    cov = np.cov(np.asarray(vectors, dtype=np.float64), rowvar=False)
    values, axes = np.linalg.eigh(cov)
    return (axes * np.sqrt(np.clip(values, 0.0, None))).astype(np.float32)


def local_scale(vectors: np.ndarray, threads: int) -> np.ndarray:
    """Each vector's distance to its nearest other vector, over the median of those distances
    (HNSW, ef 128: a close approximation)."""
    import hnswlib

    index = hnswlib.Index(space="ip", dim=vectors.shape[1])
    index.init_index(max_elements=len(vectors), ef_construction=128, M=16)
    index.add_items(vectors, np.arange(len(vectors)), num_threads=threads)
    index.set_ef(128)
    labels, dist = index.knn_query(vectors, k=2, num_threads=threads)
    other = np.where(labels[:, 0] == np.arange(len(vectors)), dist[:, 1], dist[:, 0])
    d = np.sqrt(np.clip(2 * other, 0.0, None))  # ip distance 1 - cos; |a - b| = sqrt(2 - 2cos)
    return (d / np.median(d)).astype(np.float32)


def children(
    real: np.ndarray,
    basis: np.ndarray,
    scale: np.ndarray,
    parents: np.ndarray,
    h: float,
    z: np.ndarray,
    chunk: int = 50_000,
) -> np.ndarray:
    """``normalize(p + h * s_p * L z)`` for each parent ``p`` (``z``: one standard normal row
    each; ``s_p``: the parent's local scale)."""
    out = np.empty((len(parents), real.shape[1]), dtype=np.float32)
    for s in range(0, len(parents), chunk):
        p = parents[s : s + chunk]
        noise = (h * scale[p])[:, None] * (z[s : s + chunk] @ basis.T)
        x = np.asarray(real[p]) + noise
        out[s : s + chunk] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def nn_cos(
    queries: np.ndarray, pool: np.ndarray, self_rows: np.ndarray | None = None
) -> np.ndarray:
    """Exact cosine of each query to its nearest pool row; ``self_rows[i]``: a row to skip."""
    best = np.full(len(queries), -2.0, dtype=np.float32)
    step = 20_000
    for s in range(0, len(pool), step):
        sims = queries @ np.asarray(pool[s : s + step]).T
        if self_rows is not None:
            local = self_rows - s
            inside = (local >= 0) & (local < sims.shape[1])
            sims[np.flatnonzero(inside), local[inside]] = -2.0
        np.maximum(best, sims.max(axis=1), out=best)
    return best


@dataclass
class Model:
    h: float
    fit: dict  # held-out vs generated cosine to the reference set, per bisection step
    seconds: float


def fit_model(
    stored: np.ndarray, basis: np.ndarray, scale: np.ndarray, sample: int = 2000
) -> Model:
    """Bisect ``h`` so that children are as far from the reference set as held-out real rows."""
    path = CACHE / "model.json"
    if path.exists():
        d = json.loads(path.read_text())
        return Model(d["h"], d["fit"], d["seconds"])
    t0 = time.perf_counter()
    rng = np.random.default_rng(SEED)
    sample = min(sample, len(stored) // 3)  # smaller only in a --smoke run
    perm = rng.permutation(len(stored))
    held, ref = np.sort(perm[:sample]), np.sort(perm[sample:])
    ref_vecs = np.asarray(stored[ref])
    real_nn = nn_cos(np.asarray(stored[held]), ref_vecs)
    target = float(np.median(real_nn))
    parents = rng.choice(ref, sample)
    z = rng.standard_normal((sample, basis.shape[1])).astype(np.float32)
    steps: list[dict[str, float]] = []

    def median_at(h: float) -> float:
        med = float(np.median(nn_cos(children(stored, basis, scale, parents, h, z), ref_vecs)))
        steps.append({"h": h, "median": med})
        return med

    lo, hi = 0.0, 1.0
    while hi < 64 and median_at(hi) > target:  # bracket: more noise, farther from the set
        lo, hi = hi, 2 * hi
    for _ in range(12):
        h = (lo + hi) / 2
        if median_at(h) > target:  # too close: more noise
            lo = h
        else:
            hi = h
    h = (lo + hi) / 2
    fit = {"target_median": target, "steps": steps, "sample": sample}
    model = Model(h, fit, time.perf_counter() - t0)
    path.write_text(json.dumps({"h": h, "fit": fit, "seconds": model.seconds}, indent=1))
    return model


# -- the set and the queries ------------------------------------------------------------------


@dataclass
class Stored:
    rows: np.ndarray  # sentence index of each stored real vector, in set order
    queries: list[tuple[int, list[int]]]  # (QQP query sentence, its stored partners' rows)


def stored_rows(s: Sentences) -> Stored:
    """Stored real sentences (shuffled): all but the query sides of QQP duplicates."""
    query_side = {b for _, b in s.qqp_dups}
    rows = np.array([i for i in range(len(s.texts)) if i not in query_side], dtype=np.int64)
    rows = np.random.default_rng(SEED).permutation(rows)
    where = {int(r): at for at, r in enumerate(rows)}
    partners: dict[int, list[int]] = {}
    for a, b in s.qqp_dups:
        if a in where:
            partners.setdefault(b, []).append(where[a])
    return Stored(rows, sorted(partners.items()))


def build_set(
    real: np.ndarray,
    stored: Stored,
    basis: np.ndarray,
    scale: np.ndarray,
    model: Model,
    total: int,
) -> tuple[np.ndarray, np.ndarray]:
    """The set (memory-mapped) and each row's parent (-1: a real row)."""
    path, parent_path = CACHE / f"set_{total}.npy", CACHE / f"parents_{total}.npy"
    if path.exists() and parent_path.exists():
        return np.load(path, mmap_mode="r"), np.load(parent_path)
    n_real = len(stored.rows)
    rng = np.random.default_rng(SEED + 1)
    extra = max(0, total - n_real)
    parents = np.concatenate(
        [np.full(min(total, n_real), -1, dtype=np.int64), rng.integers(0, n_real, extra)]
    )
    tmp = path.with_suffix(".tmp.npy")
    out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(total, real.shape[1]))
    real_stored = np.asarray(real[stored.rows])
    out[: min(total, n_real)] = real_stored[:total]
    step = 100_000
    for s in range(n_real, total, step):
        p = parents[s : s + step]
        z = rng.standard_normal((len(p), basis.shape[1])).astype(np.float32)
        out[s : s + len(p)] = children(real_stored, basis, scale, p, model.h, z)
    out.flush()
    del out
    tmp.rename(path)
    np.save(parent_path, parents)
    return np.load(path, mmap_mode="r"), parents


def half_of(key: str) -> bool:
    """A fixed half: True = derive the rule, False = held out."""
    return hashlib.blake2b(key.encode(), digest_size=1).digest()[0] & 1 == 0


def near_duplicates(
    data: np.ndarray, size: int, basis: np.ndarray, count: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """``count`` queries at cosine U(0.90, 0.98) to a random vector of the first ``size`` rows,
    moved along a direction drawn from the data's covariance; returns (queries, source rows)."""
    count = min(count, size)
    src = np.sort(rng.choice(size, count, replace=False))
    base = np.asarray(data[src])
    u = rng.standard_normal((count, basis.shape[1])).astype(np.float32) @ basis.T
    u -= np.sum(u * base, axis=1, keepdims=True) * base  # tangent to the source
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    c = rng.uniform(*NEAR_COS, count).astype(np.float32)[:, None]
    q = c * base + np.sqrt(1 - c * c) * u
    return (q / np.linalg.norm(q, axis=1, keepdims=True)).astype(np.float32), src


@dataclass
class Queries:
    vectors: np.ndarray
    kind: np.ndarray  # "qqp" or "near"
    size: np.ndarray  # near-duplicates: the size whose set they were drawn from; QQP: 0 (all)
    partner: np.ndarray  # QQP: the first stored partner row; near: the source row
    derive: np.ndarray  # True: the half the rule is derived on
    best: dict[int, np.ndarray]  # per size: exact best cosine (-2: not evaluated at that size)
    best_row: dict[int, np.ndarray]

    def at(self, size: int, threshold: float) -> np.ndarray:
        """Indices of this size's queries whose exact nearest stored vector is >= threshold."""
        own = ((self.kind == "qqp") & (self.partner < size)) | (self.size == size)
        return np.flatnonzero(own & (self.best[size] >= threshold))


def queries(
    real: np.ndarray,
    data: np.ndarray,
    stored: Stored,
    basis: np.ndarray,
    sizes: tuple[int, ...],
    texts: list[str],
) -> Queries:
    path = CACHE / f"queries_{'_'.join(map(str, sizes))}.npz"
    if path.exists():
        with np.load(path, allow_pickle=False) as z:
            return Queries(
                z["vectors"],
                z["kind"],
                z["size"],
                z["partner"],
                z["derive"],
                {n: z[f"best_{n}"] for n in sizes},
                {n: z[f"row_{n}"] for n in sizes},
            )
    rng = np.random.default_rng(SEED + 2)
    pick = rng.permutation(len(stored.queries))[:QQP_QUERIES]
    chosen = [stored.queries[i] for i in sorted(pick)]
    qqp_vec = np.asarray(real[[q for q, _ in chosen]])
    qqp_partner = np.array([min(p) for _, p in chosen], dtype=np.int64)
    qqp_half = [half_of(texts[int(stored.rows[min(p)])].lower()) for _, p in chosen]
    vecs, kinds, qsize, partner, derive = (
        [qqp_vec],
        ["qqp"] * len(chosen),
        [0] * len(chosen),
        [qqp_partner],
        qqp_half,
    )
    for n in sizes:
        q, src = near_duplicates(data, n, basis, NEAR_QUERIES, rng)
        vecs.append(q)
        partner.append(src)
        kinds += ["near"] * len(q)
        qsize += [n] * len(q)
        derive += [half_of(f"near:{n}:{int(r)}") for r in src]
    out = Queries(
        np.concatenate(vecs),
        np.array(kinds),
        np.array(qsize, dtype=np.int64),
        np.concatenate(partner),
        np.array(derive),
        {},
        {},
    )
    _exact(out, data, sizes)
    np.savez(
        path,
        vectors=out.vectors,
        kind=out.kind,
        size=out.size,
        partner=out.partner,
        derive=out.derive,
        **{f"best_{n}": out.best[n] for n in sizes},
        **{f"row_{n}": out.best_row[n] for n in sizes},
    )
    return out


def _exact(q: Queries, data: np.ndarray, sizes: tuple[int, ...]) -> None:
    """Exact nearest row within each size's prefix, for the queries of that size."""
    from tqdm import tqdm

    best = np.full(len(q.vectors), -2.0, dtype=np.float32)
    row = np.full(len(q.vectors), -1, dtype=np.int64)
    limit = np.where(q.kind == "qqp", max(sizes), q.size)  # rows a query is compared with
    bounds = sorted({0, *sizes})
    cuts = [b for lo, hi in itertools.pairwise(bounds) for b in range(lo, hi, 10_000)]
    cuts = sorted(set(cuts) | set(sizes))
    for lo, hi in tqdm(list(itertools.pairwise(cuts)), desc="exact NN", unit="chunk"):
        active = np.flatnonzero(limit > lo)
        sims = q.vectors[active] @ np.asarray(data[lo:hi]).T
        arg = sims.argmax(axis=1)
        val = sims[np.arange(len(active)), arg]
        better = val > best[active]
        best[active[better]] = val[better]
        row[active[better]] = arg[better] + lo
        if hi in sizes:
            q.best[hi] = np.where(limit >= hi, best, -2.0)
            q.best_row[hi] = np.where(limit >= hi, row, -1)
