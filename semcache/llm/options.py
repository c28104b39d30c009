"""Per-call cache settings (a context variable); :class:`CallOutcome` reports what they did."""

from __future__ import annotations

import contextvars
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from semcache.models import CallOutcome
from semcache.policy import check_threshold
from semcache.selector import check_tags

__all__ = ["CallOptions", "CallOutcome", "cache_options", "current_options"]


@dataclass(frozen=True, slots=True, kw_only=True)
class CallOptions:
    """Per-call settings, set with :func:`cache_options` for the calls inside a ``with`` block."""

    bypass: bool = False
    min_similarity: float | None = None
    ttl: float | None = None
    tenant: str | None = None
    store: bool = True
    tags: tuple[str, ...] = ()


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
    tags: Iterable[str] | None = None,
) -> Iterator[CallOptions]:
    """Change how cached calls behave inside the block (thread- and task-local).

    Args:
        bypass: skip the cache entirely (no lookup, no store).
        min_similarity: a stricter or looser threshold for these calls.
        ttl: seconds the entries stored by these calls live.
        tenant: put these calls in this tenant's partition (overrides the adapter).
        store: ``False`` looks up but never stores (like ``Cache-Control: no-store``).
        tags: labels stored with the entries these calls store (replacing any set outside the
            block), for ``SemanticCache.clear(tag=...)`` and listing. Checked here
            (:class:`InvalidInputError`).
    """
    if min_similarity is not None:
        check_threshold(min_similarity)
    checked = None if tags is None else check_tags(tags)
    current = _OPTIONS.get()
    token = _OPTIONS.set(
        CallOptions(
            bypass=current.bypass if bypass is None else bypass,
            min_similarity=current.min_similarity if min_similarity is None else min_similarity,
            ttl=current.ttl if ttl is None else ttl,
            tenant=current.tenant if tenant is None else tenant,
            store=current.store if store is None else store,
            tags=current.tags if checked is None else checked,
        )
    )
    try:
        yield _OPTIONS.get()
    finally:
        _OPTIONS.reset(token)
