"""Cache decisions as pure functions: what to serve, what to store, when it expires.

The sync and async paths of every entry point call these same functions, so they cannot drift.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Literal, Protocol

from semcache.errors import (
    ConfigurationError,
    InvalidInputError,
    LookupTimeoutError,
    NotCacheableError,
)
from semcache.matching.volatile import is_volatile
from semcache.models import Candidate, Entry, LookupResult, NewEntry, Tier

__all__ = [
    "DEFAULT_LOOKUP_BUDGET",
    "DEFAULT_MAX_ENTRY_BYTES",
    "DEFAULT_MIN_SIMILARITY",
    "DEFAULT_VOLATILE_TTL",
    "SHADOW_HIT",
    "TOO_LARGE",
    "VOLATILE",
    "CachePolicy",
    "Guard",
    "VolatilePolicy",
    "budget_spent",
    "check_budget",
    "check_entry_size",
    "check_text",
    "choose",
    "entry_bytes",
    "expiry",
    "fresh",
    "max_age",
    "resolve_threshold",
    "shadow_entry_id",
    "shadow_miss",
    "volatile_bypassed",
]

#: The default threshold, chosen on Quora question pairs with all-MiniLM-L6-v2 (see README).
DEFAULT_MIN_SIMILARITY = 0.95

#: The reason of a miss whose candidate was below its learned threshold.
BELOW_LEARNED = "below_learned_threshold"
#: The reason of a shadow-mode miss that would have been a hit (the entry is in ``shadow``).
SHADOW_HIT = "shadow_hit"

#: Seconds a lookup may spend (exact tier + embedding + search): about 30x a healthy lookup with
#: the packaged model on one CPU thread (~15 ms), well under an LLM call, and with room for a
#: loaded machine (a budget that trips under ordinary load turns hits into upstream calls).
DEFAULT_LOOKUP_BUDGET = 0.5

#: Bytes of JSON (response + metadata) an entry may have: 1 MiB, ~250k tokens of text.
DEFAULT_MAX_ENTRY_BYTES = 1 << 20

#: The store refusal reason of an entry over ``max_entry_bytes``.
TOO_LARGE = "too_large"

#: The bypass reason of a volatile prompt (``VolatilePolicy(action="bypass")``).
VOLATILE = "volatile"

#: Seconds a volatile prompt's answer may be reused by default: 5 minutes. Prices, scores,
#: traffic and outages move on a scale of minutes, so an answer older than that is likely
#: wrong; within it, a burst of people asking the same thing ("who won last night", "is Slack
#: down") still shares one upstream call, which is where a volatile prompt's hits come from.
DEFAULT_VOLATILE_TTL = 300.0


class Guard(Protocol):
    """A veto on a semantic hit: a reason to refuse the candidate, or ``None`` to let it pass.

    The guards and the band verifier of :func:`choose` are guards. ``None`` means "no
    objection", not "correct", so a guard's verdict is never learned from; the labels
    :class:`~semcache.matching.adaptive.AdaptiveThresholds` learns from come from a
    :class:`~semcache.matching.adaptive.Judge` (``(query, candidate) -> bool``).
    """

    def __call__(self, query: str, candidate: Candidate) -> str | None: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class VolatilePolicy:
    """What the cache does with a volatile prompt: a question whose answer depends on when it
    is asked ("what's the weather today", "current BTC price", "latest version of Python").

    Attributes:
        action: ``"cap_ttl"`` (the default): a volatile prompt's entry lives at most
            ``max_ttl`` seconds (a shorter TTL, per call or in the policy, is kept), and a
            lookup of a volatile prompt is served only entries at most ``max_ttl`` old (so an
            answer stored earlier for a similar prompt, with a longer TTL, is not). ``"bypass"``:
            a volatile prompt is neither looked up nor stored (a bypass, reason ``volatile``;
            a direct :meth:`~semcache.SemanticCache.store` raises :class:`NotCacheableError`).
            Both are counted in ``info().volatile``.
        max_ttl: seconds, for ``"cap_ttl"`` (default :data:`DEFAULT_VOLATILE_TTL`, 5 minutes).
        detector: ``text -> bool``; by default the English rules of
            :func:`semcache.matching.volatile.is_volatile`. A detector that raises is a failed
            step: a miss on the request paths (:mod:`semcache._failopen`), a
            :class:`GuardError` from a direct call.

    Turn the guard off with ``CachePolicy(volatile=None)``.
    """

    action: Literal["cap_ttl", "bypass"] = "cap_ttl"
    max_ttl: float = DEFAULT_VOLATILE_TTL
    detector: Callable[[str], bool] = is_volatile

    def __post_init__(self) -> None:
        if self.action not in ("cap_ttl", "bypass"):
            raise ConfigurationError(
                f"volatile action must be 'cap_ttl' or 'bypass', got {self.action!r}"
            )
        cap = self.max_ttl
        if (
            isinstance(cap, bool)
            or not isinstance(cap, int | float)
            or not (math.isfinite(cap) and cap > 0)
        ):
            raise ConfigurationError(
                f"volatile max_ttl must be a positive number of seconds, got {cap!r}"
            )
        if not callable(self.detector):
            raise ConfigurationError(
                f"volatile detector must be callable (text -> bool), got {self.detector!r}"
            )


@dataclass(frozen=True, slots=True, kw_only=True)
class CachePolicy:
    """How the cache decides. Validated at construction.

    Attributes:
        min_similarity: cosine similarity (-1..1, higher is closer) a semantic hit needs.
        ttl: seconds an entry lives; ``None`` keeps it until evicted.
        max_entries: size bound; past it the backend evicts the entries its eviction policy
            ranks lowest (``GDSF()`` by default: the fewest tokens saved per byte, aged).
        candidates: nearest neighbours fetched per lookup (guards may refuse the first).
        exact_tier: check the normalised-text exact tier before embedding.
        max_text_chars: longer texts are refused (:class:`InvalidInputError`).
        lookup_budget: seconds a lookup's exact tier, embedding and search may take together
            (the decision, guards and verifier are not counted); past it the lookup fails with
            :class:`LookupTimeoutError` and the call goes upstream. ``None``: no budget. An
            async lookup is cancelled at the deadline; a sync one is checked before each step,
            since a blocking call cannot be interrupted (a Redis command is bounded by its own
            socket timeout instead), and a finished step's result is used.
        max_entry_bytes: larger entries (UTF-8 JSON of the response plus metadata) are not
            stored (:class:`NotCacheableError`, reason ``too_large``). ``None``: no limit.
        volatile: what to do with time- and price-sensitive prompts (:class:`VolatilePolicy`;
            on by default: their answers are reused for 5 minutes at most). ``None``: off.
    """

    min_similarity: float = DEFAULT_MIN_SIMILARITY
    ttl: float | None = None
    max_entries: int | None = 100_000
    candidates: int = 4
    exact_tier: bool = True
    max_text_chars: int = 8_000
    lookup_budget: float | None = DEFAULT_LOOKUP_BUDGET
    max_entry_bytes: int | None = DEFAULT_MAX_ENTRY_BYTES
    volatile: VolatilePolicy | None = field(default_factory=VolatilePolicy)

    def __post_init__(self) -> None:
        check_threshold(self.min_similarity)
        if self.ttl is not None and not (self.ttl > 0 and math.isfinite(self.ttl)):
            raise ConfigurationError(
                f"ttl must be a positive number of seconds or None, got {self.ttl}"
            )
        if self.max_entries is not None and self.max_entries < 1:
            raise ConfigurationError(f"max_entries must be >= 1 or None, got {self.max_entries}")
        if not 1 <= self.candidates <= 100:
            raise ConfigurationError(f"candidates must be in 1..100, got {self.candidates}")
        if self.max_text_chars < 1:
            raise ConfigurationError(f"max_text_chars must be >= 1, got {self.max_text_chars}")
        budget = self.lookup_budget
        if budget is not None and not (
            isinstance(budget, int | float)
            and not isinstance(budget, bool)
            and math.isfinite(budget)
            and budget > 0
        ):
            raise ConfigurationError(
                f"lookup_budget must be a positive number of seconds or None, got {budget!r}"
            )
        size = self.max_entry_bytes
        if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 1):
            raise ConfigurationError(f"max_entry_bytes must be an int >= 1 or None, got {size!r}")
        if self.volatile is not None and not isinstance(self.volatile, VolatilePolicy):
            raise ConfigurationError(
                f"volatile must be a VolatilePolicy or None, got {type(self.volatile).__name__}"
            )


def check_threshold(value: float) -> float:
    """Validate a ``min_similarity``: a cosine similarity in [-1, 1]."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigurationError(f"min_similarity must be a number, got {type(value).__name__}")
    if not -1.0 <= float(value) <= 1.0:
        raise ConfigurationError(
            f"min_similarity is a cosine similarity in [-1, 1] (higher is closer), got {value}"
        )
    return float(value)


