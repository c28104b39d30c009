"""Train the retrieval reranker: a LoRA cross-encoder on the packaged all-MiniLM-L6-v2.

    OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 python bench/train_reranker.py [--budget 2700]
    python bench/train_reranker.py --resume semcache/embedders/adapters/verifier.safetensors \
        --out bench/.cache/reranker-from-verifier --negatives 15 --budget 1800   # the shipped one
    python bench/train_reranker.py --ship bench/.cache/reranker-from-verifier

It is the verifier's kind of model (LoRA on MiniLM plus a one-logit classification head, the
same adapter file format, the same ONNX export) trained on relevance instead of equivalence:
(query, title + abstract) pairs from the *fit* queries of SciFact's train qrels, labelled
judged-relevant or not. Negatives are drawn from each query's fused top 20 (the documents the
reranker will be asked to reorder). The queries split three ways by a hash of the query id
(bench_rerank.split): fit (train here), validate (bench_rerank chooses the blend with the fused
order on them) and measure (reported, never trained or chosen on); MS MARCO is never read.
The adapter goes to bench/.cache/reranker/.
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

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_rerank import MAX_LENGTH, OUT, candidates, split

from semcache.measure.pairs import LabelledPair

SEED = 0
NEGATIVES = 7  # non-relevant documents per query, sampled from its fused top 20
POSITIVE_COPIES = 2  # each judged document is seen twice per epoch (about 2 : 7)


def training_pairs(negatives: int = NEGATIVES) -> list[LabelledPair]:
    """(query, document) pairs of the fit queries, seeded and shuffled."""
    rng = random.Random(SEED)
    cands, qrels, texts = candidates("beir-scifact")
    pairs: list[LabelledPair] = []
    for qid, query, docs in cands:
        if split(qid) != "fit":
            continue
        relevant = [d for d, g in qrels[qid].items() if g > 0 and d in texts]
        others = [d for d in docs if d not in qrels[qid]]
        sampled = rng.sample(others, min(negatives, len(others)))
        pairs += [LabelledPair(query, texts[d], True) for d in relevant] * POSITIVE_COPIES
        pairs += [LabelledPair(query, texts[d], False) for d in sampled]
    rng.shuffle(pairs)
    return pairs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=2700.0, help="seconds of training")
    parser.add_argument("--epochs", type=int, default=3, help="at most; the budget ends first")
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument(
        "--resume",
        type=Path,
        default=None,
        help="start from this cross-encoder adapter (e.g. the shipped verifier's)",
    )
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--negatives", type=int, default=NEGATIVES, help="per query, of 20")
    parser.add_argument("--ship", type=Path, default=None, metavar="DIR",
                        help="copy DIR's adapter into the package (no training)")  # fmt: skip
    args = parser.parse_args()
    if args.ship is not None:
        from train_matcher import ship_adapter

        ship_adapter(args.ship / "adapter.safetensors", "reranker")
        return 0
    from semcache.measure.tuning import TuneConfig, tune_verifier

    pairs = training_pairs(args.negatives)
    print(f"training the reranker on {len(pairs)} pairs "
          f"({sum(p.label for p in pairs)} positive)", file=sys.stderr)  # fmt: skip
    config = TuneConfig(
        epochs=args.epochs,
        batch_size=args.batch,
        max_seq_length=MAX_LENGTH,
        time_budget=args.budget,
        threads=1,
        learning_rate=args.lr,
        seed=SEED,
        lora_rank=args.rank,
        checkpoint_every=25,
        schedule_by_time=True,
        adapter_name="semcache-reranker",
        resume_from=args.resume,
    )
    result = tune_verifier(pairs, args.out, config=config, swap_roles=False)
    print(json.dumps(result.to_dict(), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
