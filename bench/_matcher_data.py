"""The labelled sets of ../shared/data, each split into train / validation / measure parts.

- QQP and PAWS: the calibration bench's fixed 50/50 split by group (bench/_pairs_cache.py); the
  tune half is the train part.
- MRPC train file and the GPTCache pairs: the same kind of 50/50 split by group, here.
- STS-B: its own files: sts-train is the train part, sts-dev + sts-test the measure part; a pair
  is labelled equivalent when its score is >= 4 ("mostly equivalent") of 5.

Every train part is split again, 85/15 by group (``semcache.measure.tuning.holdout_split``):
models are fit on the 85%, the out-of-box operating point is chosen on the 15% (validation), and
figures are reported on the measure parts only.
"""

from __future__ import annotations

import csv
import hashlib
import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
from _pairs_cache import DATA, SOURCES, PairSet

from semcache.measure.pairs import LabelledPair, pair_groups, read_pairs
from semcache.measure.tuning import holdout_split

FILES = {
    "qqp": SOURCES["qqp"],
    "paws": SOURCES["paws"],
    "mrpc": DATA / "mrpc-train" / "msr_paraphrase_train.txt",
    "stsb": DATA / "stsb" / "sts-train.csv",
    "stsb-dev": DATA / "stsb" / "sts-dev.csv",
    "stsb-test": DATA / "stsb" / "sts-test.csv",
    "gptcache": DATA / "gptcache-mock-pairs" / "mock_data.json",
}
SETS = ("qqp", "paws", "stsb", "mrpc", "gptcache")
STSB_EQUIVALENT = 4.0
VALIDATION = 0.15


@dataclass(frozen=True)
class Parts:
    fit: list[LabelledPair]
    validation: list[LabelledPair]
    measure: list[LabelledPair]


def _mrpc(path: Path) -> list[LabelledPair]:
    out = []
    with path.open(encoding="utf-8-sig") as f:
        reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        next(reader)
        for row in reader:
            out.append(LabelledPair(row[3], row[4], row[0] == "1"))
    return out


def _stsb(path: Path) -> list[LabelledPair]:
    out = []
    with path.open(encoding="utf-8") as f:
        for line in f:
            cols = line.rstrip("\n").split("\t")
            if len(cols) >= 7:
                out.append(LabelledPair(cols[5], cols[6], float(cols[4]) >= STSB_EQUIVALENT))
    return out


def _gptcache(path: Path) -> list[LabelledPair]:
    rows = json.loads(path.read_text(encoding="utf-8"))
    return [LabelledPair(r["origin"], r["similar"], True) for r in rows]


def _halves(name: str, pairs: list[LabelledPair]) -> tuple[list[LabelledPair], list[LabelledPair]]:
    if name in ("qqp", "paws"):
        empty = np.empty((0, 0), dtype=np.float32)
        ps = PairSet(name, pairs, np.arange(len(pairs)), empty, empty, np.empty(0, dtype=bool))
        tune = ps.split()
    else:
        keys = pair_groups(pairs)
        tune = np.array(
            [hashlib.blake2b(f"{name}:{k}".encode(), digest_size=1).digest()[0] & 1 == 0
             for k in keys]
        )  # fmt: skip
    return (
        [p for p, t in zip(pairs, tune, strict=True) if t],
        [p for p, t in zip(pairs, tune, strict=True) if not t],
    )


@cache
def parts(name: str) -> Parts:
    """The fit / validation / measure pairs of one set."""
    if name == "stsb":
        train = _stsb(FILES["stsb"])
        measure = _stsb(FILES["stsb-dev"]) + _stsb(FILES["stsb-test"])
    else:
        reader = {"mrpc": _mrpc, "gptcache": _gptcache}.get(name, read_pairs)
        train, measure = _halves(name, reader(FILES[name]))
    fit, val = holdout_split(train, VALIDATION, salt="semcache-matcher-validation")
    return Parts(fit, val, measure)


def file_hashes() -> dict[str, str]:
    """sha256 of every data file used, for the model card."""
    out = {}
    for path in FILES.values():
        h = hashlib.sha256()
        with path.open("rb") as f:  # the bytes on disk, compressed or not
            for block in iter(lambda f=f: f.read(1 << 20), b""):
                h.update(block)
        out[str(path.relative_to(DATA))] = h.hexdigest()
    return out
