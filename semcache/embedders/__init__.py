"""Embedders: the :class:`Embedder` contract, the sentence-transformers and ONNX Runtime encoders,
and :func:`default_embedder`. torch and onnxruntime are imported when an encoder is built."""

from semcache.embedders.base import DEFAULT_MODEL, Embedder, VectorMemo, normalize_rows
from semcache.embedders.default import default_embedder
from semcache.embedders.onnx import OnnxEmbedder
from semcache.embedders.sentence_transformers import SentenceTransformerEmbedder

__all__ = [
    "DEFAULT_MODEL",
    "Embedder",
    "OnnxEmbedder",
    "SentenceTransformerEmbedder",
    "VectorMemo",
    "default_embedder",
    "normalize_rows",
]