def resolve_threshold(policy: CachePolicy, override: float | None) -> float:
    """The per-call threshold if given (validated), else the policy's."""
    return policy.min_similarity if override is None else check_threshold(override)


def check_text(text: object, policy: CachePolicy) -> str:
    """Refuse what cannot be cached: non-text, empty or whitespace, longer than the limit, or
    not valid Unicode (a lone surrogate, as ``json.loads`` gives for a split emoji)."""
    if not isinstance(text, str):
        raise InvalidInputError(f"the text to cache must be a str, got {type(text).__name__}")
    if not text.strip():
        raise InvalidInputError("the text to cache is empty")
    if len(text) > policy.max_text_chars:
        raise InvalidInputError(
            f"the text to cache has {len(text)} characters; max_text_chars is "
            f"{policy.max_text_chars}"
        )
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise InvalidInputError(f"the text to cache is not valid Unicode: {e.reason}") from None
    return text


def budget_spent(policy: CachePolicy, elapsed: float, step: str) -> LookupTimeoutError:
    """The error of a lookup that ran ``elapsed`` seconds, past its budget, by the end of
    ``step``."""
    return LookupTimeoutError(
        f"lookup budget of {policy.lookup_budget:g}s spent ({elapsed:.3f}s, at {step})"
    )


