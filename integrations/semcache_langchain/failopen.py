"""Lookups that turn semcache failures into misses, and stores that skip on failure.

The adapters call the cache, never the other way round, so a failing store or embedder must
never fail the chain: it is logged, counted (``errors`` in :meth:`SemanticCache.info`) and the
wrapped component answers.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from semcache.cache import SemanticCache
from semcache.errors import CorruptEntryError, NotCacheableError, SemcacheError
from semcache.keys import Scope

__all__ = ["alookup", "astore", "lookup", "store"]

log = logging.getLogger("semcache.langchain")

T = TypeVar("T")


def lookup(
    cache: SemanticCache,
    text: str,
    scope: Scope,
    decode: Callable[[Any], T],
    *,
    min_similarity: float | None = None,
) -> T | None:
    """The decoded response of a hit, or ``None`` on a miss or any semcache failure."""
    try:
        result = cache.lookup(text, scope, min_similarity=min_similarity)
    except SemcacheError as e:
        cache.count("errors")
        log.warning("semcache: lookup failed, calling through: %s", e)
        return None
    if result.entry is None:
        return None
    try:
        return decode(result.entry.response)
    except CorruptEntryError as e:
        cache.count("errors")
        log.warning("semcache: discarding undecodable entry %s: %s", result.entry.id, e)
        cache.discard_corrupt(CorruptEntryError(str(e), entry_id=result.entry.id))
        return None


def store(
    cache: SemanticCache,
    text: str,
    value: Any,
    scope: Scope,
    *,
    ttl: float | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> None:
    """Store ``value`` (already JSON), or log why not."""
    try:
        cache.store(text, value, scope, ttl=ttl, metadata=metadata)
    except NotCacheableError as e:
        cache.count("store_refusals")
        log.debug("semcache: not stored: %s", e)
    except SemcacheError as e:
        cache.count("errors")
        log.warning("semcache: store failed, not cached: %s", e)


async def alookup(
    cache: SemanticCache,
    text: str,
    scope: Scope,
    decode: Callable[[Any], T],
    *,
    min_similarity: float | None = None,
) -> T | None:
    return await asyncio.to_thread(
        lookup, cache, text, scope, decode, min_similarity=min_similarity
    )


async def astore(
    cache: SemanticCache,
    text: str,
    value: Any,
    scope: Scope,
    *,
    ttl: float | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> None:
    await asyncio.to_thread(store, cache, text, value, scope, ttl=ttl, metadata=metadata)
