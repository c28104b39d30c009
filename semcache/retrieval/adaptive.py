"""Agreement-gated fusion: one retriever leads, the other counts as far as the two agree.

Fixed fusion constants help when both retrievers are good and hurt when one is much weaker (a
weak BM25 over entity names, say). What tells the cases apart without judgements is agreement:
when two retrievers both carry signal for a query, their top lists share documents; when one
of them returns noise, or nothing useful, they share (next to) none. So the other retriever's
weight grows with the overlap of the two top lists, and is zero when they share nothing.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from semcache.errors import ConfigurationError, InvalidInputError
from semcache.retrieval.fusion import MinMax, Ranking

__all__ = ["AgreementFusion", "agreement"]


def agreement(a: Ranking, b: Ranking, depth: int) -> float:
    """Share of the top ``depth`` ids of ``a`` that are also in the top ``depth`` of ``b``."""
    top_a = [doc for doc, _ in a[:depth]]
    if not top_a:
        return 0.0
    top_b = {doc for doc, _ in b[:depth]}
    return sum(doc in top_b for doc in top_a) / len(top_a)


@dataclass(frozen=True, slots=True, kw_only=True)
class AgreementFusion:
    """Fused scores ``(1 - w) * primary + w * other``, with a per-query weight
    ``w = max_weight * min(1, agreement / saturation) ** power``; each ranking's scores are
    min-max normalised, or with ``rrf_k`` set, replaced by ``1 / (rrf_k + rank)``.

    ``agreement`` is the share of the primary's top ``depth`` ids that the other ranking also
    has in its top ``depth``. With no agreement (the other returned nothing, noise, or a list
    unrelated to the primary's) the result is the primary's ranking, in its order; with an
    empty primary ranking it is the other's. Takes exactly two rankings, e.g. (sparse, dense).

    The defaults (reciprocal ranks with k=20, the other ranking at a quarter of the primary's
    weight once their top 10 share one id, nothing when they share none) come from the
    leave-one-set-out study in docs/BENCHMARKS.md ("Fusion settings").

    Attributes:
        primary: index of the leading ranking (1: the dense one of (sparse, dense)).
        depth: how many top ids of each ranking are compared.
        max_weight: the other ranking's weight when the two agree fully (or at ``saturation``).
        saturation: agreement at which the other ranking reaches ``max_weight``.
        power: how fast the weight grows with agreement (1 linear, 2 slower at low agreement).
        rrf_k: if set, fuse reciprocal ranks (as RRF does) instead of min-max scores.
    """

    primary: int = 1
    depth: int = 10
    max_weight: float = 0.2
    saturation: float = 0.1
    power: float = 1.0
    rrf_k: float | None = 20.0

    def __post_init__(self) -> None:
        if self.primary not in (0, 1):
            raise ConfigurationError(f"primary must be 0 or 1, got {self.primary!r}")
        if self.depth < 1:
            raise ConfigurationError(f"depth must be >= 1, got {self.depth!r}")
        if not (math.isfinite(self.max_weight) and 0.0 <= self.max_weight <= 1.0):
            raise ConfigurationError(f"max_weight must be in [0, 1], got {self.max_weight!r}")
        if not (math.isfinite(self.saturation) and 0.0 < self.saturation <= 1.0):
            raise ConfigurationError(f"saturation must be in (0, 1], got {self.saturation!r}")
        if not (math.isfinite(self.power) and self.power > 0.0):
            raise ConfigurationError(f"power must be a finite number > 0, got {self.power!r}")
        if self.rrf_k is not None and not (math.isfinite(self.rrf_k) and self.rrf_k >= 0.0):
            raise ConfigurationError(f"rrf_k must be a finite number >= 0, got {self.rrf_k!r}")

    def weight(self, primary: Ranking, other: Ranking) -> float:
        """The other ranking's weight for this query."""
        share = agreement(primary, other, self.depth)
        return float(self.max_weight * min(1.0, share / self.saturation) ** self.power)

    def fuse(self, rankings: Sequence[Ranking]) -> list[tuple[str, float]]:
        if len(rankings) != 2:
            raise InvalidInputError(f"AgreementFusion takes 2 rankings, got {len(rankings)}")
        lead, other = rankings[self.primary], rankings[1 - self.primary]
        if not lead:
            lead, other = other, lead
        w = self.weight(lead, other)
        lead_n = self._normalised(lead)
        if w == 0.0:
            return list(lead_n.items())
        other_n = self._normalised(other)
        scores = {d: (1 - w) * v + w * other_n.get(d, 0.0) for d, v in lead_n.items()}
        for d, v in other_n.items():
            scores.setdefault(d, w * v)
        order = {d: i for i, d in enumerate(scores)}
        return sorted(scores.items(), key=lambda kv: (-kv[1], order[kv[0]]))

    def _normalised(self, ranking: Ranking) -> dict[str, float]:
        ids = [d for d, _ in ranking]
        if self.rrf_k is None:
            return dict(zip(ids, MinMax()([s for _, s in ranking]), strict=True))
        return {d: 1.0 / (self.rrf_k + rank) for rank, d in enumerate(ids, start=1)}
