"""Value types shared by the cache, its backends and its integrations."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from semcache.errors import FingerprintMismatchError

__all__ = [
    "CallOutcome",
    "Candidate",
    "Entry",
    "LookupResult",
    "ModelFingerprint",
    "NewEntry",
    "Outcome",
    "Tier",
    "check_fingerprint",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelFingerprint:
    """What makes two vectors comparable: the model, its revision, output size and normalisation."""

    model: str
    dim: int
    normalized: bool = True
    revision: str = ""
    variant: str = ""

    def key(self) -> str:
        """A stable string stored beside an index and compared on open."""
        parts = [self.model, self.revision, str(self.dim), "norm" if self.normalized else "raw"]
        if self.variant:
            parts.append(self.variant)
        return "|".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "dim": self.dim,
            "normalized": self.normalized,
            "revision": self.revision,
            "variant": self.variant,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelFingerprint:
        return cls(
            model=str(data["model"]),
            dim=int(data["dim"]),
            normalized=bool(data.get("normalized", True)),
            revision=str(data.get("revision", "")),
            variant=str(data.get("variant", "")),
        )


def check_fingerprint(
    stored: ModelFingerprint | None, given: ModelFingerprint, where: str, remedy: str
) -> None:
    """The one fingerprint check: raise unless ``stored`` is unset or the same model as ``given``.

    ``where`` names the store in the message; ``remedy`` says what to do instead.
    """
    if stored is not None and stored.key() != given.key():
        raise FingerprintMismatchError(
            f"{where} was built with {stored.key()!r}, not {given.key()!r}: {remedy}"
        )


class Tier(StrEnum):
    """Which tier served a hit."""

    EXACT = "exact"
    SEMANTIC = "semantic"


class Outcome(StrEnum):
    """What happened to one request (the label on the request counter)."""

    HIT = "hit"
    MISS = "miss"
    BYPASS = "bypass"
    ERROR = "error"
    COALESCED = "coalesced"


@dataclass(frozen=True, slots=True, kw_only=True)
class NewEntry:
    """An entry about to be stored. ``response`` must be JSON-serialisable.

    ``tenant``, ``model`` and ``namespace`` are its scope's fields and ``tags`` its labels
    (:mod:`semcache.selector`): stored beside the scope key so entries can be selected by them.
    """

    scope_key: str
    text_key: str
    prompt: str
    response: Any
    created_at: float
    expires_at: float | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)
    tenant: str = ""
    model: str = ""
    namespace: str = ""
    tags: tuple[str, ...] = ()

    def stored_as(self, entry_id: str) -> Entry:
        """The :class:`Entry` this becomes once a backend has stored it under ``entry_id``."""
        return Entry(
            id=entry_id,
            scope_key=self.scope_key,
            text_key=self.text_key,
            prompt=self.prompt,
            response=self.response,
            metadata=dict(self.metadata),
            created_at=self.created_at,
            expires_at=self.expires_at,
            tenant=self.tenant,
            model=self.model,
            namespace=self.namespace,
            tags=self.tags,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Entry:
    """A stored entry, as read back from a backend (labels as :class:`NewEntry`)."""

    id: str
    scope_key: str
    text_key: str
    prompt: str
    response: Any
    created_at: float
    expires_at: float | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)
    tenant: str = ""
    model: str = ""
    namespace: str = ""
    tags: tuple[str, ...] = ()

    def expired(self, now: float) -> bool:
        return self.expires_at is not None and now >= self.expires_at


@dataclass(frozen=True, slots=True)
class Candidate:
    """A nearest neighbour and its cosine similarity to the query (higher is closer)."""

    entry: Entry
    similarity: float


@dataclass(frozen=True, slots=True, kw_only=True)
class LookupResult:
    """The answer to one lookup.

    Attributes:
        entry: the entry served, or ``None`` on a miss.
        tier: which tier served it.
        similarity: cosine similarity of the served entry (1.0 for the exact tier); on a miss,
            that of the nearest candidate, if any, so near misses can be seen.
        threshold: the ``min_similarity`` the decision used.
        reason: why a candidate was refused, when one was (``"below_threshold"``, ``"vetoed"``...).
        shadow: in shadow mode, the entry that would have been served (the result is a miss).
        nearest: on a miss whose nearest candidate was refused only by its learned threshold,
            that candidate (exploration judges it against the LLM's answer, at no extra cost).
    """

    entry: Entry | None
    tier: Tier | None
    similarity: float | None
    threshold: float
    reason: str = ""
    shadow: Entry | None = None
    nearest: Candidate | None = None

    @property
    def hit(self) -> bool:
        return self.entry is not None


@dataclass(frozen=True, slots=True, kw_only=True)
class CallOutcome:
    """What the cache did for one call (``cached(on_outcome=...)``, the proxy's headers).

    ``outcome`` is hit, miss, bypass or coalesced (served after waiting for a near-identical
    in-flight call);
    ``reason`` says why a candidate was refused or the call bypassed; ``error`` is set when a
    cache failure turned the call into a miss or a bypass. ``lookup`` is the lookup behind a
    hit, a miss or a coalesced call: give it to ``SemanticCache.feedback`` to say whether the
    answer served (or, in shadow mode, the one that would have been) was right.
    """

    outcome: Outcome
    tier: str | None = None
    similarity: float | None = None
    reason: str = ""
    error: bool = False
    lookup: LookupResult | None = field(default=None, repr=False, compare=False)
