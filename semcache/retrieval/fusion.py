"""Rank fusion as values: reciprocal rank fusion and weighted, normalised score fusion.

A ranking is a sequence of ``(id, score)`` pairs, best first. A :class:`Fusion` turns several
rankings into one, best first. Pure functions of their inputs; ties keep first-seen order.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from semcache.errors import ConfigurationError, InvalidInputError

__all__ = ["RRF", "Fusion", "MinMax", "Normalization", "Ranking", "WeightedFusion", "ZScore"]

Ranking = Sequence[tuple[str, float]]


@runtime_checkable
class Fusion(Protocol):
    """Combines rankings (one per retriever, in a fixed order) into one ranking."""

    def fuse(self, rankings: Sequence[Ranking]) -> list[tuple[str, float]]: ...


def _check_weights(weights: tuple[float, ...] | None, n: int) -> tuple[float, ...]:
    if weights is None:
        return (1.0,) * n
    if len(weights) != n:
        raise InvalidInputError(f"{len(weights)} weights given for {n} rankings")
    return weights


def _validate_weights(weights: tuple[float, ...] | None) -> None:
    if weights is None:
        return
    if not weights or any((not math.isfinite(w)) or w < 0 for w in weights) or sum(weights) == 0:
        raise ConfigurationError(f"weights must be finite, >= 0 and not all zero, got {weights!r}")


def _sorted(scores: dict[str, float]) -> list[tuple[str, float]]:
    order = {doc: i for i, doc in enumerate(scores)}
    return sorted(scores.items(), key=lambda kv: (-kv[1], order[kv[0]]))


@dataclass(frozen=True, slots=True, kw_only=True)
class RRF:
    """Reciprocal rank fusion: ``score(d) = sum_i w_i / (k + rank_i(d))``, ranks from 1.

    Attributes:
        k: damping constant (60 in Cormack et al., 2009); larger flattens the top ranks.
        weights: one per ranking; equal if ``None``.
    """

    k: float = 60.0
    weights: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        if not math.isfinite(self.k) or self.k < 0:
            raise ConfigurationError(f"RRF k must be a finite number >= 0, got {self.k!r}")
        _validate_weights(self.weights)

    def fuse(self, rankings: Sequence[Ranking]) -> list[tuple[str, float]]:
        weights = _check_weights(self.weights, len(rankings))
        scores: dict[str, float] = {}
        for weight, ranking in zip(weights, rankings, strict=True):
            for rank, (doc, _) in enumerate(ranking, start=1):
                scores[doc] = scores.get(doc, 0.0) + weight / (self.k + rank)
        return _sorted(scores)


class Normalization(Protocol):
    """Maps one ranking's raw scores onto a common scale (same order, same length)."""

    def __call__(self, scores: Sequence[float]) -> list[float]: ...


@dataclass(frozen=True, slots=True)
class MinMax:
    """``(s - min) / (max - min)``; all ones when every score is equal."""

    def __call__(self, scores: Sequence[float]) -> list[float]:
        if not scores:
            return []
        low, high = min(scores), max(scores)
        if high == low:
            return [1.0] * len(scores)
        return [(s - low) / (high - low) for s in scores]


@dataclass(frozen=True, slots=True)
class ZScore:
    """``(s - mean) / std``; all zeros when every score is equal."""

    def __call__(self, scores: Sequence[float]) -> list[float]:
        if not scores:
            return []
        mean = sum(scores) / len(scores)
        std = math.sqrt(sum((s - mean) ** 2 for s in scores) / len(scores))
        if std == 0:
            return [0.0] * len(scores)
        return [(s - mean) / std for s in scores]


@dataclass(frozen=True, slots=True, kw_only=True)
class WeightedFusion:
    """Weighted sum of normalised scores.

    A document missing from a ranking gets that ranking's lowest normalised score (0 with
    :class:`MinMax`): it was not retrieved, so it ranked at best below the last one retrieved.

    Attributes:
        weights: one per ranking, e.g. ``(0.3, 0.7)`` for (sparse, dense).
        normalization: how each ranking's scores are made comparable.
    """

    weights: tuple[float, ...] = (0.5, 0.5)
    normalization: Normalization = MinMax()

    def __post_init__(self) -> None:
        _validate_weights(self.weights)

    def fuse(self, rankings: Sequence[Ranking]) -> list[tuple[str, float]]:
        weights = _check_weights(self.weights, len(rankings))
        normalised: list[dict[str, float]] = []
        floors: list[float] = []
        for ranking in rankings:
            values = self.normalization([score for _, score in ranking])
            normalised.append({doc: v for (doc, _), v in zip(ranking, values, strict=True)})
            floors.append(min(values) if values else 0.0)
        scores: dict[str, float] = {}
        for ranking in rankings:
            for doc, _ in ranking:
                scores.setdefault(doc, 0.0)
        for doc in scores:
            scores[doc] = sum(
                w * norm.get(doc, floor)
                for w, norm, floor in zip(weights, normalised, floors, strict=True)
            )
        return _sorted(scores)
