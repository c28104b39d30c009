"""The one miss-on-error path: a failure of the cache around a call becomes a miss.

Every request path (the ``@cached`` decorator, the LiteLLM plugin, the LangChain cache and
retrievers, the RAG cache) reaches the cache through :class:`FailOpen`, sync or async. Whatever
fails inside a step (key building, exact tier, embedding, search, a guard or the verifier,
decoding a stored value, storing) is logged, counted once in ``info().errors``, once in the
``semcache.errors`` metric and once on the step's span; a corrupt entry is deleted once; and the
step answers "nothing" so the caller goes upstream. Exceptions raised by the caller's own LLM or
retriever are never caught here: they are not the cache's.

This is the only place semcache catches ``Exception``: the promise is that the cache never breaks
the call, including on a bug of its own or of a user-supplied guard, adapter or codec.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import math
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Literal, TypeGuard, TypeVar

from semcache.errors import (
    BackendUnavailableError,
    CorruptEntryError,
    EmbeddingError,
    InvalidInputError,
    LookupTimeoutError,
    NotCacheableError,
    SemcacheError,
)
from semcache.models import Entry, LookupResult

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray
    from opentelemetry.trace import Span

    from semcache.cache import Query, SemanticCache
    from semcache.keys import Scope
    from semcache.stats import Counters
    from semcache.telemetry import Telemetry

__all__ = [
    "MISSING",
    "Bypass",
    "FailOpen",
    "Failures",
    "Lookup",
    "Stage",
    "Trap",
    "may_store",
    "result_of",
    "vector_of",
]

log = logging.getLogger("semcache")

T = TypeVar("T")
K = TypeVar("K")

_WARN_EVERY = 10.0  # seconds between warnings of one kind of failure

Stage = Literal["key", "lookup", "decode", "store", "retrieval"]
"""Where a failure happened (the ``semcache.stage`` attribute of ``semcache.errors``)."""


class _Missing(enum.Enum):
    """The type of :data:`MISSING`: no value (a miss, or a value that must not be served)."""

    MISSING = "MISSING"


MISSING: Final = _Missing.MISSING


@dataclass(frozen=True, slots=True)
class Bypass:
    """A request that is not looked up: why (the exception's type name if a failure caused it)."""

    reason: str
    error: bool = False


@dataclass(frozen=True, slots=True)
class Lookup:
    """What :meth:`FailOpen.find` found: the result (``None`` if the lookup failed, ``error``
    says why) and the query's vector, if it was computed."""

    result: LookupResult | None
    vector: NDArray[np.float32] | None
    error: Exception | None = None

    @property
    def skip_store(self) -> bool:
        """The lookup failed in a way storing would repeat (the backend unreachable, the
        embedding failed): callers skip the store rather than fail, and wait, twice.

        A spent lookup budget is not such a failure: the store runs after the upstream call,
        outside the budget, and keeps the paid answer (a backend that is really down opens
        the breaker, and its stores then fail fast)."""
        if isinstance(self.error, LookupTimeoutError):
            return False
        return isinstance(self.error, BackendUnavailableError | EmbeddingError)


class Trap:
    """A context that ends its block on an ``Exception``, records it, and keeps it in ``error``.

    ``BaseException`` (cancellation, ``KeyboardInterrupt``) passes through untouched.
    """

    __slots__ = ("_failures", "_span", "_stage", "error")

    def __init__(self, failures: Failures | None, span: Span | None, stage: Stage) -> None:
        self._failures, self._span, self._stage = failures, span, stage
        self.error: Exception | None = None

    @property
    def failed(self) -> bool:
        return self.error is not None

    def __enter__(self) -> Trap:
        return self

    def __exit__(self, kind: object, error: BaseException | None, tb: object) -> bool:
        if not isinstance(error, Exception):
            return False
        self.error = error
        if self._failures is None:
            log.debug("semcache: %s skipped: %s: %s", self._stage, type(error).__name__, error)
        else:
            self._failures.record(self._span, self._stage, error)
        return True


class _Quieter:
    """At most one warning per ``(stage, error type)`` every ``every`` seconds: an outage must
    not flood the log. The rest go to DEBUG and are counted in the next warning."""

    def __init__(self, every: float = _WARN_EVERY) -> None:
        self._every = every
        self._lock = threading.Lock()
        self._last: dict[tuple[str, str], tuple[float, int]] = {}

    def allow(self, key: tuple[str, str]) -> int | None:
        """``None`` to stay quiet, else how many were quieted since the last warning."""
        now = time.monotonic()
        with self._lock:
            last, quieted = self._last.get(key, (-math.inf, 0))
            if now - last < self._every:
                self._last[key] = (last, quieted + 1)
                return None
            self._last[key] = (now, 0)
            return quieted


class Failures:
    """Records failures: a log line, the ``errors`` counter (if any), the metric and the span."""

    def __init__(self, telemetry: Telemetry, counters: Counters | None = None) -> None:
        self.telemetry = telemetry
        self.counters = counters
        self._quieter = _Quieter()

    def record(self, span: Span | None, stage: Stage, error: Exception) -> None:
        """Count one failure, once everywhere it is reported (on a new ``semcache.<stage>`` span
        if ``None``: steps that need no span of their own unless they fail)."""
        if span is None:
            with self.telemetry.span(f"semcache.{stage}") as own:
                self.record(own, stage, error)
            return
        kind = type(error).__name__
        quieted = self._quieter.allow((stage, kind))
        if quieted is None:
            log.debug("semcache: %s failed again: %s: %s", stage, kind, error)
        else:
            log.warning(
                "semcache: %s failed, continuing without the cache: %s: %s%s",
                stage,
                kind,
                error,
                f" ({quieted} more like it since the last warning)" if quieted else "",
                exc_info=not isinstance(error, SemcacheError),  # a bug: show where
            )
        if self.counters is not None:
            self.counters.add("errors")
        self.telemetry.record_error(span, stage, error)

    def trap(self, span: Span | None, stage: Stage) -> Trap:
        """A :class:`Trap` recording on ``span`` (a new ``semcache.<stage>`` span if ``None``)."""
        return Trap(self, span, stage)


def _corrupt(entry: Entry, error: Exception) -> CorruptEntryError:
    """``error`` as the corruption of ``entry`` (naming it, so it can be deleted)."""
    if isinstance(error, CorruptEntryError) and error.entry_id is not None:
        return error
    return CorruptEntryError(f"entry {entry.id} cannot be decoded: {error}", entry_id=entry.id)


def _corrupt_id(error: Exception | None) -> str | None:
    return error.entry_id if isinstance(error, CorruptEntryError) else None


class FailOpen:
    """One cache's steps as they run on a request path: each answers "nothing" on failure.

    ``key`` -> ``find``/``afind`` -> ``decode``/``adecode`` on a hit, else the upstream call ->
    ``put``/``aput``. The ``a``-twins await the cache's async methods and heal (delete a corrupt
    entry) without blocking the event loop.
    """

    def __init__(self, cache: SemanticCache) -> None:
        self.cache = cache
        self.failures = Failures(cache.telemetry, cache._counters)

    # -- keys ----------------------------------------------------------------------------------

    def key(self, build: Callable[[], K | str]) -> K | Bypass:
        """Run ``build`` (the request's text and scope, validated); a string return is a bypass
        reason. Invalid input and a prompt the policy does not cache (``volatile``) bypass;
        any other failure is recorded and bypasses too."""
        with self.failures.trap(None, "key") as trap:
            try:
                built = build()
            except InvalidInputError as e:
                log.debug("semcache: bypass (%s)", e)
                built = "invalid_input"
            except NotCacheableError as e:  # the policy's (a volatile prompt)
                log.debug("semcache: bypass (%s)", e)
                built = e.reason
            return self.bypass(built) if isinstance(built, str) else built
        self.cache.telemetry.record_failed_request("key")
        return Bypass(type(trap.error).__name__, error=True)

    def query(self, text: object, scope: Scope) -> Query | Bypass:
        """:meth:`key` for a ready text and scope."""
        return self.key(lambda: self.cache._query(text, scope))

    def bypass(self, reason: str) -> Bypass:
        """Count a request the caller decided not to look up."""
        with self.cache.telemetry.span("semcache.request") as span:
            self.cache._count_bypass(span, reason)
        return Bypass(reason)

    # -- lookups -------------------------------------------------------------------------------

    def find(
        self,
        q: Query,
        *,
        min_similarity: float | None = None,
        vector: NDArray[np.float32] | None = None,
        check: Callable[[Entry], str | None] | None = None,
        count: bool = True,
        review: Callable[[LookupResult], LookupResult] | None = None,
    ) -> Lookup:
        """Look ``q`` up and count the outcome; a failed lookup has no result.

        ``check`` may refuse a found entry (its return is the miss reason) before it counts;
        ``review`` may then replace the result (exploration turns a hit into a miss).
        ``count=False`` for a second look at the same request (a coalesced follower's): its
        outcome was counted by the first.
        """
        cache = self.cache
        result: LookupResult | None = None
        with (
            cache.telemetry.span("semcache.lookup", partition=q.scope_key) as span,
            self.failures.trap(span, "lookup") as trap,
        ):
            result, vector = cache._find(q, min_similarity=min_similarity, vector=vector)
            if check is not None:
                result = _checked(result, check)
            if review is not None:
                result = review(result)
            if count:
                cache._record_result(span, result, volatile=q.volatile)
        if trap.failed and count:
            cache.telemetry.record_failed_request("lookup")
        if (entry_id := _corrupt_id(trap.error)) is not None:
            cache._discard(entry_id)
        return Lookup(None if trap.failed else result, vector, trap.error)

    async def afind(
        self,
        q: Query,
        *,
        min_similarity: float | None = None,
        vector: NDArray[np.float32] | None = None,
        check: Callable[[Entry], str | None] | None = None,
        count: bool = True,
        review: Callable[[LookupResult], LookupResult] | None = None,
    ) -> Lookup:
        """:meth:`find`, awaiting the cache (``check`` runs in a worker thread)."""
        cache = self.cache
        result: LookupResult | None = None
        with (
            cache.telemetry.span("semcache.lookup", partition=q.scope_key) as span,
            self.failures.trap(span, "lookup") as trap,
        ):
            result, vector = await cache._afind(q, min_similarity=min_similarity, vector=vector)
            if check is not None:
                result = await asyncio.to_thread(_checked, result, check)
            if review is not None:
                result = review(result)
            if count:
                await cache._arecord_result(span, result, volatile=q.volatile)
        if trap.failed and count:
            cache.telemetry.record_failed_request("lookup")
        if (entry_id := _corrupt_id(trap.error)) is not None:
            await cache._adiscard(entry_id)
        return Lookup(None if trap.failed else result, vector, trap.error)

    def decode(self, result: LookupResult | None, decode: Callable[[Any], T]) -> T | _Missing:
        """The served entry's value through ``decode``; a value that fails is a corrupt entry:
        recorded, deleted, and a miss."""
        if result is None or result.entry is None:
            return MISSING
        value, error = self._decode(result.entry, decode)
        if error is not None and error.entry_id is not None:
            self.cache._discard(error.entry_id)
        return value

    async def adecode(
        self, result: LookupResult | None, decode: Callable[[Any], T]
    ) -> T | _Missing:
        """:meth:`decode`, deleting a corrupt entry without blocking the event loop."""
        if result is None or result.entry is None:
            return MISSING
        value, error = self._decode(result.entry, decode)
        if error is not None and error.entry_id is not None:
            await self.cache._adiscard(error.entry_id)
        return value

    def _decode(
        self, entry: Entry, decode: Callable[[Any], T]
    ) -> tuple[T | _Missing, CorruptEntryError | None]:
        with self.failures.trap(None, "decode") as trap:  # a span only if it fails
            try:
                return decode(entry.response), None
            except Exception as e:
                raise _corrupt(entry, e) from e
        return MISSING, _corrupt(entry, trap.error) if trap.error is not None else None

    def lookup(
        self,
        text: object,
        scope: Scope,
        decode: Callable[[Any], T],
        *,
        min_similarity: float | None = None,
    ) -> T | _Missing:
        """Key, find and decode in one step (for integrations that need nothing in between)."""
        q = self.query(text, scope)
        if isinstance(q, Bypass):
            return MISSING
        return self.decode(self.find(q, min_similarity=min_similarity).result, decode)

    async def alookup(
        self,
        text: object,
        scope: Scope,
        decode: Callable[[Any], T],
        *,
        min_similarity: float | None = None,
    ) -> T | _Missing:
        """:meth:`lookup`, awaiting the cache."""
        q = self.query(text, scope)
        if isinstance(q, Bypass):
            return MISSING
        found = await self.afind(q, min_similarity=min_similarity)
        return await self.adecode(found.result, decode)

    # -- stores --------------------------------------------------------------------------------

    def store(
        self,
        text: object,
        value: Any,
        scope: Scope,
        *,
        ttl: float | None = None,
        metadata: Mapping[str, Any] | None = None,
        tags: Sequence[str] = (),
    ) -> Entry | None:
        """Key and put in one step; ``None`` if refused or failed (see :meth:`rekey`)."""
        q = self.rekey(lambda: self.cache._query(text, scope))
        return None if q is None else self.put(q, value, ttl=ttl, metadata=metadata, tags=tags)

    async def astore(
        self,
        text: object,
        value: Any,
        scope: Scope,
        *,
        ttl: float | None = None,
        metadata: Mapping[str, Any] | None = None,
        tags: Sequence[str] = (),
    ) -> Entry | None:
        """:meth:`store`, awaiting the cache."""
        q = self.rekey(lambda: self.cache._query(text, scope))
        if q is None:
            return None
        return await self.aput(q, value, ttl=ttl, metadata=metadata, tags=tags)

    def rekey(self, build: Callable[[], K | None]) -> K | None:
        """:meth:`key` again, for a response to store, where the host calls lookup and store
        separately: the lookup already counted a request that cannot be keyed, so this does not
        (``None`` then)."""
        with Trap(None, None, "key"):
            return build()
        return None

    def put(
        self,
        q: Query,
        value: Any,
        *,
        ttl: float | None = None,
        metadata: Mapping[str, Any] | None = None,
        vector: NDArray[np.float32] | None = None,
        tags: Sequence[str] = (),
    ) -> Entry | None:
        """Store ``value`` (JSON) for ``q``; ``None`` if it was refused or the store failed."""
        cache = self.cache
        with (
            cache.telemetry.span("semcache.store") as span,
            self.failures.trap(span, "store"),
        ):
            try:
                return cache._put(q, value, ttl=ttl, metadata=metadata, vector=vector, tags=tags)
            except NotCacheableError as e:
                self._unstorable(e)
        return None

    async def aput(
        self,
        q: Query,
        value: Any,
        *,
        ttl: float | None = None,
        metadata: Mapping[str, Any] | None = None,
        vector: NDArray[np.float32] | None = None,
        tags: Sequence[str] = (),
    ) -> Entry | None:
        """:meth:`put`, awaiting the cache."""
        cache = self.cache
        with (
            cache.telemetry.span("semcache.store") as span,
            self.failures.trap(span, "store"),
        ):
            try:
                return await cache._aput(
                    q, value, ttl=ttl, metadata=metadata, vector=vector, tags=tags
                )
            except NotCacheableError as e:
                self._unstorable(e)
        return None

    def _unstorable(self, error: NotCacheableError) -> None:
        """A value that cannot be stored is a refusal, not a failure."""
        log.info("semcache: response not stored: %s", error)
        self.refused(error.reason)

    def refused(self, reason: str) -> None:
        """Count a response that will not be stored (an error, truncated, a tool call...)."""
        self.cache._count("store_refusals")
        self.cache.telemetry.record_store(reason)


def _checked(result: LookupResult, check: Callable[[Entry], str | None]) -> LookupResult:
    """``result``, or a miss if ``check`` refuses its entry (the refusal is the reason)."""
    if result.entry is None or (reason := check(result.entry)) is None:
        return result
    return LookupResult(
        entry=None,
        tier=None,
        similarity=result.similarity,
        threshold=result.threshold,
        reason=reason,
    )


def result_of(found: Lookup | None) -> LookupResult | None:
    """The lookup's result (``None`` if there was no lookup, or it failed)."""
    return None if found is None else found.result


def vector_of(found: Lookup | None) -> NDArray[np.float32] | None:
    """The query's vector, if the lookup computed it."""
    return None if found is None else found.vector


def may_store(q: Query | Bypass, found: Lookup | None) -> TypeGuard[Query]:
    """Store an answer unless its request was bypassed or its lookup failed as the store would
    (:attr:`Lookup.skip_store`), for callers that look up and store in one call."""
    return not isinstance(q, Bypass) and not (found is not None and found.skip_store)
