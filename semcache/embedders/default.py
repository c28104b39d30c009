"""Choose the embedder: ONNX Runtime when it is installed and the export works, else torch."""

from __future__ import annotations

import logging
from pathlib import Path

from semcache.embedders.adapter import Adapter
from semcache.embedders.base import DEFAULT_MODEL
from semcache.embedders.onnx import OnnxEmbedder
from semcache.embedders.sentence_transformers import _PACKAGED, SentenceTransformerEmbedder
from semcache.embedders.shipped import embedder_adapter
from semcache.errors import ConfigurationError, MissingDependencyError, ModelLoadError

__all__ = ["default_embedder"]

log = logging.getLogger("semcache")


def default_embedder(
    model: str = DEFAULT_MODEL,
    *,
    prefer_onnx: bool = True,
    int8: bool = False,
    truncate_dim: int | None = None,
    batch_size: int = 32,
    memo_size: int = 4096,
    threads: int | None = None,
    cache_dir: Path | str | None = None,
    tuned: bool | None = None,
) -> OnnxEmbedder | SentenceTransformerEmbedder:
    """The fastest working embedder for ``model``; its ``backend`` attribute says which it is.

    With ``prefer_onnx`` (the default) an :class:`OnnxEmbedder` is returned when onnxruntime is
    installed and the model exports and agrees with torch; otherwise a
    :class:`SentenceTransformerEmbedder`, with a warning saying why. Both fp32 paths share one
    fingerprint, so the fallback reads the same index. ``int8=True`` never falls back: the int8
    model has its own fingerprint, and torch vectors would not match an index built with it.
    ``threads`` is ONNX Runtime's intra-op thread count, or torch's (process-wide) on fallback.

    ``tuned``: merge the adapter shipped in the package (:mod:`semcache.embedders.shipped`,
    trained to keep adversarial near-duplicates apart) into the packaged all-MiniLM-L6-v2.
    ``None`` (the default): tuned for the packaged model, plain for any other; ``False``: the
    plain model. Pair it with :func:`~semcache.matching.verifier.default_verifier` (figures:
    docs/model_card.md). The adapter is part of the fingerprint, so an index written with one
    refuses the other (:class:`~semcache.errors.FingerprintMismatchError`). It is tuned for
    matching prompts, not for ranking passages: give a retriever ``tuned=False``
    (docs/BENCHMARKS.md, "Tuned embedder on retrieval").
    """
    if int8 and not prefer_onnx:
        raise ConfigurationError("int8=True needs the ONNX path; set prefer_onnx=True")
    packaged = model in _PACKAGED
    if tuned and not packaged:
        raise ConfigurationError(
            f"tuned=True applies the adapter shipped for {DEFAULT_MODEL!r}, not {model!r}"
        )
    if tuned is None:
        tuned = packaged
    adapter: Adapter | None = embedder_adapter() if tuned else None
    if prefer_onnx:
        try:
            embedder = OnnxEmbedder(
                model,
                int8=int8,
                truncate_dim=truncate_dim,
                batch_size=batch_size,
                memo_size=memo_size,
                intra_op_threads=threads,
                cache_dir=cache_dir,
                adapter=adapter,
            )
        except (MissingDependencyError, ModelLoadError) as e:
            if int8:
                raise
            log.warning("semcache: ONNX embedder unavailable (%s); falling back to torch", e)
        else:
            log.info(
                "semcache: embedding with ONNX Runtime (%s, %d thread(s), cosine vs torch >= %.7f)",
                embedder.backend,
                embedder.threads,
                embedder.agreement.min_cosine,
            )
            return embedder
    fallback = SentenceTransformerEmbedder(
        model,
        truncate_dim=truncate_dim,
        batch_size=batch_size,
        memo_size=memo_size,
        torch_threads=threads,
        adapter=adapter,
    )
    log.info("semcache: embedding with torch (sentence-transformers)")
    return fallback
