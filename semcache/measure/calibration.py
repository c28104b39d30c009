"""Threshold calibration on labelled pairs: precision, recall and a bound on the false-hit rate.

A *hit* at threshold ``t`` is a pair whose cosine similarity is ``>= t``; a *false hit* is a hit on
a pair labelled "not equivalent". For each threshold the report gives precision (1 - false-hit
rate), recall (the hit rate on true duplicates) and a one-sided Clopper-Pearson upper bound on the
false-hit rate. The recommended threshold is the lowest one whose bound is ``<= delta``.

The bounds come from :mod:`semcache.matching.bounds`; the pairs from :mod:`semcache.measure.pairs`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from semcache.errors import ConfigurationError, InvalidInputError
from semcache.matching.bounds import clopper_pearson_upper
from semcache.matching.verifier import VerifierBand
from semcache.measure.pairs import LabelledPair
from semcache.models import ModelFingerprint, check_fingerprint
from semcache.policy import CachePolicy

if TYPE_CHECKING:
    from numpy.typing import NDArray

    from semcache.embedders.base import Embedder

__all__ = [
    "CalibrationReport",
    "ThresholdPoint",
    "band_from_calibration",
    "calibrate",
    "policy_from_calibration",
    "sweep",
]

_FORMAT = 1


def pair_similarities(
    embedder: Embedder, pairs: Sequence[LabelledPair], *, batch: int = 256
) -> NDArray[np.float32]:
    """Cosine similarity of each pair under ``embedder`` (unit vectors, so a dot product)."""
    from tqdm import tqdm

    out = np.empty(len(pairs), dtype=np.float32)
    for start in tqdm(range(0, len(pairs), batch), desc="embedding pairs", unit="batch"):
        chunk = pairs[start : start + batch]
        va = embedder.embed([p.text_a for p in chunk])
        vb = embedder.embed([p.text_b for p in chunk])
        out[start : start + len(chunk)] = np.einsum("ij,ij->i", va, vb)
    return out


# -- the sweep and the report -------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class ThresholdPoint:
    """What serving every pair with similarity ``>= threshold`` would do."""

    threshold: float
    hits: int
    false_hits: int
    positives: int
    precision: float
    recall: float
    false_hit_rate: float
    false_hit_upper: float


def sweep(
    similarities: NDArray[np.floating[Any]] | Sequence[float],
    labels: NDArray[np.bool_] | Sequence[bool],
    thresholds: Sequence[float],
    *,
    confidence: float = 0.95,
) -> list[ThresholdPoint]:
    """One :class:`ThresholdPoint` per threshold (precision is 1.0 when nothing is served)."""
    sims = np.asarray(similarities, dtype=np.float64)
    pos = np.asarray(labels, dtype=bool)
    if sims.shape != pos.shape:
        raise InvalidInputError(f"{sims.size} similarities but {pos.size} labels")
    positives = int(pos.sum())
    points = []
    for t in thresholds:
        served = sims >= t
        hits = int(served.sum())
        false = int((served & ~pos).sum())
        rate = false / hits if hits else 0.0
        points.append(
            ThresholdPoint(
                threshold=round(float(t), 6),
                hits=hits,
                false_hits=false,
                positives=positives,
                precision=1.0 - rate,
                recall=(hits - false) / positives if positives else 0.0,
                false_hit_rate=rate,
                false_hit_upper=clopper_pearson_upper(false, hits, confidence),
            )
        )
    return points


def default_thresholds() -> list[float]:
    """0.50, 0.51, ... 0.90, then 0.905 ... 1.000 (finer where caches operate)."""
    coarse = [round(0.5 + 0.01 * i, 3) for i in range(40)]
    fine = [round(0.9 + 0.0025 * i, 4) for i in range(41)]
    return coarse + fine


@dataclass(frozen=True, slots=True, kw_only=True)
class CalibrationReport:
    """The result of :func:`calibrate`, written and read as JSON."""

    source: str
    model: dict[str, Any]
    pairs: int
    positives: int
    delta: float
    confidence: float
    recommended: float | None
    points: tuple[ThresholdPoint, ...] = field(default_factory=tuple)

    def point(self, threshold: float) -> ThresholdPoint:
        """The sweep point closest to ``threshold``."""
        return min(self.points, key=lambda p: abs(p.threshold - threshold))

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["format"] = _FORMAT
        data["points"] = [asdict(p) for p in self.points]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CalibrationReport:
        if data.get("format") != _FORMAT:
            raise InvalidInputError(f"not a semcache calibration report (format {_FORMAT})")
        rec = data.get("recommended")
        return cls(
            source=str(data["source"]),
            model=dict(data["model"]),
            pairs=int(data["pairs"]),
            positives=int(data["positives"]),
            delta=float(data["delta"]),
            confidence=float(data["confidence"]),
            recommended=None if rec is None else float(rec),
            points=tuple(ThresholdPoint(**p) for p in data["points"]),
        )

    def write(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=1) + "\n", encoding="utf-8")

    @classmethod
    def read(cls, path: str | Path) -> CalibrationReport:
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as e:
            raise InvalidInputError(f"cannot read the calibration report {path}: {e}") from e
        return cls.from_dict(data)


def calibrate(
    similarities: NDArray[np.floating[Any]] | Sequence[float],
    labels: NDArray[np.bool_] | Sequence[bool],
    *,
    delta: float = 0.01,
    confidence: float = 0.95,
    thresholds: Sequence[float] | None = None,
    source: str = "",
    model: dict[str, Any] | None = None,
) -> CalibrationReport:
    """Sweep ``thresholds`` and recommend the lowest whose false-hit upper bound is ``<= delta``."""
    if not 0.0 < delta < 1.0:
        raise ConfigurationError(f"delta is a false-hit rate in (0, 1), got {delta}")
    points = sweep(similarities, labels, thresholds or default_thresholds(), confidence=confidence)
    safe = [p.threshold for p in points if p.hits and p.false_hit_upper <= delta]
    return CalibrationReport(
        source=source,
        model=model or {},
        pairs=int(np.asarray(labels).size),
        positives=points[0].positives if points else 0,
        delta=delta,
        confidence=confidence,
        recommended=min(safe) if safe else None,
        points=tuple(points),
    )


def policy_from_calibration(
    path: str | Path, *, embedder: Embedder | None = None, **overrides: Any
) -> CachePolicy:
    """A :class:`CachePolicy` whose ``min_similarity`` is a report's recommended threshold.

    Args:
        path: a JSON report written by ``semcache calibrate``.
        embedder: if given, its fingerprint must match the one the report was made with
            (:func:`semcache.models.check_fingerprint`, on the fields the report records).
        overrides: other :class:`CachePolicy` fields.
    """
    report = CalibrationReport.read(path)
    if _is_verifier_report(report):
        raise ConfigurationError(
            f"{path} calibrates a verifier's probability, not a cosine similarity; "
            "use band_from_calibration"
        )
    recommended = _recommended(report, path)
    if embedder is not None:
        given = embedder.fingerprint
        check_fingerprint(
            _report_fingerprint(report, given),
            given,
            f"the calibration report {path}",
            "calibrate again with this embedder",
        )
    return CachePolicy(min_similarity=recommended, **overrides)


def _report_fingerprint(
    report: CalibrationReport, given: ModelFingerprint
) -> ModelFingerprint | None:
    """The fingerprint a report was made with, for :func:`check_fingerprint`.

    ``semcache calibrate`` records the whole fingerprint; a report that records only some fields
    (or none: ``None``, nothing to check) is compared on those, the rest taken from ``given``.
    """
    wanted = given.to_dict()
    recorded = {f: report.model[f] for f in wanted if f in report.model}
    if not recorded:
        return None
    return ModelFingerprint.from_dict({**wanted, **recorded})


def band_from_calibration(path: str | Path, **overrides: Any) -> VerifierBand:
    """A :class:`VerifierBand` whose ``min_score`` is a verifier report's recommended score.

    The report is the ``after.calibration.json`` that ``semcache tune --verifier`` writes: the
    verifier's probability on held-out pairs, swept like a threshold. It was measured on every
    held-out pair, not only those inside the band, so check it on your traffic (shadow mode).

    Args:
        path: a verifier's calibration report.
        overrides: the other :class:`VerifierBand` fields (``low``, ``high``); ``blend`` must
            stay 0, since the report calibrates the probability alone.
    """
    report = CalibrationReport.read(path)
    if not _is_verifier_report(report):
        raise ConfigurationError(
            f"{path} calibrates a cosine similarity, not a verifier's probability; "
            "use policy_from_calibration"
        )
    if overrides.get("blend", 0.0):
        raise ConfigurationError(
            "the report calibrates the verifier's probability alone; a blended score needs "
            "its own calibration (blend must be 0)"
        )
    return VerifierBand(min_score=_recommended(report, path), **overrides)


def _is_verifier_report(report: CalibrationReport) -> bool:
    return report.model.get("kind") == "cross-encoder"


def _recommended(report: CalibrationReport, path: str | Path) -> float:
    if report.recommended is None:
        raise ConfigurationError(
            f"{path}: no threshold met the false-hit bound delta={report.delta}; "
            "calibrate on more pairs or accept a larger delta"
        )
    return report.recommended
