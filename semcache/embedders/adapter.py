"""Low-rank adapters (LoRA) on top of a packaged model: read, check and merge into the weights.

An adapter file (safetensors, no pickle) holds, for some ``Linear`` layers of a model, two small
matrices ``A`` (rank x in) and ``B`` (out x rank); merging adds ``scale * B @ A`` to the layer's
weight, so the merged model runs exactly as fast as the base model (and exports to ONNX like it).
It may also hold whole tensors that replace the model's (a classification head). Tensor names are
relative to the module the adapter is merged into: ``<layer>.lora_A``, ``<layer>.lora_B`` and
``<parameter>`` for a replaced tensor. The file's metadata gives ``rank``, ``alpha`` and ``name``.

:func:`read_adapter` checks the file's sha256 when one is expected, and :func:`merge_adapter`
checks every shape against the model; both raise :class:`~semcache.errors.AdapterError`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from semcache.errors import AdapterError, MissingDependencyError

if TYPE_CHECKING:
    from numpy.typing import NDArray

__all__ = [
    "Adapter",
    "file_sha256",
    "lora_variant",
    "merge_adapter",
    "read_adapter",
    "write_adapter",
]

_A, _B = ".lora_A", ".lora_B"


def lora_variant(sha256: str) -> str:
    """The fingerprint variant naming the adapter file with this sha256: ``lora-<12 hex>``."""
    return f"lora-{sha256[:12]}"


@dataclass(frozen=True, slots=True, kw_only=True)
class Adapter:
    """A LoRA adapter read from disk (fp32 arrays).

    Attributes:
        name: its identity, e.g. ``"semcache-matcher-1"`` (goes into the model's fingerprint).
        sha256: the file's content hash.
        rank: the low rank ``r``.
        alpha: the LoRA scale numerator: the update is ``alpha / rank * B @ A``.
        lora: layer name -> ``(A, B)``.
        tensors: parameter name -> a tensor replacing the model's.
    """

    name: str
    sha256: str
    rank: int
    alpha: float
    lora: dict[str, tuple[NDArray[np.float32], NDArray[np.float32]]] = field(repr=False)
    tensors: dict[str, NDArray[np.float32]] = field(repr=False)

    @property
    def scale(self) -> float:
        return self.alpha / self.rank

    @property
    def short(self) -> str:
        """The first 12 hex digits of the file's sha256."""
        return self.sha256[:12]


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_adapter(path: str | Path, *, sha256: str | None = None) -> Adapter:
    """Read an adapter file; raises :class:`AdapterError` if it is missing, altered or malformed."""
    p = Path(path)
    if not p.is_file():
        raise AdapterError(f"adapter file not found: {p}")
    digest = file_sha256(p)
    if sha256 is not None and digest != sha256:
        raise AdapterError(
            f"adapter file {p} has sha256 {digest[:12]}..., expected {sha256[:12]}...: "
            "the file is damaged or was replaced; reinstall semcache"
        )
    try:
        from safetensors import SafetensorError, safe_open
    except ImportError as e:
        raise MissingDependencyError("safetensors", "embeddings") from e
    try:
        with safe_open(str(p), framework="numpy") as f:
            meta = f.metadata() or {}
            raw = {k: np.asarray(f.get_tensor(k), dtype=np.float32) for k in f.keys()}  # noqa: SIM118
    except (SafetensorError, OSError, ValueError) as e:
        raise AdapterError(f"cannot read the adapter file {p}: {e}") from e
    try:
        rank, alpha, name = int(meta["rank"]), float(meta["alpha"]), str(meta["name"])
    except (KeyError, ValueError) as e:
        raise AdapterError(f"adapter file {p} lacks rank/alpha/name metadata: {e}") from e
    if rank < 1:
        raise AdapterError(f"adapter file {p}: rank must be >= 1, got {rank}")
    lora: dict[str, tuple[NDArray[np.float32], NDArray[np.float32]]] = {}
    tensors: dict[str, NDArray[np.float32]] = {}
    for key, value in raw.items():
        if key.endswith(_A):
            layer = key[: -len(_A)]
            b = raw.get(layer + _B)
            if b is None:
                raise AdapterError(f"adapter file {p}: {key} has no matching {layer}{_B}")
            if value.ndim != 2 or b.ndim != 2 or value.shape[0] != rank or b.shape[1] != rank:
                raise AdapterError(
                    f"adapter file {p}: {layer} has A {value.shape} and B {b.shape}, "
                    f"expected (rank={rank}, in) and (out, rank={rank})"
                )
            lora[layer] = (value, b)
        elif key.endswith(_B):
            if key[: -len(_B)] + _A not in raw:
                raise AdapterError(f"adapter file {p}: {key} has no matching lora_A")
        else:
            tensors[key] = value
    if not lora and not tensors:
        raise AdapterError(f"adapter file {p} holds no tensors")
    return Adapter(name=name, sha256=digest, rank=rank, alpha=alpha, lora=lora, tensors=tensors)


def merge_adapter(module: Any, adapter: Adapter) -> None:
    """Add the adapter to ``module``'s weights in place (a torch ``nn.Module``), shapes checked.

    Everything is checked before any weight changes, so a mismatching adapter leaves the module
    as it was.
    """
    import torch

    updates: list[tuple[Any, Any]] = []
    for layer, (a, b) in sorted(adapter.lora.items()):
        try:
            weight = module.get_submodule(layer).weight
        except AttributeError as e:
            raise AdapterError(f"adapter {adapter.name}: the model has no layer {layer}") from e
        if tuple(weight.shape) != (b.shape[0], a.shape[1]):
            raise AdapterError(
                f"adapter {adapter.name}: {layer} adapts a {b.shape[0]}x{a.shape[1]} weight, "
                f"the model's is {tuple(weight.shape)}: the adapter is for another base model"
            )
        delta = torch.from_numpy(b) @ torch.from_numpy(a) * adapter.scale
        updates.append((weight, weight + delta.to(weight.dtype)))
    for name, value in sorted(adapter.tensors.items()):
        try:
            param = module.get_parameter(name)
        except AttributeError as e:
            raise AdapterError(f"adapter {adapter.name}: the model has no parameter {name}") from e
        if tuple(param.shape) != value.shape:
            raise AdapterError(
                f"adapter {adapter.name}: {name} has shape {value.shape}, "
                f"the model's is {tuple(param.shape)}"
            )
        updates.append((param, torch.from_numpy(value).to(param.dtype)))
    with torch.no_grad():
        for target, value in updates:
            target.copy_(value)


def write_adapter(
    path: str | Path,
    *,
    name: str,
    rank: int,
    alpha: float,
    lora: dict[str, tuple[NDArray[Any], NDArray[Any]]],
    tensors: dict[str, NDArray[Any]] | None = None,
    fp16: bool = True,
    metadata: dict[str, str] | None = None,
) -> str:
    """Write an adapter file (fp16 by default); returns its sha256."""
    from safetensors.numpy import save_file

    dtype = np.float16 if fp16 else np.float32
    out: dict[str, NDArray[Any]] = {}
    for layer, (a, b) in lora.items():
        out[layer + _A] = np.ascontiguousarray(a, dtype=dtype)
        out[layer + _B] = np.ascontiguousarray(b, dtype=dtype)
    for key, value in (tensors or {}).items():
        out[key] = np.ascontiguousarray(value, dtype=dtype)
    meta = {**(metadata or {}), "name": name, "rank": str(rank), "alpha": repr(float(alpha))}
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    save_file(out, str(p), metadata=meta)
    return file_sha256(p)
