"""A cross-encoder that confirms or vetoes near-threshold hits.

A bi-encoder compares two prompts through one vector each; a cross-encoder reads both prompts
together and sees word order, swapped roles and small edits that the vectors average away. It is
too slow to score every candidate, so :class:`CrossEncoderVerifier` only scores candidates whose
similarity falls inside its band: above the band a hit is served as is (unless it reuses the
query's words in another order, :attr:`VerifierBand.reorder_overlap`), inside it the verifier's
probability must reach ``min_score``, below it the candidate is refused.

Pass it as ``SemanticCache(verifier=...)`` (the last step of :func:`semcache.policy.choose`), or
give :meth:`CrossEncoderVerifier.confirms` to
:class:`~semcache.matching.adaptive.AdaptiveThresholds` as its judge (``verifier=``), which
labels served hits. Train one with ``semcache tune --verifier``
(:func:`semcache.measure.tuning.tune_verifier`).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

from semcache.errors import ConfigurationError, MissingDependencyError, ModelLoadError
from semcache.matching.word_order import reordered
from semcache.models import Candidate

if TYPE_CHECKING:
    from numpy.typing import NDArray

__all__ = [
    "SHIPPED_BAND",
    "CrossEncoderVerifier",
    "PairScorer",
    "VerifierBand",
    "VerifierStats",
    "default_verifier",
]


@runtime_checkable
class PairScorer(Protocol):
    """Anything that scores (query, cached prompt) pairs with a probability in [0, 1]."""

    def probabilities(
        self, pairs: list[tuple[str, str]], batch_size: int = 64
    ) -> NDArray[np.float32]: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class VerifierBand:
    """Which candidates the verifier scores, and the score a hit needs.

    Attributes:
        low: candidates below this cosine similarity are refused (``below_band``).
        high: candidates at or above it are served without the verifier (but see
            ``reorder_overlap``).
        min_score: the decision score (0..1) a candidate inside ``[low, high)`` needs.
        blend: weight of the candidate's cosine similarity in the decision score,
            ``(1 - blend) * probability + blend * similarity``; ``0`` trusts the cross-encoder
            alone. The two judges err differently, so a blend ranks better than either.
        reorder_overlap: also score candidates at or above ``high`` that share at least this
            share of the query's words in another order (:mod:`semcache.matching.word_order`),
            the pairs a mean-pooled vector cannot tell apart; ``None``: never.
    """

    low: float = 0.8
    high: float = 0.97
    min_score: float = 0.5
    blend: float = 0.0
    reorder_overlap: float | None = None

    def __post_init__(self) -> None:
        if not -1.0 <= self.low <= self.high <= 1.0:
            raise ConfigurationError(
                f"the band needs -1 <= low <= high <= 1 (cosine similarity), "
                f"got low={self.low}, high={self.high}"
            )
        if not 0.0 <= self.min_score <= 1.0:
            raise ConfigurationError(f"min_score is a probability in [0, 1], got {self.min_score}")
        if not 0.0 <= self.blend < 1.0:
            raise ConfigurationError(f"blend is a weight in [0, 1), got {self.blend}")
        if self.reorder_overlap is not None and not 0.0 < self.reorder_overlap <= 1.0:
            raise ConfigurationError(
                f"reorder_overlap is a share of words in (0, 1] or None, got {self.reorder_overlap}"
            )

    def scores(self, query: str, cached: str, similarity: float) -> bool:
        """Whether a candidate at or above ``low`` goes to the verifier."""
        if similarity < self.high:
            return True
        return self.reorder_overlap is not None and reordered(query, cached, self.reorder_overlap)

    def decision(self, probability: float, similarity: float) -> float:
        """The score compared with ``min_score``."""
        return (1.0 - self.blend) * probability + self.blend * similarity


#: The out-of-box band of the shipped verifier (chosen on validation pairs with
#: ``CachePolicy()``'s threshold, 0.95; docs/model_card.md). It has no floor of its own: the
#: policy's ``min_similarity`` is the floor, so a lower threshold sends the extra candidates
#: through the verifier instead of refusing them.
SHIPPED_BAND = VerifierBand(low=-1.0, high=0.96, min_score=0.85, reorder_overlap=0.7)


@dataclass(frozen=True, slots=True, kw_only=True)
class VerifierStats:
    """How often the verifier ran and how long it took (latencies of recent calls)."""

    calls: int
    confirmed: int
    vetoed: int
    above_band: int
    below_band: int
    latency_p50_ms: float
    latency_p95_ms: float


class CrossEncoderVerifier:
    """Confirms or vetoes a semantic hit inside a similarity band with a cross-encoder.

    Implements :class:`semcache.policy.Guard` (returns a veto reason or ``None``). Thread-safe.

    Args:
        model: a loaded ``sentence_transformers.CrossEncoder`` with one output (a logit), or a
            :class:`PairScorer` (e.g. the ONNX Runtime scorer of :func:`default_verifier`).
        band: which candidates are scored, and the score they need.
        symmetric: score both orders (query, cached) and (cached, query) and average (2x cost).
        latency_window: how many recent call latencies :meth:`stats` summarises.
    """

    def __init__(
        self,
        model: Any,
        *,
        band: VerifierBand | None = None,
        symmetric: bool = False,
        latency_window: int = 10_000,
    ) -> None:
        if latency_window < 1:
            raise ConfigurationError(f"latency_window must be >= 1, got {latency_window}")
        self.model = model
        if isinstance(model, PairScorer):
            self._scorer: PairScorer = model
        else:
            from semcache.matching.onnx_verifier import TorchPairScorer

            self._scorer = TorchPairScorer(model)
        self.band = band or VerifierBand()
        self.symmetric = symmetric
        self._lock = threading.Lock()
        self._latencies: deque[float] = deque(maxlen=latency_window)
        self._counts = {"calls": 0, "confirmed": 0, "vetoed": 0, "above": 0, "below": 0}

    @classmethod
    def load(
        cls,
        path: str | Path,
        *,
        band: VerifierBand | None = None,
        symmetric: bool = False,
        max_length: int = 128,
        torch_threads: int | None = None,
    ) -> CrossEncoderVerifier:
        """Load a verifier saved by ``semcache tune --verifier`` (a CrossEncoder directory)."""
        try:
            import torch
            from sentence_transformers import CrossEncoder
        except ImportError as e:
            raise MissingDependencyError("sentence-transformers", "embeddings") from e
        if torch_threads is not None:
            torch.set_num_threads(torch_threads)
        if not Path(path).is_dir():
            raise ModelLoadError(f"no verifier model directory at {path}")
        try:
            model = CrossEncoder(
                str(path), max_length=max_length, device="cpu", local_files_only=True
            )
        except (OSError, ValueError) as e:
            raise ModelLoadError(f"cannot load the verifier at {path}: {e}") from e
        if model.num_labels != 1:
            raise ModelLoadError(
                f"{path}: a verifier has one output, this model has {model.num_labels}"
            )
        model.eval()
        return cls(model, band=band, symmetric=symmetric)

    # -- scoring ----------------------------------------------------------------------------------

    def score(
        self, pairs: Sequence[tuple[str, str]], *, batch_size: int = 64
    ) -> NDArray[np.float32]:
        """The probability (0..1) that each (query, cached prompt) pair may share an answer."""
        if not pairs:
            return np.empty(0, dtype=np.float32)
        items = list(pairs)
        out = self._scorer.probabilities(items, batch_size)
        if self.symmetric:
            back = self._scorer.probabilities([(b, a) for a, b in items], batch_size)
            out = ((out + back) / 2).astype(np.float32)
        return out

    def confirms(self, query: str, candidate: Candidate) -> bool:
        """Whether the decision score of ``query`` and the candidate reaches ``min_score``.

        The band's ``low``/``high`` are not applied here (the adaptive thresholds' hook)."""
        start = time.perf_counter()
        prob = float(self.score([(query, candidate.entry.prompt)])[0])
        ok = self.band.decision(prob, candidate.similarity) >= self.band.min_score
        with self._lock:
            self._latencies.append(time.perf_counter() - start)
            self._counts["calls"] += 1
            self._counts["confirmed" if ok else "vetoed"] += 1
        return ok

    def __call__(self, query: str, candidate: Candidate) -> str | None:
        """The pipeline step: ``None`` to serve, ``"verifier"`` or ``"below_band"`` to refuse."""
        s = candidate.similarity
        if s < self.band.low:
            self._count("below")
            return "below_band"
        if not self.band.scores(query, candidate.entry.prompt, s):
            self._count("above")
            return None
        return None if self.confirms(query, candidate) else "verifier"

    def _count(self, name: str) -> None:
        with self._lock:
            self._counts[name] += 1

    def stats(self) -> VerifierStats:
        """Counters since creation and the p50/p95 latency of recent verifier calls."""
        with self._lock:
            lat = np.asarray(self._latencies, dtype=np.float64) * 1000
            c = dict(self._counts)
        p50, p95 = (float(np.percentile(lat, q)) for q in (50, 95)) if lat.size else (0.0, 0.0)
        return VerifierStats(
            calls=c["calls"],
            confirmed=c["confirmed"],
            vetoed=c["vetoed"],
            above_band=c["above"],
            below_band=c["below"],
            latency_p50_ms=p50,
            latency_p95_ms=p95,
        )


def default_verifier(
    *,
    band: VerifierBand | None = None,
    prefer_onnx: bool = True,
    threads: int = 1,
    cache_dir: Path | str | None = None,
    int8: bool = True,
) -> CrossEncoderVerifier:
    """The verifier shipped in the package, on ONNX Runtime when it works here, else torch.

    It is the packaged all-MiniLM-L6-v2 with the shipped LoRA adapter and classification head
    (:func:`semcache.embedders.shipped.verifier_adapter`, sha256-checked), scoring only the
    candidates inside ``band`` (default :data:`SHIPPED_BAND`, chosen for
    ``default_embedder()``'s tuned vectors). The ONNX export is written once under the
    embedder exports' cache root. ``threads``: ONNX Runtime's intra-op threads (or torch's,
    process-wide, on the fallback). ``int8`` (the default, what the band was chosen with): the
    export's int8 copy, two to three times faster here; ``False``: fp32, as the torch fallback
    runs.
    """
    from semcache.embedders.shipped import verifier_adapter
    from semcache.matching.onnx_verifier import pair_scorer

    scorer = pair_scorer(
        verifier_adapter(),
        what="verifier",
        prefer_onnx=prefer_onnx,
        int8=int8,
        threads=threads,
        cache_dir=cache_dir,
    )
    return CrossEncoderVerifier(scorer, band=band or SHIPPED_BAND)
