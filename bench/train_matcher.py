"""Train the shipped matcher: LoRA adapters on the packaged all-MiniLM-L6-v2 (embedder, verifier).

    OMP_NUM_THREADS=1 python bench/train_matcher.py train embedder
    OMP_NUM_THREADS=1 python bench/train_matcher.py train verifier
    python bench/train_matcher.py ship      # copy both adapters into semcache/embedders/adapters/

``--resume FILE --out DIR`` continues a run from its adapter (another pass over the same mix).

Training pairs are the *fit* parts of bench/_matcher_data.py (the train halves of QQP, PAWS,
MRPC and the GPTCache pairs, and STS-B's train file, minus a 15% validation split by group);
nothing of the measure halves is read. Adapters go to bench/.cache/matcher/<kind>/.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from _matcher_data import parts
from _pairs_cache import CACHE

from semcache.measure.pairs import LabelledPair

OUT = CACHE / "matcher"
SEED = 0

#: Per kind: (QQP fit pairs sampled, PAWS copies, STS-B copies, MRPC copies, GPTCache copies).
MIX = {"embedder": (12000, 3, 1, 2, 1), "verifier": (20000, 3, 1, 2, 1)}
RANK = 16
LEARNING_RATE = {"embedder": 2e-4, "verifier": 5e-4}
BUDGET = {"embedder": 3000.0, "verifier": 3000.0}


def hard(name: str, floor: float | None) -> list[LabelledPair]:
    """One set's fit pairs, or (with ``floor``) only those the shipped embedder scores at or above
    it: the candidates a verifier is asked about, not the easy pairs the embedder already parts."""
    fit = parts(name).fit
    if floor is None:
        return fit
    from bench_matcher import similarities

    from semcache.embedders.adapter import read_adapter
    from semcache.embedders.shipped import EMBEDDER

    tuned = similarities(name, "fit", read_adapter(EMBEDDER.path))[1]
    return [p for p, s in zip(fit, tuned, strict=True) if s >= floor]


def training_pairs(
    kind: str, qqp_limit: int | None = None, floor: float | None = None
) -> list[LabelledPair]:
    """The seeded training mix of one model (fit parts only; ``floor``: see ``hard``)."""
    n_qqp, paws, stsb, mrpc, gpt = MIX[kind]
    if qqp_limit is not None:
        n_qqp = qqp_limit
    rng = random.Random(SEED)
    qqp = hard("qqp", floor)
    qqp = rng.sample(qqp, min(n_qqp, len(qqp)))
    pairs = (
        qqp
        + hard("paws", floor) * paws
        + hard("stsb", floor) * stsb
        + hard("mrpc", floor) * mrpc
        + hard("gptcache", floor) * gpt
    )
    rng.shuffle(pairs)
    return pairs


def train(kind: str, budget: float, threads: int, lr: float, rank: int, qqp_limit: int | None,
          epochs: int, resume: Path | None = None,
          floor: float | None = None) -> None:  # fmt: skip
    from semcache.measure.tuning import TuneConfig, tune_embedder, tune_verifier

    pairs = training_pairs(kind, qqp_limit, floor)
    print(f"training the {kind} adapter on {len(pairs)} pairs "
          f"({sum(p.label for p in pairs)} positive)", file=sys.stderr)  # fmt: skip
    config = TuneConfig(
        epochs=epochs,
        batch_size=32,
        max_seq_length=64 if kind == "embedder" else 128,
        time_budget=budget,
        threads=threads,
        learning_rate=lr,
        seed=SEED,
        lora_rank=rank,
        checkpoint_every=25,
        schedule_by_time=True,
        adapter_name=f"semcache-matcher-{kind}",
        resume_from=resume,
    )
    fit = tune_embedder if kind == "embedder" else tune_verifier
    result = fit(pairs, OUT / kind, config=config)
    print(json.dumps(result.to_dict(), indent=1))


SHIPPED = Path(__file__).resolve().parent.parent / "semcache" / "embedders"


def ship() -> None:
    """Copy both adapters into the package and pin their sha256 in semcache/embedders/shipped.py."""
    for kind in ("embedder", "verifier"):
        ship_adapter(OUT / kind / "adapter.safetensors", kind)


def ship_adapter(source: Path, kind: str) -> None:
    """Copy ``source`` to semcache/embedders/adapters/<kind>.safetensors and pin its sha256 as
    ``<KIND>_SHA256`` in semcache/embedders/shipped.py."""
    import re
    import shutil

    from semcache.embedders.adapter import file_sha256

    target = SHIPPED / "adapters" / f"{kind}.safetensors"
    target.parent.mkdir(exist_ok=True)
    shutil.copyfile(source, target)
    digest = file_sha256(target)
    code, n = re.subn(
        rf'^{kind.upper()}_SHA256 = "[0-9a-f]*"$',
        f'{kind.upper()}_SHA256 = "{digest}"',
        (SHIPPED / "shipped.py").read_text(),
        flags=re.M,
    )
    if n != 1:
        raise SystemExit(f"{kind.upper()}_SHA256 not found in {SHIPPED / 'shipped.py'}")
    (SHIPPED / "shipped.py").write_text(code)
    print(f"{target}: {target.stat().st_size:,} bytes, sha256 {digest}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="stage", required=True)
    t = sub.add_parser("train")
    t.add_argument("kind", choices=sorted(MIX))
    t.add_argument("--budget", type=float, default=None, help="seconds of training")
    t.add_argument("--threads", type=int, default=1)
    t.add_argument("--lr", type=float, default=None)
    t.add_argument("--rank", type=int, default=RANK)
    t.add_argument("--qqp-limit", type=int, default=None)
    t.add_argument("--epochs", type=int, default=3, help="at most; the budget ends the run first")
    t.add_argument("--out", type=Path, default=None)
    t.add_argument("--resume", type=Path, default=None,
                   help="continue from this adapter file (same kind and rank)")  # fmt: skip
    t.add_argument("--hard-floor", type=float, default=None,
                   help="train only on fit pairs the shipped embedder scores >= this")  # fmt: skip
    sub.add_parser("ship")
    args = parser.parse_args()
    if args.stage == "ship":
        ship()
        return
    if args.stage == "train":
        global OUT
        OUT = args.out or OUT
        train(args.kind, args.budget or BUDGET[args.kind], args.threads,
              args.lr or LEARNING_RATE[args.kind], args.rank, args.qqp_limit,
              args.epochs, args.resume, args.hard_floor)  # fmt: skip


if __name__ == "__main__":
    main()
