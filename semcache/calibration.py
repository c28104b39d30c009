"""Threshold calibration on labelled pairs: precision, recall and a bound on the false-hit rate.

A *hit* at threshold ``t`` is a pair whose cosine similarity is ``>= t``; a *false hit* is a hit on
a pair labelled "not equivalent". For each threshold the report gives precision (1 - false-hit
rate), recall (the hit rate on true duplicates) and a one-sided Clopper-Pearson upper bound on the
false-hit rate. The recommended threshold is the lowest one whose bound is ``<= delta``.

The binomial and beta functions are implemented here (regularised incomplete beta by continued
fraction, quantiles by bisection), so the core needs no scipy; the tests compare them with scipy.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import math
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from semcache.errors import ConfigurationError, FingerprintMismatchError, InvalidInputError
from semcache.policy import CachePolicy
from semcache.verifier import VerifierBand

if TYPE_CHECKING:
    from numpy.typing import NDArray

    from semcache.embeddings import Embedder

__all__ = [
    "CalibrationReport",
    "LabelledPair",
    "ThresholdPoint",
    "band_from_calibration",
    "betainc",
    "binomial_cdf",
    "calibrate",
    "clopper_pearson",
    "clopper_pearson_upper",
    "lowest_safe_threshold",
    "max_false_allowed",
    "pair_groups",
    "policy_from_calibration",
    "read_pairs",
    "sweep",
]

_FORMAT = 1


# -- the binomial and beta functions ------------------------------------------------------------


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz)."""
    tiny = 1e-300
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c = 1.0
    d = 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 100_000):
        m2 = 2 * m
        for aa in (
            m * (b - m) * x / ((qam + m2) * (a + m2)),
            -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2)),
        ):
            d = 1.0 + aa * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + aa / c
            c = c if abs(c) > tiny else tiny
            step = d * c
            h *= step
        if abs(step - 1.0) < 1e-15:
            break
    return h


def betainc(a: float, b: float, x: float) -> float:
    """The regularised incomplete beta function ``I_x(a, b)`` for ``a, b > 0``, ``0 <= x <= 1``."""
    if a <= 0 or b <= 0:
        raise InvalidInputError(f"betainc needs a > 0 and b > 0, got a={a}, b={b}")
    if not 0.0 <= x <= 1.0:
        raise InvalidInputError(f"betainc needs 0 <= x <= 1, got {x}")
    if x == 0.0 or x == 1.0:
        return x
    log_front = (
        math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    )
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _betacf(a, b, x) / a
    return 1.0 - math.exp(log_front) * _betacf(b, a, 1.0 - x) / b


def binomial_cdf(k: int, n: int, p: float) -> float:
    """``P(X <= k)`` for ``X ~ Binomial(n, p)``."""
    if k < 0:
        return 0.0
    if k >= n:
        return 1.0
    return betainc(n - k, k + 1, 1.0 - p)


def _beta_ppf(q: float, a: float, b: float) -> float:
    """The ``q`` quantile of ``Beta(a, b)``, by bisection on :func:`betainc`."""
    lo, hi = 0.0, 1.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if betainc(a, b, mid) < q:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-15:
            break
    return 0.5 * (lo + hi)


def _check_counts(k: int, n: int, confidence: float) -> None:
    if not 0 <= k <= n:
        raise InvalidInputError(f"need 0 <= k <= n, got k={k}, n={n}")
    if not 0.0 < confidence < 1.0:
        raise ConfigurationError(f"confidence must be in (0, 1), got {confidence}")


def clopper_pearson_upper(k: int, n: int, confidence: float = 0.95) -> float:
    """One-sided Clopper-Pearson upper bound on a rate from ``k`` events in ``n`` trials.

    The true rate is below the returned value with probability ``confidence`` (``1.0`` if n = 0).
    """
    _check_counts(k, n, confidence)
    if k == n:
        return 1.0
    return _beta_ppf(confidence, k + 1, n - k)


