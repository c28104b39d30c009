"""Test doubles that are real implementations: a deterministic embedder for pure-logic tests."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from semcache._clock import ManualClock
from semcache.embedders.base import normalize_rows
from semcache.errors import InvalidInputError
from semcache.models import ModelFingerprint

if TYPE_CHECKING:
    from numpy.typing import NDArray

__all__ = ["HashingEmbedder", "ManualClock"]

_TOKEN = re.compile(r"\w+")


class HashingEmbedder:
    """Bag-of-words feature hashing: texts sharing words are similar. Deterministic, instant.

    Not a semantic model; for tests of cache logic that must not depend on torch.
    """

    def __init__(self, dim: int = 64, *, name: str = "hashing") -> None:
        self._dim = dim
        self._fingerprint = ModelFingerprint(model=name, dim=dim, normalized=True)
        self.calls = 0

    @property
    def fingerprint(self) -> ModelFingerprint:
        return self._fingerprint

    def embed(self, texts: Sequence[str]) -> NDArray[np.float32]:
        self.calls += 1
        out = np.zeros((len(texts), self._dim), dtype=np.float32)
        for row, text in enumerate(texts):
            if not isinstance(text, str):
                raise InvalidInputError(f"cannot embed a {type(text).__name__}")
            tokens = _TOKEN.findall(text.lower()) or ["<empty>"]
            for tok in tokens:
                h = int.from_bytes(hashlib.blake2b(tok.encode(), digest_size=8).digest(), "big")
                out[row, h % self._dim] += 1.0 if (h >> 32) & 1 else -1.0
            if not out[row].any():
                out[row, 0] = 1.0
        return normalize_rows(out)
