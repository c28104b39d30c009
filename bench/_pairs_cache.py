"""Labelled pairs of the shared data sets and their embeddings, cached in bench/.cache."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np

from semcache.embedders.base import Embedder
from semcache.measure.pairs import LabelledPair, pair_groups, read_pairs

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data"
CACHE = ROOT / "bench" / ".cache"

SOURCES = {
    "qqp": DATA / "qqp" / "pairs.jsonl.gz",
    "paws": DATA / "paws-wiki" / "dev.tsv",
}


@dataclass
class PairSet:
    name: str
    pairs: list[LabelledPair]
    index: np.ndarray  # the pair's line number in the source file
    a: np.ndarray  # (n, d) unit vectors of text_a
    b: np.ndarray
    labels: np.ndarray

    @property
    def similarity(self) -> np.ndarray:
        return np.einsum("ij,ij->i", self.a, self.b)

    def split(self) -> np.ndarray:
        """A fixed 50/50 split of whole groups: True = tune, False = measure.

        Pairs that share a sentence (directly or through other pairs) are one group and land on
        the same side, so nothing measured was seen in tuning: PAWS reuses each source sentence
        in up to 12 pairs, and QQP repeats popular questions.
        """
        keys = groups(self.name)
        return np.array(
            [
                hashlib.blake2b(f"{self.name}:{keys[i]}".encode(), digest_size=1).digest()[0] & 1
                == 0
                for i in self.index
            ]
        )


@cache
def groups(name: str) -> tuple[str, ...]:
    """Per line of the source file, a stable key of its group (connected by shared sentences)."""
    return tuple(pair_groups(read_pairs(SOURCES[name])))


def load(name: str, embedder: Embedder, *, limit: int | None = None, seed: int = 0) -> PairSet:
    """All pairs of ``name`` (or a seeded sample of ``limit``), with both texts embedded."""
    pairs = read_pairs(SOURCES[name])
    index = np.arange(len(pairs))
    if limit is not None and limit < len(pairs):
        index = np.sort(np.random.default_rng(seed).permutation(len(pairs))[:limit])
        pairs = [pairs[i] for i in index]
    fp = hashlib.blake2b(embedder.fingerprint.key().encode(), digest_size=6).hexdigest()
    path = CACHE / f"pairs_{name}_{len(pairs)}_{seed}_{fp}.npz"
    if path.exists():
        with np.load(path, allow_pickle=False) as z:
            a, b = z["a"], z["b"]
    else:
        from tqdm import tqdm

        a = np.empty((len(pairs), embedder.fingerprint.dim), dtype=np.float32)
        b = np.empty_like(a)
        step = 512
        for s in tqdm(range(0, len(pairs), step), desc=f"embedding {name}", unit="chunk"):
            chunk = pairs[s : s + step]
            a[s : s + len(chunk)] = embedder.embed([p.text_a for p in chunk])
            b[s : s + len(chunk)] = embedder.embed([p.text_b for p in chunk])
        CACHE.mkdir(parents=True, exist_ok=True)
        np.savez(path, a=a, b=b)
    labels = np.array([p.label for p in pairs], dtype=bool)
    return PairSet(name, pairs, index, a, b, labels)
