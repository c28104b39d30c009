"""The Redis backend's searches: KNN and its plan, counts, id scans and filters, and reading
their results (and a ``SCAN`` page) back as entries and candidates.

Pure functions (no I/O); redisvl is imported inside the query builders, when a query is built.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from semcache.backends.redis import labels
from semcache.backends.redis.codec import as_text, parse_entry
from semcache.backends.redis.schema import (
    CREATED_AT,
    EXPIRES_AT,
    METADATA,
    PROMPT,
    RESPONSE,
    SCOPE,
    TEXT_KEY,
    VECTOR,
    RedisKeys,
)
from semcache.errors import InvalidInputError
from semcache.models import Candidate, Entry

if TYPE_CHECKING:
    from numpy.typing import NDArray

    from semcache.backends.vector_index import HnswParams
    from semcache.selector import Selector

__all__ = [
    "DISTANCE",
    "RETURN_FIELDS",
    "ScopeSizes",
    "candidates",
    "count_query",
    "expired_filter",
    "hybrid_policy",
    "ids_query",
    "knn_query",
    "listed",
    "live_match",
    "result_ids",
    "scan_cursor",
    "scope_filter",
    "similarity",
    "vector_query",
]

DISTANCE = "vector_distance"
RETURN_FIELDS = [
    SCOPE,
    TEXT_KEY,
    PROMPT,
    RESPONSE,
    METADATA,
    CREATED_AT,
    EXPIRES_AT,
    *labels.LABEL_FIELDS,
]


def similarity(distance: Any) -> float:
    """Redis COSINE distance (0..2) to the project's unit: cosine similarity = 1 - distance."""
    return 1.0 - float(distance)


# Relative costs measured on RediSearch 2.10 (Redis Stack 7.4), 384-d float32, M=16: brute force
# over the filtered documents (ADHOC_BF) ~1.6 us per document; filtered HNSW (BATCHES) ~3 us per
# unit of search width. The engine's own choice picks brute force for a scope holding all of a
# 10k-entry index (16 ms instead of 0.5 ms), so the backend chooses.
_BRUTE_COST, _HNSW_COST = 1.6, 3.0


def hybrid_policy(scope_size: int, total: int, k: int, ef_runtime: int) -> str:
    """``"ADHOC_BF"`` (exact over the scope) or ``"BATCHES"`` (filtered HNSW), the cheaper one.

    BATCHES needs about ``k / (scope_size / total)`` graph candidates to find ``k`` in the scope.
    """
    if scope_size <= 0:
        return "ADHOC_BF"
    ratio = scope_size / max(total, scope_size)
    brute = _BRUTE_COST * scope_size
    batches = _HNSW_COST * max(ef_runtime, k / ratio)
    return "ADHOC_BF" if brute <= batches else "BATCHES"


def vector_query(
    scope_key: str,
    vector: NDArray[np.float32],
    k: int,
    ef_runtime: int,
    policy: str | None = None,
) -> Any:
    """A redisvl KNN query pre-filtered to one scope (the TAG filter runs inside the search)."""
    from redisvl.query import VectorQuery
    from redisvl.query.filter import Tag

    return VectorQuery(
        vector=vector.tobytes(),
        vector_field_name=VECTOR,
        return_fields=RETURN_FIELDS,
        filter_expression=Tag(SCOPE) == scope_key,
        num_results=k,
        ef_runtime=None if policy == "ADHOC_BF" else max(ef_runtime, k),  # HNSW only
        hybrid_policy=policy,
        return_score=True,
        dtype="float32",
    )


def knn_query(
    scope_key: str,
    vector: NDArray[np.float32],
    k: int,
    hnsw: HnswParams,
    sizes: tuple[int, int],
) -> Any:
    """The KNN query of a lookup, with the cheaper plan for a scope of ``sizes`` (scope, total).

    The graph holds every scope's entries, so its search width follows the total.
    """
    ef_runtime = hnsw.ef_for(sizes[1])
    policy = hybrid_policy(sizes[0], sizes[1], k, ef_runtime)
    return vector_query(scope_key, vector, k, ef_runtime, policy)


