"""Training-side LoRA: trainable low-rank updates attached to a frozen torch model.

:func:`attach_lora` freezes a model and adds, to each chosen ``Linear`` layer, a forward hook
computing ``scale * (x @ A.T) @ B.T`` from two new trainable matrices (``B`` starts at zero, so
the model starts exactly as the base model). :meth:`LoRA.arrays` returns what
:func:`semcache.embedders.adapter.write_adapter` stores; at load,
:func:`semcache.embedders.adapter.merge_adapter` folds the update into the weights.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from semcache.errors import ConfigurationError

if TYPE_CHECKING:
    from semcache.embedders.adapter import Adapter

__all__ = ["DEFAULT_TARGETS", "LoRA", "attach_lora"]

#: The ``Linear`` layers of a BERT encoder layer that get an adapter (attention and MLP).
DEFAULT_TARGETS = (
    "attention.self.query",
    "attention.self.key",
    "attention.self.value",
    "attention.output.dense",
    "intermediate.dense",
    "output.dense",
)


@dataclass
class LoRA:
    """The trainable parts attached to a model: low-rank pairs and fully trained tensors."""

    rank: int
    alpha: float
    pairs: dict[str, tuple[Any, Any]] = field(default_factory=dict)  # layer -> (A, B) Parameters
    full: dict[str, Any] = field(default_factory=dict)  # parameter name -> Parameter
    hooks: list[Any] = field(default_factory=list)

    def parameters(self) -> list[Any]:
        out = [p for a, b in self.pairs.values() for p in (a, b)]
        return out + list(self.full.values())

    def arrays(self) -> tuple[dict[str, tuple[Any, Any]], dict[str, Any]]:
        """``(lora, tensors)`` as fp32 numpy arrays, the arguments of ``write_adapter``."""
        lora = {
            k: (a.detach().cpu().numpy().astype(np.float32), b.detach().cpu().numpy())
            for k, (a, b) in self.pairs.items()
        }
        full = {k: p.detach().cpu().numpy().astype(np.float32) for k, p in self.full.items()}
        return lora, full

    def detach(self) -> None:
        """Remove the hooks (the model computes as the base model again)."""
        for h in self.hooks:
            h.remove()
        self.hooks.clear()


def attach_lora(
    model: Any,
    *,
    rank: int,
    alpha: float,
    targets: tuple[str, ...] = DEFAULT_TARGETS,
    train_full: tuple[str, ...] = (),
    start: Adapter | None = None,
) -> LoRA:
    """Freeze ``model`` and attach LoRA to its ``Linear`` layers whose names end with a target.

    ``train_full`` names parameters (prefixes) trained whole, e.g. a classification head.
    ``start``: begin from this adapter's low-rank pairs and whole tensors (same rank and alpha,
    every pair and tensor present) instead of ``B = 0`` and the model's own weights.
    """
    import torch

    if rank < 1:
        raise ConfigurationError(f"the LoRA rank must be >= 1, got {rank}")
    if start is not None and (start.rank, start.alpha) != (rank, alpha):
        raise ConfigurationError(
            f"cannot continue from {start.name}: it has rank {start.rank} and alpha "
            f"{start.alpha:g}, this run {rank} and {alpha:g}"
        )
    lora = LoRA(rank=rank, alpha=alpha)
    scale = alpha / rank
    for p in model.parameters():
        p.requires_grad_(False)
    for name, module in model.named_modules():
        if not isinstance(module, torch.nn.Linear) or not name.endswith(targets):
            continue
        a = torch.nn.Parameter(torch.empty(rank, module.in_features))
        torch.nn.init.kaiming_uniform_(a, a=math.sqrt(5))
        b = torch.nn.Parameter(torch.zeros(module.out_features, rank))
        lora.pairs[name] = (a, b)

        def hook(_m: Any, inputs: Any, output: Any, a: Any = a, b: Any = b) -> Any:
            return output + (inputs[0] @ a.t()) @ b.t() * scale

        lora.hooks.append(module.register_forward_hook(hook))
    if not lora.pairs:
        raise ConfigurationError(f"no Linear layer of the model ends with any of {targets}")
    for name, p in model.named_parameters():
        if name.startswith(train_full):
            p.requires_grad_(True)
            lora.full[name] = p
    missing = [t for t in train_full if not any(n.startswith(t) for n in lora.full)]
    if missing:
        raise ConfigurationError(f"the model has no parameters named {missing}")
    if start is not None:
        _load(lora, start)
    return lora


def _load(lora: LoRA, start: Adapter) -> None:
    import torch

    wanted = set(lora.pairs) | set(lora.full)
    if set(start.lora) | set(start.tensors) != wanted:
        raise ConfigurationError(
            f"cannot continue from {start.name}: it does not hold the same layers and tensors "
            "as this run (another model kind or other targets)"
        )
    with torch.no_grad():
        for name, (a, b) in lora.pairs.items():
            sa, sb = start.lora[name]
            if (tuple(a.shape), tuple(b.shape)) != (sa.shape, sb.shape):
                raise ConfigurationError(f"cannot continue from {start.name}: {name} differs")
            a.copy_(torch.from_numpy(sa))
            b.copy_(torch.from_numpy(sb))
        for name, p in lora.full.items():
            if tuple(p.shape) != start.tensors[name].shape:
                raise ConfigurationError(f"cannot continue from {start.name}: {name} differs")
            p.copy_(torch.from_numpy(start.tensors[name]))
