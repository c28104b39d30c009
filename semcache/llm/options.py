"""Per-call cache settings (a context variable); :class:`CallOutcome` reports what they did."""

from __future__ import annotations

import contextvars
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from semcache.models import CallOutcome
from semcache.policy import check_threshold

__all__ = ["CallOptions", "CallOutcome", "cache_options", "current_options"]


@dataclass(frozen=True, slots=True, kw_only=True)
class CallOptions:
    """Per-call settings, set with :func:`cache_options` for the calls inside a ``with`` block."""

    bypass: bool = False
    min_similarity: float | None = None
    ttl: float | None = None
    tenant: str | None = None
    store: bool = True


_OPTIONS: contextvars.ContextVar[CallOptions] = contextvars.ContextVar(
    "semcache_options",
    default=CallOptions(),  # noqa: B039 - frozen, so sharing the default is safe
)


def current_options() -> CallOptions:
    """The options in force for calls made here (this thread or task)."""
    return _OPTIONS.get()


@contextmanager
def cache_options(
    *,
    bypass: bool | None = None,
    min_similarity: float | None = None,
    ttl: float | None = None,
    tenant: str | None = None,
    store: bool | None = None,
) -> Iterator[CallOptions]:
    """Change how cached calls behave inside the block (thread- and task-local).

    Args:
        bypass: skip the cache entirely (no lookup, no store).
        min_similarity: a stricter or looser threshold for these calls.
        ttl: seconds the entries stored by these calls live.
        tenant: put these calls in this tenant's partition (overrides the adapter).
        store: ``False`` looks up but never stores (like ``Cache-Control: no-store``).
    """
    if min_similarity is not None:
        check_threshold(min_similarity)
    current = _OPTIONS.get()
    token = _OPTIONS.set(
        CallOptions(
            bypass=current.bypass if bypass is None else bypass,
            min_similarity=current.min_similarity if min_similarity is None else min_similarity,
            ttl=current.ttl if ttl is None else ttl,
            tenant=current.tenant if tenant is None else tenant,
            store=current.store if store is None else store,
        )
    )
    try:
        yield _OPTIONS.get()
    finally:
        _OPTIONS.reset(token)