class ScopeSizes:
    """Entry counts per scope, remembered for a few seconds: they only steer the query plan."""

    def __init__(
        self,
        seconds: float = 10.0,
        *,
        limit: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.seconds, self.limit, self._clock = seconds, limit, clock
        self._known: dict[str, tuple[int, int, float]] = {}

    def get(self, scope_key: str) -> tuple[int, int] | None:
        """The scope's and the cache's entry counts, if counted recently."""
        known = self._known.get(scope_key)
        if known is not None and self._clock() - known[2] < self.seconds:
            return known[0], known[1]
        return None

    def remember(self, scope_key: str, scope_size: int, total: int) -> tuple[int, int]:
        if len(self._known) >= self.limit:
            self._known.clear()
        self._known[scope_key] = (scope_size, total, self._clock())
        return scope_size, total

    def clear(self) -> None:
        self._known.clear()


def count_query(scope_key: str | None = None) -> Any:
    """A redisvl query counting the entries of one scope, or of the whole cache."""
    from redisvl.query import CountQuery
    from redisvl.query.filter import Tag

    return CountQuery() if scope_key is None else CountQuery(Tag(SCOPE) == scope_key)


def ids_query(filter_expression: Any, limit: int) -> Any:
    """A redisvl query for up to ``limit`` ids (no payload) of entries matching a filter."""
    from redisvl.query import FilterQuery

    query = FilterQuery(filter_expression=filter_expression, num_results=limit)
    query.no_content()
    return query


def scope_filter(scope_key: str | None) -> Any:
    """A redisvl filter matching one scope's entries, or every entry."""
    from redisvl.query.filter import FilterExpression, Tag

    return FilterExpression("*") if scope_key is None else Tag(SCOPE) == scope_key


def expired_filter(now: float) -> Any:
    """A redisvl filter matching the entries expired at ``now``."""
    from redisvl.query.filter import Num

    return Num(EXPIRES_AT) <= now


def result_ids(keys: RedisKeys, result: Any) -> list[str]:
    """The entry ids of a raw ``FT.SEARCH`` result."""
    return [keys.id_of(as_text(doc.id)) for doc in result.docs]


def live_match(entry: Entry | None, scope_key: str, text_key: str, now: float) -> Entry | None:
    """The exact tier's answer: ``entry`` if it is live and really of this scope and text."""
    if entry is None or entry.expired(now):
        return None
    if entry.scope_key != scope_key or entry.text_key != text_key:
        return None
    return entry


def candidates(
    keys: RedisKeys, docs: Iterable[Mapping[str, Any]], scope_key: str, now: float
) -> list[Candidate]:
    """Processed KNN results as live candidates of ``scope_key``, most similar first."""
    out: list[Candidate] = []
    for doc in docs:
        if PROMPT not in doc and SCOPE not in doc:
            continue  # expired while the search ran: the engine returned its id only
        entry = parse_entry(keys.id_of(doc["id"]), doc)
        if entry.scope_key == scope_key and not entry.expired(now):
            out.append(Candidate(entry, similarity(doc[DISTANCE])))
    out.sort(key=lambda c: -c.similarity)
    return out


def listed(
    keys: RedisKeys,
    names: Sequence[Any],
    hashes: Sequence[Mapping[Any, Any]],
    selector: Selector,
    with_vectors: bool,
) -> tuple[list[Entry], list[NDArray[np.float32]]]:
    """The selected entries (and their vectors) among scanned keys and their ``HGETALL``s; keys
    gone since the scan (empty hashes) are skipped."""
    entries: list[Entry] = []
    vectors: list[NDArray[np.float32]] = []
    for name, fields in zip(names, hashes, strict=True):
        if not fields:
            continue
        entry = parse_entry(keys.id_of(as_text(name)), fields)
        if not selector.matches(entry):
            continue
        entries.append(entry)
        if with_vectors:
            raw = fields.get(VECTOR.encode(), fields.get(VECTOR, b""))
            vectors.append(np.frombuffer(raw, dtype=np.float32).copy())
    return entries, vectors


def scan_cursor(cursor: str | None) -> int:
    """The ``SCAN`` cursor of a page cursor (``None``: the start)."""
    if cursor is None:
        return 0
    if not cursor.isdigit():
        raise InvalidInputError(f"not a cursor of this store: {cursor!r}")
    return int(cursor)
