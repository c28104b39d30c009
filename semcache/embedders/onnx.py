"""The hit-path encoder: a sentence-transformers model run by ONNX Runtime on CPU.

:class:`OnnxEmbedder` runs the cached export of :mod:`semcache.embedders.export` (exported once,
with torch) using only onnxruntime, the model's own fast tokenizer and numpy pooling: a warm
start imports neither torch nor transformers.

Interchangeability with torch: every load embeds :data:`~semcache.embedders.export.PROBE_TEXTS` and
compares them with torch's vectors recorded at export. The fp32 model must agree with torch to a
cosine of at least :data:`FP32_MIN_COSINE` (0.9999) on each of them, and then carries the *same*
fingerprint as :class:`~semcache.embedders.SentenceTransformerEmbedder`, so both fill one
index (measured on the packaged model: >= 0.9999998 on 330 real sentences). The int8 model is not
interchangeable: it gets the fingerprint variant ``"onnx-int8"`` and needs only
:data:`INT8_MIN_COSINE` as a sanity floor; its measured agreement is in
:attr:`OnnxEmbedder.agreement`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from semcache.embedders.adapter import Adapter
from semcache.embedders.base import DEFAULT_MODEL, VectorMemo, normalize_rows
from semcache.embedders.export import PROBE_TEXTS, OnnxExport, ensure_export
from semcache.embedders.pooling import pool
from semcache.embedders.sentence_transformers import adapter_variant, join_variant
from semcache.embedders.window import TextWindow
from semcache.errors import (
    ConfigurationError,
    EmbeddingError,
    InvalidInputError,
    MissingDependencyError,
    ModelLoadError,
)
from semcache.models import ModelFingerprint

if TYPE_CHECKING:
    from numpy.typing import NDArray

__all__ = ["FP32_MIN_COSINE", "INT8_MIN_COSINE", "Agreement", "OnnxEmbedder", "default_threads"]

log = logging.getLogger("semcache")

FP32_MIN_COSINE = 0.9999
INT8_MIN_COSINE = 0.95

_FEATURE = {"input_ids": "ids", "attention_mask": "attention_mask", "token_type_ids": "type_ids"}


def default_threads() -> int:
    """Half the CPUs, at least one: leaves room for the application on small machines."""
    return max(1, (os.cpu_count() or 2) // 2)


@dataclass(frozen=True, slots=True, kw_only=True)
class Agreement:
    """Cosine between this embedder's and torch's vectors on the probe texts."""

    min_cosine: float
    mean_cosine: float
    probes: int


class OnnxEmbedder:
    """A sentence-transformers model on ONNX Runtime (CPU), exported and cached on first use.

    Args:
        model: the packaged default or a local sentence-transformers directory whose pipeline is
            Transformer, Pooling (cls/max/mean/mean_sqrt_len_tokens/weightedmean/lasttoken) and an
            optional Normalize.
        int8: run the dynamically quantised model (faster, own fingerprint, see module docstring).
        truncate_dim: Matryoshka truncation, as in ``SentenceTransformerEmbedder``.
        batch_size: texts per forward pass (texts are sorted by length first, to pad less).
        memo_size: how many recent texts keep their vector in memory (0 disables the memo).
        intra_op_threads: ONNX Runtime threads per call; default :func:`default_threads`.
        cache_dir: where exports live (default: :func:`~semcache.embedders.export.cache_root`).
        adapter: a LoRA adapter merged into the weights before the export (its own export and
            the same fingerprint as ``SentenceTransformerEmbedder(adapter=...)``).

    Raises :class:`MissingDependencyError` without onnxruntime, and :class:`ModelLoadError` when
    the export fails or disagrees with torch.
    """

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        *,
        int8: bool = False,
        truncate_dim: int | None = None,
        batch_size: int = 32,
        memo_size: int = 4096,
        intra_op_threads: int | None = None,
        cache_dir: Path | str | None = None,
        adapter: Adapter | None = None,
    ) -> None:
        if batch_size < 1:
            raise ConfigurationError(f"batch_size must be >= 1, got {batch_size}")
        if truncate_dim is not None and truncate_dim < 1:
            raise ConfigurationError(f"truncate_dim must be >= 1, got {truncate_dim}")
        threads = default_threads() if intra_op_threads is None else intra_op_threads
        if threads < 1:
            raise ConfigurationError(f"intra_op_threads must be >= 1, got {threads}")
        try:
            import onnxruntime  # noqa: F401  (a missing runtime is a clear error here)
            from tokenizers import Tokenizer
        except ImportError as e:
            raise MissingDependencyError(e.name or "onnxruntime", "onnx") from e
        self._run_errors = runtime_errors(TypeError)
        self._memo = VectorMemo(memo_size)
        self._batch_size = batch_size
        self._threads = threads
        self._export = ensure_export(model, cache_dir=cache_dir, int8=int8, adapter=adapter)
        manifest = self._export.manifest
        if truncate_dim is not None and truncate_dim > manifest.dim:
            raise ConfigurationError(
                f"truncate_dim={truncate_dim} exceeds the model's dimension {manifest.dim}"
            )
        self._full_dim = manifest.dim
        self._dim = truncate_dim or manifest.dim
        self._pooling = manifest.pooling_spec
        self._inputs = manifest.inputs
        self._int8 = int8
        path = self._export.int8_path if int8 else self._export.model_path
        try:
            self._session = cpu_session(path, threads)
            self._tokenizer = Tokenizer.from_file(str(self._export.tokenizer_path))
        except runtime_errors(OSError) as e:
            raise ModelLoadError(f"cannot load the ONNX export {path}: {e}") from e
        variant = join_variant(
            f"mrl{self._dim}" if truncate_dim else "",
            "onnx-int8" if int8 else "",
            adapter_variant(adapter),
        )
        self._fingerprint = ModelFingerprint(
            model=manifest.model,
            dim=self._dim,
            normalized=True,
            revision=manifest.revision,
            variant=variant,
        )
        self._window: TextWindow | None = None
        self._agreement = self._check_against_torch()

    def _check_against_torch(self) -> Agreement:
        try:
            reference = self._export.reference()
            vectors = self._encode_full(list(PROBE_TEXTS))
        except (OSError, ValueError, EmbeddingError) as e:
            raise ModelLoadError(f"self-check of {self.model_path} failed: {e}") from e
        if reference.shape != vectors.shape:
            raise ModelLoadError(
                f"reference vectors {reference.shape} do not match the model's {vectors.shape}; "
                f"delete {self._export.directory}"
            )
        cosines = (vectors * reference).sum(axis=1)
        agreement = Agreement(
            min_cosine=float(cosines.min()),
            mean_cosine=float(cosines.mean()),
            probes=len(cosines),
        )
        floor = INT8_MIN_COSINE if self._int8 else FP32_MIN_COSINE
        if agreement.min_cosine < floor:
            raise ModelLoadError(
                f"ONNX model {self.model_path} agrees with torch only to cosine "
                f"{agreement.min_cosine:.6f} (< {floor}); delete {self._export.directory}"
            )
        return agreement

    @property
    def fingerprint(self) -> ModelFingerprint:
        return self._fingerprint

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def backend(self) -> str:
        """``"onnx"`` or ``"onnx-int8"``: which runtime computes the vectors."""
        return "onnx-int8" if self._int8 else "onnx"

    @property
    def agreement(self) -> Agreement:
        """How closely this model matched torch on the probe texts at load."""
        return self._agreement

    @property
    def export(self) -> OnnxExport:
        """The export on disk (``export.created`` says whether this load wrote it)."""
        return self._export

    @property
    def model_path(self) -> Path:
        return self._export.int8_path if self._int8 else self._export.model_path

    @property
    def threads(self) -> int:
        return self._threads

    @property
    def text_window(self) -> TextWindow:
        """What of a text this model reads (its tokenizer and ``max_seq_length``)."""
        if self._window is None:
            self._window = TextWindow(self._tokenizer, self._export.manifest.max_seq_length)
        return self._window

    def embed(self, texts: Sequence[str]) -> NDArray[np.float32]:
        """Embed texts, reusing memoised vectors for exact repeats."""
        return self._memo.embed(texts, self._dim, self._encode)

    def _encode(self, texts: list[str]) -> NDArray[np.float32]:
        full = self._encode_full(texts)
        if self._dim == self._full_dim:
            return full
        try:
            return normalize_rows(full[:, : self._dim])
        except InvalidInputError as e:
            raise EmbeddingError(f"model produced an invalid vector: {e}") from e

    def _encode_full(self, texts: list[str]) -> NDArray[np.float32]:
        """Full-width unit vectors; texts are sorted by length so a batch pads little."""
        out = np.empty((len(texts), self._full_dim), dtype=np.float32)
        order = np.argsort([-len(t) for t in texts], kind="stable")
        for start in range(0, len(texts), self._batch_size):
            idx = order[start : start + self._batch_size]
            out[idx] = self._forward([texts[i] for i in idx])
        try:
            return normalize_rows(out)
        except InvalidInputError as e:
            raise EmbeddingError(f"model produced an invalid vector: {e}") from e

    def _forward(self, texts: list[str]) -> NDArray[np.float32]:
        try:
            if len(texts) == 1:
                encodings = [self._tokenizer.encode(texts[0])]
            else:
                encodings = self._tokenizer.encode_batch(texts)
            feed = {
                name: np.array([getattr(e, _FEATURE[name]) for e in encodings], dtype=np.int64)
                for name in self._inputs
            }
            (tokens,) = self._session.run(["token_embeddings"], feed)
        except self._run_errors as e:
            raise EmbeddingError(f"ONNX embedding failed: {e}") from e
        return pool(tokens, feed["attention_mask"], self._pooling)


def cpu_session(path: Path, threads: int) -> Any:
    """An onnxruntime session on the CPU: ``threads`` intra-op threads, one inter-op, all graph
    optimisations. Raises what :func:`runtime_errors` lists."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def runtime_errors(*extra: type[BaseException]) -> tuple[type[BaseException], ...]:
    """The exception types onnxruntime raises (they do not derive from RuntimeError), + extra."""
    from onnxruntime.capi import onnxruntime_pybind11_state as state

    names = ("Fail", "InvalidArgument", "RuntimeException", "NoSuchFile", "InvalidGraph")
    found = tuple(getattr(state, n) for n in names if isinstance(getattr(state, n, None), type))
    return (RuntimeError, ValueError, *found, *extra)
