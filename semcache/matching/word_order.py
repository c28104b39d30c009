"""Same words, another order: the one difference a mean-pooled embedding cannot see.

A bi-encoder averages its token vectors, so two prompts made of (almost) the same words get
(almost) the same vector whatever their order: "flights from Paris to Rome" and "flights from
Rome to Paris" sit above any useful threshold. :func:`reordered` finds such pairs with no model,
so the verifier can read them even when their similarity is above its band
(:attr:`semcache.matching.verifier.VerifierBand.reorder_overlap`).
"""

from __future__ import annotations

import re
from collections import Counter

__all__ = ["reordered", "word_overlap"]

_TOKEN = re.compile(r"\w+")


def _tokens(text: str) -> list[str]:
    return _TOKEN.findall(text.casefold())


def word_overlap(a: str, b: str) -> float:
    """Shared words (with multiplicity) over the longer prompt's word count, in [0, 1]."""
    return _shared(_tokens(a), _tokens(b))[1]


def reordered(a: str, b: str, min_overlap: float) -> bool:
    """Whether ``a`` and ``b`` share at least ``min_overlap`` of their words, in another order.

    The shared words are compared in the order each prompt uses them; prompts whose shared words
    come in the same order (one word more or less, a changed word) are not reordered.
    """
    ta, tb = _tokens(a), _tokens(b)
    shared, overlap = _shared(ta, tb)
    if overlap < min_overlap:
        return False
    return _in_order(ta, shared) != _in_order(tb, shared)


def _shared(ta: list[str], tb: list[str]) -> tuple[Counter[str], float]:
    """The words both token lists have (with multiplicity) and their share of the longer one."""
    longest = max(len(ta), len(tb))
    if longest == 0:
        return Counter(), 0.0
    shared = Counter(ta) & Counter(tb)
    return shared, sum(shared.values()) / longest


def _in_order(tokens: list[str], shared: Counter[str]) -> list[str]:
    """The shared words in the order ``tokens`` has them, each as often as both prompts do."""
    left = Counter(shared)
    out = []
    for t in tokens:
        if left[t] > 0:
            left[t] -= 1
            out.append(t)
    return out