def check_budget(policy: CachePolicy, elapsed: float, step: str) -> None:
    """Raise :class:`LookupTimeoutError` if a lookup that has run ``elapsed`` seconds by the end
    of ``step`` is past its budget."""
    if policy.lookup_budget is not None and elapsed > policy.lookup_budget:
        raise budget_spent(policy, elapsed, step)


def entry_bytes(entry: NewEntry) -> int:
    """Bytes of the UTF-8 JSON of ``entry``'s response and metadata, as backends store them.

    Raises :class:`NotCacheableError` if either is not JSON.
    """
    try:
        response = json.dumps(entry.response, ensure_ascii=False, allow_nan=False)
        metadata = json.dumps(dict(entry.metadata), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise NotCacheableError(f"the response or metadata is not JSON: {e}") from e
    # surrogatepass: a lone surrogate counts its 3 bytes (backends store it escaped)
    return len(response.encode("utf-8", "surrogatepass")) + len(
        metadata.encode("utf-8", "surrogatepass")
    )


def check_entry_size(entry: NewEntry, policy: CachePolicy) -> None:
    """Refuse an entry larger than ``max_entry_bytes`` (:class:`NotCacheableError`, reason
    ``too_large``) or not JSON (reason ``not_serialisable``)."""
    if policy.max_entry_bytes is None:
        return
    size = entry_bytes(entry)
    if size > policy.max_entry_bytes:
        raise NotCacheableError(
            f"the entry has {size} bytes of JSON; max_entry_bytes is {policy.max_entry_bytes}",
            reason=TOO_LARGE,
        )


def exact_hit(entry: Entry, threshold: float) -> LookupResult:
    return LookupResult(entry=entry, tier=Tier.EXACT, similarity=1.0, threshold=threshold)


def choose(
    query: str,
    candidates: Sequence[Candidate],
    threshold: float,
    guards: Sequence[Guard] = (),
    threshold_for: Callable[[Candidate], float] | None = None,
    verifier: Guard | None = None,
) -> LookupResult:
    """Serve the most similar candidate that passes every step of the decision pipeline.

    Candidates are tried from the most similar down, each through pure steps, cheapest first:

    1. **threshold floor**: below ``threshold`` nothing is served (and no later candidate is);
    2. **learned threshold**: ``threshold_for`` (e.g. adaptive thresholds) may raise the bar;
    3. **guards**: cheap vetoes (numbers, negation...);
    4. **band verifier**: ``verifier`` (e.g. a cross-encoder) confirms or vetoes, and is only
       consulted inside its similarity band, so most hits never pay for it.

    The result's ``threshold`` is the one applied to the served (or the nearest) candidate; a
    miss's ``reason`` is the last refusal (``below_learned_threshold``, ``vetoed:<reason>``).
    """
    best = max((c.similarity for c in candidates), default=None)
    reason = "no_candidates" if best is None else "below_threshold"
    applied: float | None = None
    nearest: Candidate | None = None
    for cand in sorted(candidates, key=lambda c: -c.similarity):
        if cand.similarity < threshold:
            break
        own = learned_threshold(cand, threshold, threshold_for)
        refusal = (
            below_learned(cand, own)
            or guard_veto(query, cand, guards)
            or guard_veto(query, cand, () if verifier is None else (verifier,))
        )
        if refusal is None:
            return LookupResult(
                entry=cand.entry, tier=Tier.SEMANTIC, similarity=cand.similarity, threshold=own
            )
        if applied is None:  # the nearest candidate: its threshold is the result's
            applied = own
            nearest = cand if refusal == BELOW_LEARNED else None
        reason = refusal
    used = threshold if applied is None else applied
    return LookupResult(
        entry=None, tier=None, similarity=best, threshold=used, reason=reason, nearest=nearest
    )


def learned_threshold(
    cand: Candidate, floor: float, threshold_for: Callable[[Candidate], float] | None
) -> float:
    """Step 2: the candidate's own threshold, never below the floor."""
    return floor if threshold_for is None else max(floor, threshold_for(cand))


def below_learned(cand: Candidate, own: float) -> str | None:
    """Step 2's verdict: ``below_learned_threshold`` if the candidate misses its threshold."""
    return BELOW_LEARNED if cand.similarity < own else None


def guard_veto(query: str, cand: Candidate, guards: Sequence[Guard]) -> str | None:
    """Steps 3 and 4: the first veto of ``guards`` as ``vetoed:<reason>``, else ``None``."""
    veto = next((r for g in guards if (r := g(query, cand)) is not None), None)
    return None if veto is None else f"vetoed:{veto}"


def shadow_miss(result: LookupResult) -> LookupResult:
    """The miss shadow mode returns for a would-be hit, keeping the entry in ``shadow``."""
    if result.entry is None:
        return result
    return replace(result, entry=None, tier=None, reason=SHADOW_HIT, shadow=result.entry)


def shadow_entry_id(result: LookupResult) -> str | None:
    """The entry a shadow-mode miss would have served, if it was a would-be hit."""
    return None if result.shadow is None else result.shadow.id


def expiry(
    now: float, policy: CachePolicy, ttl: float | None, *, volatile: bool = False
) -> float | None:
    """When an entry stored now expires: the per-call ``ttl``, else the policy's; a volatile
    prompt's no later than its cap (:func:`max_age`)."""
    if ttl is not None and not (ttl > 0 and math.isfinite(ttl)):
        raise InvalidInputError(f"ttl must be a positive number of seconds, got {ttl}")
    chosen = ttl if ttl is not None else policy.ttl
    cap = max_age(policy, volatile)
    if cap is not None:
        chosen = cap if chosen is None else min(chosen, cap)
    return None if chosen is None else now + chosen


def volatile_bypassed(policy: CachePolicy, volatile: bool) -> bool:
    """Whether a prompt (``volatile`` as detected) skips the cache: looked up and stored never."""
    return volatile and policy.volatile is not None and policy.volatile.action == "bypass"


def max_age(policy: CachePolicy, volatile: bool) -> float | None:
    """The age (seconds) past which an entry is neither kept nor served for a prompt: the
    volatile cap for a volatile prompt under ``cap_ttl``, else ``None`` (no limit)."""
    rule = policy.volatile
    if not volatile or rule is None or rule.action != "cap_ttl":
        return None
    return rule.max_ttl


def fresh(entry: Entry, now: float, age: float | None) -> bool:
    """Whether ``entry`` may be served to a prompt whose entries may be ``age`` seconds old."""
    return age is None or now - entry.created_at <= age
