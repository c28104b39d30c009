"""Walking a backend's entries page by page, and a summary of what it holds."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from semcache.selector import Selector

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray

    from semcache.backends.base import AsyncBackend, Backend, EntryPage
    from semcache.models import Entry

__all__ = ["Summary", "aiter_entries", "iter_entries", "summarize"]

#: Entries asked for per page while walking a backend.
PAGE = 500


def iter_entries(
    backend: Backend, selector: Selector | None = None, *, vectors: bool = False, page: int = PAGE
) -> Iterator[tuple[Entry, NDArray[np.float32] | None]]:
    """Every selected entry (expired ones not yet purged included) with its vector if asked.

    An entry may come twice when the backend's paging repeats one (a Redis ``SCAN`` while the
    keyspace grows); each id is yielded once.
    """
    selector = selector or Selector()
    seen: set[str] = set()
    cursor: str | None = None
    while True:
        got = backend.entries(selector, cursor, page, vectors)
        yield from _unseen(got, seen, vectors)
        if got.cursor is None:
            return
        cursor = got.cursor


async def aiter_entries(
    backend: AsyncBackend,
    selector: Selector | None = None,
    *,
    vectors: bool = False,
    page: int = PAGE,
) -> AsyncIterator[tuple[Entry, NDArray[np.float32] | None]]:
    """:func:`iter_entries`, awaiting the backend's async methods."""
    selector = selector or Selector()
    seen: set[str] = set()
    cursor: str | None = None
    while True:
        got = await backend.aentries(selector, cursor, page, vectors)
        for item in _unseen(got, seen, vectors):
            yield item
        if got.cursor is None:
            return
        cursor = got.cursor


def _unseen(
    got: EntryPage, seen: set[str], vectors: bool
) -> list[tuple[Entry, NDArray[np.float32] | None]]:
    """The entries of one page not yielded before (``seen`` is updated), with their vectors."""
    out = []
    for i, entry in enumerate(got.entries):
        if entry.id not in seen:
            seen.add(entry.id)
            out.append((entry, got.vectors[i] if vectors else None))
    return out


@dataclass(frozen=True, slots=True)
class Summary:
    """What a backend holds, by label (``semcache stats``).

    Attributes:
        entries: entries stored (expired ones not yet purged included).
        expired: of those, expired at the time of the summary.
        scopes: distinct scope keys.
        tenants, models, namespaces, tags: entries per label value (``""``: none).
        oldest, newest: the earliest and latest ``created_at`` (``None`` when empty).
    """

    entries: int
    expired: int
    scopes: int
    tenants: dict[str, int] = field(default_factory=dict)
    models: dict[str, int] = field(default_factory=dict)
    namespaces: dict[str, int] = field(default_factory=dict)
    tags: dict[str, int] = field(default_factory=dict)
    oldest: float | None = None
    newest: float | None = None


def summarize(backend: Backend, now: float, selector: Selector | None = None) -> Summary:
    """Count the selected entries by label, walking them once (no vectors read)."""
    tenants: Counter[str] = Counter()
    models: Counter[str] = Counter()
    namespaces: Counter[str] = Counter()
    tags: Counter[str] = Counter()
    scopes: set[str] = set()
    entries = expired = 0
    oldest: float | None = None
    newest: float | None = None
    for entry, _ in iter_entries(backend, selector):
        entries += 1
        expired += entry.expired(now)
        scopes.add(entry.scope_key)
        tenants[entry.tenant] += 1
        models[entry.model] += 1
        namespaces[entry.namespace] += 1
        tags.update(entry.tags)
        oldest = entry.created_at if oldest is None else min(oldest, entry.created_at)
        newest = entry.created_at if newest is None else max(newest, entry.created_at)
    return Summary(
        entries=entries,
        expired=expired,
        scopes=len(scopes),
        tenants=dict(tenants.most_common()),
        models=dict(models.most_common()),
        namespaces=dict(namespaces.most_common()),
        tags=dict(tags.most_common()),
        oldest=oldest,
        newest=newest,
    )
