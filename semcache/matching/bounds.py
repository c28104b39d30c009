"""One-sided bounds on a false-hit rate, and the lowest threshold they certify.

The binomial and beta functions are implemented here (regularised incomplete beta by continued
fraction, quantiles by bisection), so the core needs no scipy; the tests compare them with scipy.
Used online by :mod:`semcache.matching.adaptive` and offline by :mod:`semcache.measure`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from semcache.errors import ConfigurationError, InvalidInputError

if TYPE_CHECKING:
    from numpy.typing import NDArray

__all__ = [
    "AllowanceTable",
    "betainc",
    "binomial_cdf",
    "clopper_pearson",
    "clopper_pearson_upper",
    "lowest_safe_threshold",
    "max_false_allowed",
]


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


class AllowanceTable:
    """``max_false_allowed(n)`` for n = 0..N, grown incrementally (it is non-decreasing in n).

    The values are kept in a numpy array grown by doubling, so :meth:`upto` is a view, not a
    copy: the online solver reads it on every re-solve.
    """

    def __init__(self, delta: float, confidence: float) -> None:
        self.delta, self.alpha = delta, 1.0 - confidence
        self._table = np.full(1, -1, dtype=np.int64)
        self._size = 1

    def upto(self, n: int) -> NDArray[np.int64]:
        """``max_false_allowed(m)`` for m = 0..n (a read-only view)."""
        if n >= self._size:
            self._grow(n)
        view = self._table[: n + 1]
        view.flags.writeable = False
        return view

    def _grow(self, n: int) -> None:
        if n >= len(self._table):
            grown = np.empty(max(n + 1, 2 * len(self._table)), dtype=np.int64)
            grown[: self._size] = self._table[: self._size]
            self._table = grown
        table, k = self._table, int(self._table[self._size - 1])
        log_alpha = math.log(self.alpha)
        for m in range(self._size, n + 1):
            while k + 1 < m and _log_binomial_cdf(k + 1, m, self.delta) <= log_alpha:
                k += 1
            table[m] = k
        self._size = n + 1


def _log_binomial_cdf(k: int, n: int, p: float) -> float:
    """``log P(X <= k)`` for ``X ~ Binomial(n, p)``, ``0 <= k < n``, summed in log space with
    numpy (about ten times faster than :func:`binomial_cdf` for the table's small ``k``)."""
    j = np.arange(k, dtype=np.float64)
    log_comb = np.zeros(k + 1)
    np.cumsum(np.log((n - j) / (j + 1)), out=log_comb[1:])
    i = np.arange(k + 1, dtype=np.float64)
    log_pmf = log_comb + i * math.log(p) + (n - i) * math.log1p(-p)
    top = float(log_pmf.max())
    return top + math.log(float(np.exp(log_pmf - top).sum()))


def lowest_safe_threshold(
    similarities: NDArray[np.floating[Any]] | Sequence[float],
    correct: NDArray[np.bool_] | Sequence[bool],
    delta: float,
    confidence: float = 0.95,
    *,
    table: AllowanceTable | None = None,
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
    allowed = (table or AllowanceTable(delta, confidence)).upto(sims.size)[1:]
    safe = last & (false_cum <= allowed)
    idx = np.flatnonzero(safe)
    return None if idx.size == 0 else float(sims[idx[-1]])
