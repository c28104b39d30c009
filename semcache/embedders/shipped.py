"""The matcher shipped in the package: LoRA adapters on the packaged all-MiniLM-L6-v2.

Three adapter files live in ``semcache/embedders/adapters/`` (about 4.6 MB, fp16 safetensors):
the embedder's, the cross-encoder verifier's (LoRA on the same backbone plus its classification
head) and the retrieval reranker's (the same kind, trained on relevance). Their sha256 digests
are fixed here and checked at every load. How they were trained, on what, and what they
measure: ``docs/model_card.md``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from semcache.embedders.adapter import Adapter, lora_variant, read_adapter
from semcache.models import ModelFingerprint

__all__ = [
    "ADAPTER_DIR",
    "EMBEDDER",
    "RERANKER",
    "VERIFIER",
    "ShippedAdapter",
    "embedder_adapter",
    "reranker_adapter",
    "tuned_for_prompts",
    "verifier_adapter",
    "warn_if_tuned_for_prompts",
]

log = logging.getLogger("semcache")

ADAPTER_DIR = Path(__file__).resolve().parent / "adapters"


@dataclass(frozen=True, slots=True)
class ShippedAdapter:
    """One adapter file of the package and its expected sha256."""

    file: str
    sha256: str

    @property
    def path(self) -> Path:
        return ADAPTER_DIR / self.file

    def read(self) -> Adapter:
        """Read and check it; :class:`~semcache.errors.AdapterError` if missing or altered."""
        return read_adapter(self.path, sha256=self.sha256)


#: Written by ``python bench/train_matcher.py ship``.
EMBEDDER_SHA256 = "a6926ae8ab418b5c2b7586af166001e2254e312caac95d8a1f4689d283372c14"
VERIFIER_SHA256 = "957f917cca12625b4f562dc007688dbf9854a449065a48dd5722726e3400e0a4"
#: Written by ``python bench/train_reranker.py --ship DIR``.
RERANKER_SHA256 = "13eeabab302f7da8ffdbe7e85372b47e785a9dc2276bead03700787976eb7d5c"

EMBEDDER = ShippedAdapter("embedder.safetensors", EMBEDDER_SHA256)
VERIFIER = ShippedAdapter("verifier.safetensors", VERIFIER_SHA256)
RERANKER = ShippedAdapter("reranker.safetensors", RERANKER_SHA256)


def embedder_adapter() -> Adapter:
    """The shipped embedder adapter (what ``default_embedder()`` merges into MiniLM)."""
    return EMBEDDER.read()


def verifier_adapter() -> Adapter:
    """The shipped verifier adapter: LoRA on MiniLM plus the classification head."""
    return VERIFIER.read()


def reranker_adapter() -> Adapter:
    """The shipped retrieval reranker's adapter: LoRA on MiniLM plus its relevance head."""
    return RERANKER.read()


def tuned_for_prompts(fingerprint: ModelFingerprint) -> bool:
    """Whether vectors with this fingerprint come from the shipped embedder adapter, which is
    tuned for matching prompts and ranks passages worse than the plain model (a retriever's
    store should not use it; docs/BENCHMARKS.md, "Tuned embedder on retrieval")."""
    return lora_variant(EMBEDDER.sha256) in fingerprint.variant.split("+")


def warn_if_tuned_for_prompts(fingerprint: ModelFingerprint, what: str) -> None:
    """Log a warning when ``what`` (a retrieval component) embeds with the shipped adapter."""
    if tuned_for_prompts(fingerprint):
        log.warning(
            "semcache: %s embeds with the shipped matcher adapter, tuned for matching prompts; "
            "it ranks passages worse than the plain model (docs/BENCHMARKS.md, 'Tuned embedder "
            "on retrieval'): give retrieval default_embedder(tuned=False)",
            what,
        )
