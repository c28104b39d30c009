"""The matcher shipped in the package: LoRA adapters on the packaged all-MiniLM-L6-v2.

Two adapter files live in ``semcache/embedders/adapters/`` (about 3 MB, fp16 safetensors): one
for the embedder and one for the cross-encoder verifier (LoRA on the same backbone plus its
classification head). Their sha256 digests are fixed here and checked at every load. How they
were trained, on what, and what they measure: ``docs/model_card.md``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from semcache.embedders.adapter import Adapter, read_adapter

__all__ = [
    "ADAPTER_DIR",
    "EMBEDDER",
    "VERIFIER",
    "ShippedAdapter",
    "embedder_adapter",
    "verifier_adapter",
]

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

EMBEDDER = ShippedAdapter("embedder.safetensors", EMBEDDER_SHA256)
VERIFIER = ShippedAdapter("verifier.safetensors", VERIFIER_SHA256)


def embedder_adapter() -> Adapter:
    """The shipped embedder adapter (what ``default_embedder()`` merges into MiniLM)."""
    return EMBEDDER.read()


def verifier_adapter() -> Adapter:
    """The shipped verifier adapter: LoRA on MiniLM plus the classification head."""
    return VERIFIER.read()
