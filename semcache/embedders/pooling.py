"""Sentence-transformers pooling, read from a model directory and applied with numpy.

An ONNX export covers only the transformer (token embeddings); the pooling step that turns token
embeddings into one sentence vector is read from the model's ``modules.json`` and
``<pooling dir>/config.json`` and done here, the way sentence-transformers' ``Pooling`` does it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from semcache.errors import ConfigurationError, ModelLoadError

if TYPE_CHECKING:
    from numpy.typing import NDArray

__all__ = ["POOLING_MODES", "PoolingSpec", "pool", "read_pooling"]

POOLING_MODES = ("cls", "max", "mean", "mean_sqrt_len_tokens", "weightedmean", "lasttoken")

# Legacy boolean keys of 1_Pooling/config.json, in sentence-transformers' concatenation order.
_LEGACY_KEYS = {
    "pooling_mode_cls_token": "cls",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
    "pooling_mode_weightedmean_tokens": "weightedmean",
    "pooling_mode_lasttoken": "lasttoken",
}
# Module types (last dotted component) a transformer-then-pool pipeline may contain.
_TRANSFORMER, _POOLING, _NORMALIZE = "Transformer", "Pooling", "Normalize"


@dataclass(frozen=True, slots=True, kw_only=True)
class PoolingSpec:
    """How token embeddings become a sentence vector: the modes, concatenated in this order."""

    modes: tuple[str, ...]

    def __post_init__(self) -> None:
        if not self.modes:
            raise ConfigurationError("pooling needs at least one mode")
        for mode in self.modes:
            if mode not in POOLING_MODES:
                raise ConfigurationError(
                    f"pooling mode must be one of {POOLING_MODES}, got {mode!r}"
                )


def _module_type(entry: dict[str, Any]) -> str:
    return str(entry.get("type", "")).rsplit(".", 1)[-1]


def read_pooling(model_dir: Path) -> PoolingSpec:
    """Read the pooling of a saved sentence-transformers model (Transformer, Pooling, Normalize).

    Raises :class:`ModelLoadError` when the pipeline has other modules (Dense, ...), which an
    export of the transformer alone would silently drop.
    """
    modules_file = model_dir / "modules.json"
    if not modules_file.is_file():
        raise ModelLoadError(f"{model_dir} has no modules.json; not a sentence-transformers model")
    try:
        modules = json.loads(modules_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ModelLoadError(f"cannot read {modules_file}: {e}") from e
    types = [_module_type(m) for m in modules]
    extra = [t for t in types if t not in (_TRANSFORMER, _POOLING, _NORMALIZE)]
    if types[:2] != [_TRANSFORMER, _POOLING] or extra or len(types) > 3:
        raise ModelLoadError(
            f"unsupported module pipeline {types}: the ONNX path handles "
            "Transformer, Pooling and an optional Normalize"
        )
    config_file = model_dir / str(modules[1].get("path", "")) / "config.json"
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ModelLoadError(f"cannot read the pooling config {config_file}: {e}") from e
    return PoolingSpec(modes=_modes_of(config))


def _modes_of(config: dict[str, Any]) -> tuple[str, ...]:
    mode = config.get("pooling_mode")
    if isinstance(mode, str):
        return (mode,)
    if isinstance(mode, list):
        return tuple(str(m) for m in mode)
    # include_prompt needs no handling: this path never prepends prompts.
    modes = tuple(name for key, name in _LEGACY_KEYS.items() if config.get(key))
    return modes or ("mean",)


def pool(
    token_embeddings: NDArray[np.float32], attention_mask: NDArray[np.int64], spec: PoolingSpec
) -> NDArray[np.float32]:
    """Pool ``(batch, seq, hidden)`` token embeddings under a ``(batch, seq)`` mask into rows."""
    emb = np.asarray(token_embeddings, dtype=np.float32)
    mask = np.asarray(attention_mask)
    if emb.ndim != 3 or mask.shape != emb.shape[:2]:
        raise ModelLoadError(
            f"token embeddings {emb.shape} and attention mask {mask.shape} do not line up"
        )
    m = mask.astype(np.float32)[..., None]
    rows = np.arange(emb.shape[0])
    out: list[NDArray[np.float32]] = []
    for mode in spec.modes:
        if mode == "cls":
            out.append(emb[rows, mask.argmax(axis=1)])
        elif mode == "max":
            out.append(np.where(m > 0, emb, -np.inf).max(axis=1).astype(np.float32))
        elif mode in ("mean", "mean_sqrt_len_tokens"):
            counts = np.maximum(m.sum(axis=1), 1e-9)
            denom = counts if mode == "mean" else np.sqrt(counts)
            out.append((emb * m).sum(axis=1) / denom)
        elif mode == "weightedmean":
            first = mask.argmax(axis=1)[:, None]
            w = (np.arange(1, emb.shape[1] + 1)[None, :] - first).astype(np.float32)[..., None] * m
            out.append((emb * w).sum(axis=1) / np.maximum(w.sum(axis=1), 1e-9))
        else:  # lasttoken: the last position whose mask is set
            last = emb.shape[1] - 1 - mask[:, ::-1].argmax(axis=1)
            out.append(emb[rows, last] * m[rows, last])
    return np.ascontiguousarray(np.concatenate(out, axis=1), dtype=np.float32)