def clopper_pearson(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Two-sided Clopper-Pearson interval ``(low, high)`` at ``confidence``."""
    _check_counts(k, n, confidence)
    alpha = 1.0 - confidence
    low = 0.0 if k == 0 else _beta_ppf(alpha / 2, k, n - k + 1)
    high = 1.0 if k == n else _beta_ppf(1 - alpha / 2, k + 1, n - k)
    return low, high


def max_false_allowed(n: int, delta: float, confidence: float = 0.95) -> int:
    """The most false hits among ``n`` hits whose upper bound is still ``<= delta`` (-1: none).

    Uses ``upper(k, n) <= delta  <=>  P(X <= k; n, delta) <= 1 - confidence``.
    """
    alpha = 1.0 - confidence
    k = -1
    while k + 1 < n and binomial_cdf(k + 1, n, delta) <= alpha:
        k += 1
    return k


class _AllowanceTable:
    """``max_false_allowed(n)`` for n = 0..N, grown incrementally (it is non-decreasing in n)."""

    def __init__(self, delta: float, confidence: float) -> None:
        self.delta, self.alpha = delta, 1.0 - confidence
        self._table = [-1]

    def upto(self, n: int) -> NDArray[np.int64]:
        table = self._table
        while len(table) <= n:
            m, k = len(table), table[-1]
            while k + 1 < m and binomial_cdf(k + 1, m, self.delta) <= self.alpha:
                k += 1
            table.append(k)
        return np.asarray(table[: n + 1], dtype=np.int64)


def lowest_safe_threshold(
    similarities: NDArray[np.floating[Any]] | Sequence[float],
    correct: NDArray[np.bool_] | Sequence[bool],
    delta: float,
    confidence: float = 0.95,
    *,
    table: _AllowanceTable | None = None,
) -> float | None:
    """The lowest observed similarity ``t`` such that serving everything ``>= t`` has a false-hit
    upper bound ``<= delta`` on these observations; ``None`` if no threshold qualifies."""
    sims = np.asarray(similarities, dtype=np.float64)
    ok = np.asarray(correct, dtype=bool)
    if sims.size == 0:
        return None
    order = np.argsort(-sims, kind="stable")
    sims, ok = sims[order], ok[order]
    false_cum = np.cumsum(~ok)
    # only cut between distinct values: the last index of each run of equal similarities
    last = np.append(sims[1:] != sims[:-1], True)
    allowed = (table or _AllowanceTable(delta, confidence)).upto(sims.size)[1:]
    safe = last & (false_cum <= allowed)
    idx = np.flatnonzero(safe)
    return None if idx.size == 0 else float(sims[idx[-1]])


# -- labelled pairs -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LabelledPair:
    """Two texts and whether a cache may answer one with the other's response."""

    text_a: str
    text_b: str
    label: bool


def pair_groups(pairs: Sequence[LabelledPair]) -> list[str]:
    """Per pair, a key shared by every pair it is connected to through a common text.

    Pairs that share a text, directly or through other pairs, get the same key (the group's
    smallest text), so a split by key never puts one sentence on both sides: PAWS reuses each
    source sentence in many pairs, and QQP repeats popular questions.
    """
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        root = x
        while parent.setdefault(root, root) != root:
            root = parent[root]
        while parent[x] != root:  # path compression
            parent[x], x = root, parent[x]
        return root

    for p in pairs:
        a, b = find(p.text_a), find(p.text_b)
        if a != b:
            parent[max(a, b)] = min(a, b)  # the root is the group's smallest text
    return [find(p.text_a) for p in pairs]


def _open_text(path: Path) -> io.TextIOBase:
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", newline="")
    return io.TextIOWrapper(open(path, "rb"), encoding="utf-8", newline="")


def _parse_label(value: object, where: str) -> bool:
    text = str(value).strip().lower()
    if text in {"1", "true", "1.0"}:
        return True
    if text in {"0", "false", "0.0"}:
        return False
    raise InvalidInputError(f"{where}: label must be 0/1 or true/false, got {value!r}")


def _iter_pairs(path: Path) -> Iterator[LabelledPair]:
    is_tsv = path.name.removesuffix(".gz").endswith((".tsv", ".tab"))
    with _open_text(path) as f:
        if is_tsv:
            reader = csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
            for line, row in enumerate(reader, start=2):
                try:
                    a, b, label = row["sentence1"], row["sentence2"], row["label"]
                except KeyError as e:
                    raise InvalidInputError(
                        f"{path}:{line}: a TSV needs columns sentence1, sentence2, label"
                    ) from e
                yield LabelledPair(a, b, _parse_label(label, f"{path}:{line}"))
            return
        for line, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            try:
                obj = json.loads(raw)
                a, b = obj["text_a"], obj["text_b"]
            except (json.JSONDecodeError, KeyError, TypeError) as e:
                raise InvalidInputError(
                    f"{path}:{line}: expected a JSON object with text_a, text_b, label"
                ) from e
            yield LabelledPair(str(a), str(b), _parse_label(obj.get("label"), f"{path}:{line}"))


def read_pairs(path: str | Path, *, limit: int | None = None) -> list[LabelledPair]:
    """Read labelled pairs: JSONL ``{"text_a", "text_b", "label"}`` (optionally ``.gz``) or a TSV
    with a header ``sentence1``, ``sentence2``, ``label`` (the PAWS layout)."""
    out: list[LabelledPair] = []
    for pair in _iter_pairs(Path(path)):
        if limit is not None and len(out) >= limit:
            break
        if pair.text_a.strip() and pair.text_b.strip():
            out.append(pair)
    if not out:
        raise InvalidInputError(f"{path}: no labelled pairs found")
    return out


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
        embedder: if given, its fingerprint must match the model the report was made with.
        overrides: other :class:`CachePolicy` fields.
    """
    report = CalibrationReport.read(path)
    if _is_verifier_report(report):
        raise ConfigurationError(
            f"{path} calibrates a verifier's probability, not a cosine similarity; "
            "use band_from_calibration"
        )
    recommended = _recommended(report, path)
    if embedder is not None and report.model:
        want, have = report.model.get("model"), embedder.fingerprint.model
        if want != have or report.model.get("dim") != embedder.fingerprint.dim:
            raise FingerprintMismatchError(
                f"{path} was calibrated with {want!r} ({report.model.get('dim')}-d); "
                f"this embedder is {have!r} ({embedder.fingerprint.dim}-d)"
            )
    return CachePolicy(min_similarity=recommended, **overrides)


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
