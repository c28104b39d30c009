"""Fine-tuning the matcher on labelled pairs: the embedder (bi-encoder) and the verifier.

A cosine threshold can only separate what the embedding separates. :func:`tune_embedder` trains
the cache's sentence-transformers model on labelled pairs, with the losses sentence-transformers
provides: multiple-negatives ranking on the duplicates (every other pair of the batch is a
negative) plus an online contrastive loss on all pairs (non-duplicates are the hard negatives),
optionally wrapped in a Matryoshka loss so the tuned vectors can be truncated.
:func:`tune_verifier` trains a cross-encoder (sentence-transformers ``CrossEncoder``, one logit)
that reads both prompts together, starting from the same local MiniLM weights with a fresh head.

Both run a plain PyTorch loop on CPU (no ``datasets``/``accelerate`` needed), show progress on
stderr, stop gracefully at a time budget and save a model directory loadable by path:
``SentenceTransformerEmbedder(out)`` and ``CrossEncoderVerifier.load(out)``.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from semcache.errors import ConfigurationError, InvalidInputError, MissingDependencyError
from semcache.measure.pairs import LabelledPair, pair_groups

if TYPE_CHECKING:
    import torch

__all__ = [
    "ADAPTER_FILE",
    "TuneConfig",
    "TuneResult",
    "holdout_split",
    "tune_embedder",
    "tune_verifier",
]

#: Written into every tuned model directory: what it was trained from and how.
TUNING_FILE = "semcache_tuning.json"

#: Peak learning rate per model when ``TuneConfig.learning_rate`` is ``None``.
DEFAULT_LEARNING_RATE = {"embedder": 2e-5, "verifier": 7e-5}


@dataclass(frozen=True, slots=True, kw_only=True)
class TuneConfig:
    """How to train. Validated at construction.

    Attributes:
        epochs: passes over the pairs (the time budget may stop earlier).
        batch_size: pairs per optimiser step.
        learning_rate: peak AdamW learning rate (linear warm-up, then linear decay); ``None``
            picks per model: ``2e-5`` for the embedder, ``7e-5`` for the verifier, whose
            classification head starts from scratch (at ``2e-5`` one epoch of 24k pairs left it
            near chance on PAWS).
        warmup: fraction of the planned steps spent warming up.
        max_seq_length: tokens kept per text (per pair, for the verifier).
        time_budget: seconds of training after which the loop stops and saves; ``None`` = none.
        mnrl: embedder only: multiple-negatives ranking loss on the duplicates of each batch.
        contrastive: embedder only: online contrastive loss on every pair of each batch.
        matryoshka_dims: embedder only: also train these truncated sizes (e.g. ``(256, 128)``).
        freeze_embeddings: keep the word-embedding table fixed (half of MiniLM's weights): a
            much cheaper optimiser step on CPU, and rare words keep their pretrained vectors.
        seed: shuffling and initialisation seed.
        threads: ``torch.set_num_threads`` for the run (process-wide); ``None`` leaves it.
        progress: a tqdm bar on stderr.
        lora_rank: train a LoRA adapter of this rank (the base model frozen) and save it as
            ``adapter.safetensors`` in ``out`` instead of a whole model; ``None`` fine-tunes
            the whole model. The verifier's classification head is trained whole either way.
        lora_alpha: the LoRA scale numerator (update = ``alpha / rank * B @ A``); ``None``
            means ``2 * lora_rank``.
        checkpoint_every: with LoRA, also write ``checkpoint.safetensors`` every this many
            steps (a run stopped early keeps what it learned).
        adapter_name: the adapter's identity, stored in its file (and in the fingerprint).
        schedule_by_time: with a ``time_budget``, warm up and decay the learning rate over the
            budget's seconds rather than over the planned steps (for a run sized by time: the
            rate reaches 0 when the budget ends, whatever the machine's speed).
        resume_from: with LoRA, an adapter file of the same kind, rank and alpha to continue
            training from (its low-rank pairs and head) instead of starting at the base model.
    """

    epochs: int = 1
    batch_size: int = 32
    learning_rate: float | None = None
    warmup: float = 0.1
    max_seq_length: int = 128
    time_budget: float | None = None
    mnrl: bool = True
    contrastive: bool = True
    matryoshka_dims: tuple[int, ...] = ()
    freeze_embeddings: bool = True
    seed: int = 0
    threads: int | None = None
    progress: bool = True
    lora_rank: int | None = None
    lora_alpha: float | None = None
    checkpoint_every: int | None = None
    adapter_name: str = "semcache-adapter"
    schedule_by_time: bool = False
    resume_from: Path | None = None

    def __post_init__(self) -> None:
        if not 1 <= self.epochs <= 100:
            raise ConfigurationError(f"epochs must be in 1..100, got {self.epochs}")
        if not 2 <= self.batch_size <= 4096:
            raise ConfigurationError(f"batch_size must be in 2..4096, got {self.batch_size}")
        if self.learning_rate is not None and not 0.0 < self.learning_rate < 1.0:
            raise ConfigurationError(f"learning_rate must be in (0, 1), got {self.learning_rate}")
        if not 0.0 <= self.warmup < 1.0:
            raise ConfigurationError(f"warmup must be in [0, 1), got {self.warmup}")
        if not 8 <= self.max_seq_length <= 512:
            raise ConfigurationError(f"max_seq_length must be in 8..512, got {self.max_seq_length}")
        if self.time_budget is not None and not (
            self.time_budget > 0 and math.isfinite(self.time_budget)
        ):
            raise ConfigurationError(
                f"time_budget must be a positive number of seconds or None, got {self.time_budget}"
            )
        if not (self.mnrl or self.contrastive):
            raise ConfigurationError("at least one of mnrl and contrastive must be on")
        if any(d < 1 for d in self.matryoshka_dims):
            raise ConfigurationError(
                f"matryoshka_dims must be positive sizes, got {self.matryoshka_dims}"
            )
        if self.threads is not None and self.threads < 1:
            raise ConfigurationError(f"threads must be >= 1 or None, got {self.threads}")
        if self.lora_rank is not None and not 1 <= self.lora_rank <= 256:
            raise ConfigurationError(f"lora_rank must be in 1..256 or None, got {self.lora_rank}")
        if self.resume_from is not None and self.lora_rank is None:
            raise ConfigurationError("resume_from continues a LoRA run: set lora_rank too")
        if self.checkpoint_every is not None and self.checkpoint_every < 1:
            raise ConfigurationError(
                f"checkpoint_every must be >= 1 or None, got {self.checkpoint_every}"
            )

    @property
    def alpha(self) -> float:
        """The LoRA scale numerator in use."""
        return self.lora_alpha if self.lora_alpha is not None else 2.0 * (self.lora_rank or 0)


@dataclass(frozen=True, slots=True, kw_only=True)
class TuneResult:
    """What a training run did."""

    kind: str  # "embedder" or "verifier"
    out: str
    base: str
    pairs: int
    positives: int
    steps: int
    planned_steps: int
    pairs_seen: int
    seconds: float
    stopped_by_budget: bool
    final_loss: float

    @property
    def pairs_per_second(self) -> float:
        return self.pairs_seen / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["pairs_per_second"] = round(self.pairs_per_second, 2)
        return data


def holdout_split(
    pairs: Sequence[LabelledPair], fraction: float, *, salt: str = "semcache-tune"
) -> tuple[list[LabelledPair], list[LabelledPair]]:
    """Split pairs into (train, held out) by a hash of their group (:func:`pair_groups`).

    Pairs sharing a text land on the same side, so no held-out text was trained on; the split
    is fixed for a given set of pairs, whatever their order.
    """
    if not 0.0 < fraction < 1.0:
        raise ConfigurationError(f"the held-out fraction must be in (0, 1), got {fraction}")
    train: list[LabelledPair] = []
    held: list[LabelledPair] = []
    for pair, key in zip(pairs, pair_groups(pairs), strict=True):
        h = hashlib.blake2b(f"{salt}:{key}".encode(), digest_size=4).digest()
        (held if int.from_bytes(h, "big") / 2**32 < fraction else train).append(pair)
    if not train or not held:
        raise InvalidInputError(
            f"cannot hold out {fraction:g} of {len(pairs)} pairs: they form too few groups of "
            "pairs sharing a text (each group stays on one side); add pairs with other texts"
        )
    return train, held


# -- the shared loop ----------------------------------------------------------------------------


def _torch() -> Any:
    try:
        import torch
    except ImportError as e:
        raise MissingDependencyError("torch", "embeddings") from e
    return torch


def _check_pairs(pairs: Sequence[LabelledPair], batch_size: int) -> None:
    if len(pairs) < batch_size:
        raise InvalidInputError(
            f"need at least batch_size={batch_size} labelled pairs to train, got {len(pairs)}"
        )


def _train(
    params: list[torch.nn.Parameter],
    pairs: Sequence[LabelledPair],
    step_loss: Callable[[list[LabelledPair]], torch.Tensor],
    config: TuneConfig,
    lr: float,
    desc: str,
    on_step: Callable[[int, float], None] | None = None,
) -> tuple[int, int, int, float, bool, float]:
    """AdamW with linear warm-up/decay; returns steps, planned, pairs seen, loss, budget, secs."""
    th = _torch()
    from tqdm import tqdm
    from transformers import get_linear_schedule_with_warmup

    per_epoch = len(pairs) // config.batch_size
    planned = per_epoch * config.epochs
    optimizer = th.optim.AdamW(params, lr=lr)
    warm = int(config.warmup * planned)
    if config.schedule_by_time and config.time_budget is not None:
        budget = config.time_budget
        clock_start = time.monotonic()

        def factor(_step: int) -> float:
            # warm up over the first ``warmup`` of the budget, then decay to 0 at its end
            f = (time.monotonic() - clock_start) / budget
            if f < config.warmup:
                return max(f / config.warmup, 1e-3)
            return max(0.0, (1.0 - f) / (1.0 - config.warmup))

        schedule = th.optim.lr_scheduler.LambdaLR(optimizer, factor)
    else:
        schedule = get_linear_schedule_with_warmup(optimizer, warm, planned)  # type: ignore[no-untyped-call]
    rng = random.Random(config.seed)
    order = list(range(len(pairs)))
    steps = seen = 0
    loss_avg = float("nan")
    stopped = False
    start = time.monotonic()
    bar = tqdm(total=planned, desc=desc, unit="step", disable=not config.progress)
    try:
        for _ in range(config.epochs):
            rng.shuffle(order)
            for s in range(per_epoch):
                batch = [
                    pairs[i] for i in order[s * config.batch_size : (s + 1) * config.batch_size]
                ]
                loss = step_loss(batch)
                loss.backward()  # type: ignore[no-untyped-call]
                th.nn.utils.clip_grad_norm_(params, 1.0)
                optimizer.step()
                schedule.step()
                optimizer.zero_grad(set_to_none=True)
                steps += 1
                seen += len(batch)
                value = float(loss.detach())
                loss_avg = value if math.isnan(loss_avg) else 0.95 * loss_avg + 0.05 * value
                bar.update(1)
                bar.set_postfix(loss=f"{loss_avg:.4f}", refresh=False)
                if on_step is not None:
                    on_step(steps, loss_avg)
                if (
                    config.time_budget is not None
                    and time.monotonic() - start >= config.time_budget
                ):
                    stopped = steps < planned
                    break
            if stopped:
                break
    finally:
        bar.close()
    return steps, planned, seen, loss_avg, stopped, time.monotonic() - start


def _trainable(model: torch.nn.Module, config: TuneConfig) -> list[torch.nn.Parameter]:
    """The parameters to train: all but the word embeddings when ``freeze_embeddings``."""
    params = []
    for name, p in model.named_parameters():
        if config.freeze_embeddings and "word_embeddings" in name:
            p.requires_grad_(False)
        if p.requires_grad:
            params.append(p)
    return params


def _set_threads(config: TuneConfig) -> None:
    if config.threads is not None:
        _torch().set_num_threads(config.threads)
    _torch().manual_seed(config.seed)


def _write_record(out: Path, result: TuneResult, config: TuneConfig) -> None:
    record = {"result": result.to_dict(), "config": asdict(config)}
    (out / TUNING_FILE).write_text(
        json.dumps(record, indent=1, default=str) + "\n", encoding="utf-8"
    )


def _base_source(base: str | None) -> str:
    if base is not None:
        return base
    from semcache.embedders.sentence_transformers import SentenceTransformerEmbedder

    return SentenceTransformerEmbedder(memo_size=0).source


# -- the embedder -------------------------------------------------------------------------------


def tune_embedder(
    pairs: Sequence[LabelledPair],
    out: str | Path,
    *,
    base: str | None = None,
    config: TuneConfig | None = None,
) -> TuneResult:
    """Fine-tune a sentence-transformers model on labelled pairs and save it to ``out``.

    Args:
        pairs: duplicates (label ``True``) and non-duplicates, ideally hard ones.
        out: the model directory to write (created; load it with ``SentenceTransformerEmbedder``).
        base: a local model directory or name; the packaged all-MiniLM-L6-v2 by default.
        config: training settings.
    """
    config = config or TuneConfig()
    _check_pairs(pairs, config.batch_size)
    _set_threads(config)
    th = _torch()
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.losses import (
        MultipleNegativesRankingLoss,
        OnlineContrastiveLoss,
    )
    from sentence_transformers.util import batch_to_device

    source = _base_source(base)
    model = SentenceTransformer(source, device="cpu", local_files_only=True)
    model.max_seq_length = config.max_seq_length
    dim = int(model.get_embedding_dimension() or 0)
    dims = sorted({dim, *config.matryoshka_dims}, reverse=True)
    if dims[0] != dim:
        raise ConfigurationError(f"matryoshka_dims must be <= the model's dimension {dim}")

    mnrl = MultipleNegativesRankingLoss(model) if config.mnrl else None
    contrastive = OnlineContrastiveLoss(model) if config.contrastive else None

    def embed(texts: list[str]) -> torch.Tensor:
        feats = batch_to_device(model.preprocess(texts), model.device)
        out: torch.Tensor = model(feats)["sentence_embedding"]
        return out

    def step_loss(batch: list[LabelledPair]) -> torch.Tensor:
        # One forward pass per side; every loss (and every Matryoshka size) reuses it, as
        # MatryoshkaLoss does with its embedding cache.
        ea = embed([p.text_a for p in batch])
        eb = embed([p.text_b for p in batch])
        labels = th.tensor([float(p.label) for p in batch])
        pos = labels.bool()
        total: torch.Tensor = th.zeros(())
        for d in dims:
            a, b = ea[:, :d], eb[:, :d]
            if contrastive is not None:
                total = total + contrastive.compute_loss_from_embeddings([a, b], labels)
            if mnrl is not None and int(pos.sum()) >= 2:
                total = total + mnrl.compute_loss_from_embeddings(
                    [a[pos], b[pos]], th.zeros(int(pos.sum()))
                )
        return total

    return _fit_and_save("embedder", model, source, pairs, step_loss, config, out)


# -- the verifier -------------------------------------------------------------------------------


def tune_verifier(
    pairs: Sequence[LabelledPair],
    out: str | Path,
    *,
    base: str | None = None,
    config: TuneConfig | None = None,
    swap_roles: bool = True,
) -> TuneResult:
    """Train a cross-encoder verifier on labelled pairs (binary cross-entropy) and save it.

    Starts from ``base`` (default: the packaged all-MiniLM-L6-v2 directory, no hub access) with a
    fresh one-logit classification head. With ``swap_roles`` (the default) each time a pair is
    drawn its two texts are swapped at random, since the verifier is asked about (new prompt,
    cached prompt) in either role; ``False`` keeps (text_a, text_b) in order, as for a
    reranker's (query, passage) pairs.
    """
    config = config or TuneConfig()
    _check_pairs(pairs, config.batch_size)
    _set_threads(config)
    th = _torch()
    from sentence_transformers import CrossEncoder
    from sentence_transformers.cross_encoder.losses import BinaryCrossEntropyLoss

    source = _base_source(base)
    model = CrossEncoder(
        source, num_labels=1, max_length=config.max_seq_length, device="cpu", local_files_only=True
    )
    bce = BinaryCrossEntropyLoss(model)
    flip = random.Random(config.seed + 1)

    def step_loss(batch: list[LabelledPair]) -> torch.Tensor:
        swapped = [(p.text_b, p.text_a) if swap_roles and flip.random() < 0.5
                   else (p.text_a, p.text_b) for p in batch]  # fmt: skip
        labels = th.tensor([float(p.label) for p in batch])
        loss: torch.Tensor = bce([[a for a, _ in swapped], [b for _, b in swapped]], labels)
        return loss

    return _fit_and_save("verifier", model, source, pairs, step_loss, config, out)


#: The file a LoRA run writes into ``out`` (and ``checkpoint.safetensors`` while it runs).
ADAPTER_FILE = "adapter.safetensors"


def _fit_and_save(
    kind: str,
    model: Any,
    source: str,
    pairs: Sequence[LabelledPair],
    step_loss: Callable[[list[LabelledPair]], Any],
    config: TuneConfig,
    out: str | Path,
) -> TuneResult:
    """Train ``model`` with ``step_loss``, save it (or its adapter) to ``out`` with a record."""
    from semcache.embedders.adapter import read_adapter, write_adapter
    from semcache.measure.lora import attach_lora

    target = Path(out)
    target.mkdir(parents=True, exist_ok=True)
    model.train()
    lr = config.learning_rate or DEFAULT_LEARNING_RATE[kind]
    on_step: Callable[[int, float], None] | None = None
    lora = None
    if config.lora_rank is None:
        params = _trainable(model, config)
    else:
        root = model[0].auto_model if kind == "embedder" else model.model
        head = ("bert.pooler", "classifier") if kind == "verifier" else ()
        start = read_adapter(config.resume_from) if config.resume_from is not None else None
        lora = attach_lora(
            root, rank=config.lora_rank, alpha=config.alpha, train_full=head, start=start
        )
        params = lora.parameters()

        def save(path: Path, steps: int) -> str:
            assert lora is not None
            weights, full = lora.arrays()
            return write_adapter(
                path,
                name=config.adapter_name,
                rank=lora.rank,
                alpha=lora.alpha,
                lora=weights,
                tensors=full,
                metadata={"kind": kind, "steps": str(steps)},
            )

        every = config.checkpoint_every

        def checkpoint(steps: int, _loss: float) -> None:
            if every is not None and steps % every == 0:
                save(target / "checkpoint.safetensors", steps)

        on_step = checkpoint
    steps, planned, seen, loss, stopped, secs = _train(
        params, pairs, step_loss, config, lr, f"tuning {kind}", on_step
    )
    model.eval()
    if lora is None:
        model.save(str(target))
    else:
        save(target / ADAPTER_FILE, steps)
    result = TuneResult(
        kind=kind,
        out=str(target),
        base=source,
        pairs=len(pairs),
        positives=sum(p.label for p in pairs),
        steps=steps,
        planned_steps=planned,
        pairs_seen=seen,
        seconds=round(secs, 2),
        stopped_by_budget=stopped,
        final_loss=round(loss, 6),
    )
    _write_record(target, result, replace(config, learning_rate=lr))
    return result
