"""The semantic cache: an exact tier, then nearest neighbours, inside one hard scope."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

from semcache._clock import Clock, SystemClock
from semcache.backends.base import AsyncBackend, Backend, as_async
from semcache.embedders.base import Embedder
from semcache.errors import (
    BackendError,
    CorruptEntryError,
    EmbeddingError,
    GuardError,
    NotCacheableError,
    SemcacheError,
)
from semcache.keys import Scope, text_key
from semcache.matching.guards import default_guards
from semcache.models import Candidate, Entry, LookupResult, NewEntry, Outcome, Tier
from semcache.policy import (
    VOLATILE,
    CachePolicy,
    Guard,
    budget_spent,
    check_budget,
    check_entry_size,
    check_text,
    choose,
    exact_hit,
    expiry,
    fresh,
    max_age,
    shadow_entry_id,
    shadow_miss,
    volatile_bypassed,
)
from semcache.policy import resolve_threshold as _resolve_threshold
from semcache.selector import check_tags, select
from semcache.stats import CacheInfo, Counter, Counters
from semcache.telemetry import Telemetry

if TYPE_CHECKING:
    from numpy.typing import NDArray
    from opentelemetry.trace import Span

    from semcache.matching.adaptive import ThresholdModel

__all__ = ["Query", "SemanticCache"]

log = logging.getLogger("semcache")


@runtime_checkable
class _Closeable(Protocol):
    """A component holding resources of its own (the adaptive thresholds' shared state)."""

    def close(self) -> None: ...

    async def aclose(self) -> None: ...


_DEFAULT_SCOPE = Scope()
_PURGE_EVERY = 60.0  # seconds between purges of expired entries, done by writes


@dataclass(frozen=True, slots=True)
class Query:
    """A validated lookup: the text, its scope, both keys, and whether the text is volatile
    (:class:`~semcache.policy.VolatilePolicy`)."""

    text: str
    scope_key: str
    text_key: str
    scope: Scope = _DEFAULT_SCOPE
    volatile: bool = False


class SemanticCache:
    """A semantic cache over one embedder and one backend.

    Args:
        embedder: turns text into unit vectors; its fingerprint is bound to the backend here, so
            a store built by another model fails now (:class:`FingerprintMismatchError`).
        backend: where entries live (:class:`EmbeddedBackend`, ``RedisBackend``...).
        policy: threshold, TTL, size bound, limits.
        guards: vetoes applied to semantic candidates. Default: :func:`default_guards` (numbers
            and negations must match; so must any text the embedder cannot read, when it says
            what that is); pass ``()`` for none.
        telemetry: OpenTelemetry spans and metrics; a default no-op-until-SDK instance if omitted.
        clock: time source for TTL and the recency of uses.
        thresholds: a learned per-candidate threshold above the policy's floor
            (:class:`semcache.matching.adaptive.AdaptiveThresholds`), fed by :meth:`feedback`.
        shadow: compute would-be hits but return misses (counted as ``shadow_hits``), to project
            a hit rate while every request still reaches the LLM.
        verifier: the last step, after the guards: confirms or vetoes candidates inside its
            similarity band (:class:`semcache.matching.verifier.CrossEncoderVerifier`).

    :meth:`lookup` and :meth:`store` raise :class:`SemcacheError` subclasses; the decorator and
    the integrations turn any failure into a miss instead (:mod:`semcache._failopen`). Use as a
    context manager, or call :meth:`close`.

    The ``a``-methods (:meth:`alookup`, :meth:`astore`...) take the same steps with
    the backend's async methods (:class:`AsyncBackend`; a sync backend runs in worker threads)
    and the embedding in a worker thread. Close with :meth:`aclose` after using them.
    """

    def __init__(
        self,
        *,
        embedder: Embedder,
        backend: Backend,
        policy: CachePolicy | None = None,
        guards: Sequence[Guard] | None = None,
        telemetry: Telemetry | None = None,
        clock: Clock | None = None,
        thresholds: ThresholdModel | None = None,
        shadow: bool = False,
        verifier: Guard | None = None,
    ) -> None:
        self.embedder = embedder
        self.backend = backend
        self.abackend: AsyncBackend = as_async(backend)
        self.policy = policy or CachePolicy()
        self.guards = default_guards(embedder) if guards is None else tuple(guards)
        self.telemetry = telemetry or Telemetry()
        self.clock = clock or SystemClock()
        self.thresholds = thresholds
        self.shadow = shadow
        self.verifier = verifier
        self._counters = Counters()
        self._last_purge = self.clock.now()
        backend.bind(embedder.fingerprint)
        self.telemetry.watch_entries(backend.count)

    # -- steps (the public methods below and :mod:`semcache._failopen` run these) ------------

    def _query(self, text: object, scope: Scope | None = None) -> Query:
        """Validate ``text``, compute its keys and its volatility.

        Every entry point keys its requests here, so this is where a volatile prompt is
        refused under ``VolatilePolicy(action="bypass")``.

        Raises:
            InvalidInputError: the text cannot be cached.
            NotCacheableError: reason ``volatile``, a volatile prompt the policy bypasses.
            GuardError: the volatility detector failed.
        """
        checked = check_text(text, self.policy)
        volatile = self._volatile(checked)
        if volatile_bypassed(self.policy, volatile):
            raise NotCacheableError("a volatile prompt is not cached", reason=VOLATILE)
        scope = scope or _DEFAULT_SCOPE
        return Query(checked, scope.key(), text_key(checked), scope, volatile)

    def _volatile(self, text: str) -> bool:
        """Whether the policy's volatility detector recognises ``text`` (``False`` if off)."""
        rule = self.policy.volatile
        if rule is None:
            return False
        with _converting("volatile", GuardError):
            return bool(rule.detector(text))

    def _embed(self, text: str) -> NDArray[np.float32]:
        """The unit vector of ``text`` (memoised by the embedder for exact repeats)."""
        with self.telemetry.stage("embed"), _converting("embed", EmbeddingError):
            vector: NDArray[np.float32] = self.embedder.embed([text])[0]
            return vector

    def _threshold(self, override: float | None = None) -> float:
        """The threshold a lookup uses: ``override`` if given (validated), else the policy's."""
        return _resolve_threshold(self.policy, override)

    def _find(
        self,
        q: Query,
        *,
        min_similarity: float | None = None,
        vector: NDArray[np.float32] | None = None,
    ) -> tuple[LookupResult, NDArray[np.float32] | None]:
        """Exact tier, then embed (unless ``vector`` is given) and search. No counters touched.

        Returns the result and the query vector (``None`` when the exact tier answered). Raises
        :class:`LookupTimeoutError` before starting a step once the policy's ``lookup_budget``
        is spent (a blocking step cannot be interrupted; a finished one is used, as going
        upstream instead would only cost more).
        """
        threshold, now = self._threshold(min_similarity), self.clock.now()
        started, age = time.monotonic(), max_age(self.policy, q.volatile)
        if self.policy.exact_tier:
            with self._io("exact"):
                entry = self.backend.get_exact(q.scope_key, q.text_key, now)
            if entry is not None and fresh(entry, now, age):
                return self._exact(entry, threshold), vector
            check_budget(self.policy, time.monotonic() - started, "exact")
        if vector is None:
            vector = self._embed(q.text)
            check_budget(self.policy, time.monotonic() - started, "embed")
        with self._io("search"):
            candidates = self.backend.search(q.scope_key, vector, self.policy.candidates, now)
        candidates = [c for c in candidates if fresh(c.entry, now, age)]
        return self._choose(q, candidates, threshold, vector), vector

    async def _afind(
        self,
        q: Query,
        *,
        min_similarity: float | None = None,
        vector: NDArray[np.float32] | None = None,
    ) -> tuple[LookupResult, NDArray[np.float32] | None]:
        """:meth:`_find`, awaiting the backend; the embedding runs in a worker thread.

        The steps are cancelled when the ``lookup_budget`` runs out (:class:`LookupTimeoutError`).
        """
        threshold, now = self._threshold(min_similarity), self.clock.now()
        started, step = time.monotonic(), "exact"
        age = max_age(self.policy, q.volatile)
        deadline = asyncio.timeout(self.policy.lookup_budget)
        try:
            async with deadline:
                if self.policy.exact_tier:
                    with self._io("exact"):
                        entry = await self.abackend.aget_exact(q.scope_key, q.text_key, now)
                    if entry is not None and fresh(entry, now, age):
                        return self._exact(entry, threshold), vector
                if vector is None:
                    step = "embed"
                    vector = await asyncio.to_thread(self._embed, q.text)
                step = "search"
                with self._io("search"):
                    candidates = await self.abackend.asearch(
                        q.scope_key, vector, self.policy.candidates, now
                    )
        except TimeoutError as e:
            if not deadline.expired():
                raise
            raise budget_spent(self.policy, time.monotonic() - started, step) from e
        candidates = [c for c in candidates if fresh(c.entry, now, age)]
        if self.verifier is None:
            return self._choose(q, candidates, threshold, vector), vector
        # A verifier runs a model: keep it off the event loop.
        result = await asyncio.to_thread(self._choose, q, candidates, threshold, vector)
        return result, vector

    def _exact(self, entry: Entry, threshold: float) -> LookupResult:
        """The exact tier's hit (a miss in shadow mode)."""
        hit = exact_hit(entry, threshold)
        return shadow_miss(hit) if self.shadow else hit

    def _choose(
        self,
        q: Query,
        candidates: Sequence[Candidate],
        threshold: float,
        vector: NDArray[np.float32],
    ) -> LookupResult:
        """The semantic tier's decision over the candidates (a miss in shadow mode)."""
        with _converting("decide", GuardError):
            learned = None if self.thresholds is None else self.thresholds.for_query(q.text, vector)
            result = choose(q.text, candidates, threshold, self.guards, learned, self.verifier)
            if result.entry is not None and self.thresholds is not None:
                self.thresholds.served(result.entry.id, vector, float(result.similarity or 0.0))
        return shadow_miss(result) if self.shadow else result

    @contextmanager
    def _io(self, stage: str) -> Iterator[None]:
        """A backend call: timed as ``stage``; foreign errors become :class:`BackendError`."""
        with self.telemetry.stage(stage), _converting(stage, BackendError):
            yield

    # -- lookups ------------------------------------------------------------------------------

    def lookup(
        self,
        text: str,
        scope: Scope | None = None,
        *,
        min_similarity: float | None = None,
        vector: NDArray[np.float32] | None = None,
    ) -> LookupResult:
        """Look ``text`` up in ``scope``; counts a hit or a miss.

        ``vector`` is ``text``'s embedding if already computed (else the embedder runs).

        A volatile prompt the policy bypasses is not looked up: a miss with reason
        ``volatile``, counted as a bypass.

        Raises:
            InvalidInputError: the text is empty, too long or not a string.
            EmbeddingError / BackendError / GuardError: a step failed (a corrupt entry is
                deleted before its :class:`CorruptEntryError` is raised).
        """
        try:
            q = self._query(text, scope)
        except NotCacheableError as e:
            return self._bypassed(e.reason)
        with self.telemetry.span("semcache.lookup", partition=q.scope_key) as span:
            try:
                result, _ = self._find(q, min_similarity=min_similarity, vector=vector)
            except SemcacheError as e:
                self.telemetry.mark_failed(span, "lookup", e)
                if isinstance(e, CorruptEntryError) and e.entry_id is not None:
                    self._discard(e.entry_id)
                raise
            self._record_result(span, result, volatile=q.volatile)
            return result

    async def alookup(
        self,
        text: str,
        scope: Scope | None = None,
        *,
        min_similarity: float | None = None,
        vector: NDArray[np.float32] | None = None,
    ) -> LookupResult:
        """:meth:`lookup`, awaiting the backend; the embedding runs in a worker thread."""
        try:
            q = self._query(text, scope)
        except NotCacheableError as e:
            return self._bypassed(e.reason)
        with self.telemetry.span("semcache.lookup", partition=q.scope_key) as span:
            try:
                result, _ = await self._afind(q, min_similarity=min_similarity, vector=vector)
            except SemcacheError as e:
                self.telemetry.mark_failed(span, "lookup", e)
                if isinstance(e, CorruptEntryError) and e.entry_id is not None:
                    await self._adiscard(e.entry_id)
                raise
            await self._arecord_result(span, result, volatile=q.volatile)
            return result

    # -- stores --------------------------------------------------------------------------------

    def store(
        self,
        text: str,
        response: Any,
        scope: Scope | None = None,
        *,
        ttl: float | None = None,
        metadata: Mapping[str, Any] | None = None,
        vector: NDArray[np.float32] | None = None,
        tags: Sequence[str] | None = None,
    ) -> Entry:
        """Store ``response`` (a JSON value) for ``text``; replaces an exact repeat.

        ``vector`` is ``text``'s embedding if already computed; ``tags`` label the entry for
        :meth:`clear` and listing. Evicts past ``max_entries``.
        A volatile prompt's entry expires within the policy's cap; under
        ``VolatilePolicy(action="bypass")`` it is refused (:class:`NotCacheableError`, reason
        ``volatile``).
        """
        q = self._query(text, scope)
        return self._put(q, response, ttl=ttl, metadata=metadata, vector=vector, tags=tags)

    async def astore(
        self,
        text: str,
        response: Any,
        scope: Scope | None = None,
        *,
        ttl: float | None = None,
        metadata: Mapping[str, Any] | None = None,
        vector: NDArray[np.float32] | None = None,
        tags: Sequence[str] | None = None,
    ) -> Entry:
        """:meth:`store`, awaiting the backend; the embedding runs in a worker thread."""
        q = self._query(text, scope)
        return await self._aput(q, response, ttl=ttl, metadata=metadata, vector=vector, tags=tags)

    def _put(
        self,
        q: Query,
        response: Any,
        *,
        ttl: float | None = None,
        metadata: Mapping[str, Any] | None = None,
        vector: NDArray[np.float32] | None = None,
        tags: Sequence[str] | None = None,
    ) -> Entry:
        """Store for an already validated query; evicts past ``max_entries``.

        Expired entries are purged here too, at most once per ``_PURGE_EVERY`` seconds.
        """
        new, now = self._new_entry(q, response, ttl, metadata, tags)
        if vector is None:
            vector = self._embed(q.text)
        with self._io("store"):
            entry = self.backend.put(new, vector)
            evicted = self.backend.evict(self.policy.max_entries) if self.policy.max_entries else 0
            if self._purge_due(now):
                self.backend.purge_expired(now)
        self._stored(evicted)
        return entry

    async def _aput(
        self,
        q: Query,
        response: Any,
        *,
        ttl: float | None = None,
        metadata: Mapping[str, Any] | None = None,
        vector: NDArray[np.float32] | None = None,
        tags: Sequence[str] | None = None,
    ) -> Entry:
        """:meth:`_put`, awaiting the backend; the embedding runs in a worker thread."""
        new, now = self._new_entry(q, response, ttl, metadata, tags)
        if vector is None:
            vector = await asyncio.to_thread(self._embed, q.text)
        with self._io("store"):
            entry = await self.abackend.aput(new, vector)
            evicted = (
                await self.abackend.aevict(self.policy.max_entries)
                if self.policy.max_entries
                else 0
            )
            if self._purge_due(now):
                await self.abackend.apurge_expired(now)
        self._stored(evicted)
        return entry

    def _new_entry(
        self,
        q: Query,
        response: Any,
        ttl: float | None,
        metadata: Mapping[str, Any] | None,
        tags: Sequence[str] | None = None,
    ) -> tuple[NewEntry, float]:
        now = self.clock.now()
        new = NewEntry(
            scope_key=q.scope_key,
            text_key=q.text_key,
            prompt=q.text,
            response=response,
            created_at=now,
            expires_at=expiry(now, self.policy, ttl, volatile=q.volatile),
            metadata=dict(metadata or {}),
            tenant=q.scope.tenant,
            model=q.scope.model,
            namespace=q.scope.namespace,
            tags=check_tags(tags),
        )
        check_entry_size(new, self.policy)  # before embedding or any write
        return new, now

    def _purge_due(self, now: float) -> bool:
        """Whether a store at ``now`` also purges expired entries (and note that it does)."""
        if now - self._last_purge < _PURGE_EVERY:
            return False
        self._last_purge = now
        return True

    def _stored(self, evicted: int) -> None:
        self._counters.add("stores")
        self.telemetry.record_store("stored")
        if evicted:
            self._counters.add("evictions", evicted)
            self.telemetry.record_evictions(evicted)

    # -- administration ------------------------------------------------------------------------

    def delete(self, entry_id: str) -> bool:
        """Delete one entry; ``True`` if it existed."""
        with _converting("delete", BackendError):
            return self.backend.delete([entry_id]) > 0

    def clear(
        self,
        scope: Scope | None = None,
        *,
        tenant: str | None = None,
        model: str | None = None,
        namespace: str | None = None,
        tag: str | None = None,
    ) -> int:
        """Delete the entries of one scope and/or with these labels (every given one must
        match; none given: every entry), from everywhere the backend keeps them; returns how
        many. ``clear(tenant="acme")`` deletes a tenant whatever its models and parameters."""
        selector = select(scope, tenant=tenant, model=model, namespace=namespace, tag=tag)
        with _converting("clear", BackendError):
            if selector.empty:
                return self.backend.clear(None)
            return self.backend.delete_where(selector)

    def purge_expired(self) -> int:
        """Delete expired entries now (they are never served either way)."""
        with _converting("purge", BackendError):
            return self.backend.purge_expired(self.clock.now())

    async def adelete(self, entry_id: str) -> bool:
        """:meth:`delete`, awaiting the backend."""
        with _converting("delete", BackendError):
            return await self.abackend.adelete([entry_id]) > 0

    async def aclear(
        self,
        scope: Scope | None = None,
        *,
        tenant: str | None = None,
        model: str | None = None,
        namespace: str | None = None,
        tag: str | None = None,
    ) -> int:
        """:meth:`clear`, awaiting the backend."""
        selector = select(scope, tenant=tenant, model=model, namespace=namespace, tag=tag)
        with _converting("clear", BackendError):
            if selector.empty:
                return await self.abackend.aclear(None)
            return await self.abackend.adelete_where(selector)

    async def apurge_expired(self) -> int:
        """:meth:`purge_expired`, awaiting the backend."""
        with _converting("purge", BackendError):
            return await self.abackend.apurge_expired(self.clock.now())

    def info(self) -> CacheInfo:
        """Counters since creation (or :meth:`reset_stats`) and the entry count."""
        try:
            entries = self.backend.count()
        except SemcacheError:
            entries = -1
        return self._counters.snapshot(entries)

    def reset_stats(self) -> None:
        self._counters.reset()

    def close(self) -> None:
        """Close the backend and, if it can be closed, the threshold model (its pending
        verdicts are written to its shared state)."""
        model: object = self.thresholds  # a ThresholdModel need not hold resources
        if isinstance(model, _Closeable):
            model.close()
        self.backend.close()

    async def aclose(self) -> None:
        """:meth:`close`, closing the running event loop's async connections too."""
        model: object = self.thresholds
        if isinstance(model, _Closeable):
            await model.aclose()
        await self.abackend.aclose()

    async def __aenter__(self) -> SemanticCache:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def __enter__(self) -> SemanticCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def feedback(self, target: LookupResult | str, correct: bool) -> bool:
        """Report whether a served (or, in shadow mode, would-be) hit answered the request.

        ``target`` is the :class:`LookupResult` or the entry id. Counted in :meth:`info`
        (``false_hits`` / ``shadow_false_hits``) and learned by ``thresholds`` if set; returns
        whether ``thresholds`` used it.
        """
        shadow_id = shadow_entry_id(target) if isinstance(target, LookupResult) else None
        if isinstance(target, LookupResult):
            entry_id = shadow_id or (target.entry.id if target.entry is not None else None)
        else:
            entry_id = target
        if entry_id is None:
            return False
        self._counters.add("feedback")
        if not correct:
            self._counters.add("shadow_false_hits" if shadow_id else "false_hits")
        self.telemetry.record_feedback(correct, shadow=shadow_id is not None)
        return self.thresholds is not None and self.thresholds.feedback(entry_id, correct)

    # -- bookkeeping (shared with :mod:`semcache._failopen`) -----------------------------------

    def _count(self, name: Counter, amount: int = 1) -> None:
        self._counters.add(name, amount)

    def _bypassed(self, reason: str) -> LookupResult:
        """A direct lookup the policy bypasses: counted as a bypass, answered with a miss."""
        with self.telemetry.span("semcache.request") as span:
            self._count_bypass(span, reason)
        return LookupResult(
            entry=None,
            tier=None,
            similarity=None,
            threshold=self.policy.min_similarity,
            reason=reason,
        )

    def _count_bypass(self, span: Span, reason: str) -> None:
        """Count a request that is not looked up (a volatile one in ``volatile`` too)."""
        self._counters.add("bypasses")
        if reason == VOLATILE:
            self._counters.add("volatile")
        self.telemetry.record_bypass(span, reason)

    def _record_result(self, span: Span, result: LookupResult, *, volatile: bool = False) -> None:
        """Count a lookup's hit or miss (and a volatile prompt's), touch the served entry,
        record tokens saved."""
        if volatile:
            self._counters.add("volatile")
        if (entry_id := self._count_result(span, result)) is not None:
            with _logged("could not record the use for eviction"):  # best effort; the hit stands
                self.backend.touch(entry_id, self.clock.now())

    async def _arecord_result(
        self, span: Span, result: LookupResult, *, volatile: bool = False
    ) -> None:
        """:meth:`_record_result`, awaiting the backend."""
        if volatile:
            self._counters.add("volatile")
        if (entry_id := self._count_result(span, result)) is not None:
            with _logged("could not record the use for eviction"):  # best effort; the hit stands
                await self.abackend.atouch(entry_id, self.clock.now())

    def _count_result(self, span: Span, result: LookupResult) -> str | None:
        """Count and record a lookup's outcome; returns the served entry's id, if any."""
        if result.entry is not None:
            tier = result.tier.value if result.tier else None
            self._counters.add("hits_exact" if result.tier is Tier.EXACT else "hits_semantic")
            meta = result.entry.metadata
            prompt_tokens = int(meta.get("prompt_tokens", 0) or 0)
            completion_tokens = int(meta.get("completion_tokens", 0) or 0)
            self._counters.add("tokens_saved", prompt_tokens + completion_tokens)
            cost = self.telemetry.record_tokens_saved(
                prompt_tokens, completion_tokens, model=meta.get("model")
            )
            self._counters.add("cost_saved", cost)
            self.telemetry.record_lookup(
                span,
                outcome=Outcome.HIT,
                tier=tier,
                similarity=result.similarity,
                threshold=result.threshold,
            )
            return result.entry.id
        self._counters.add("misses")
        if shadow_entry_id(result) is not None:
            self._counters.add("shadow_hits")
        self.telemetry.record_lookup(
            span,
            outcome=Outcome.MISS,
            tier=None,
            similarity=result.similarity,
            threshold=result.threshold,
            reason=result.reason,
        )
        return None

    def _discard(self, entry_id: str) -> None:
        """Delete a corrupt entry (a later store replaces it)."""
        with _logged(f"could not delete corrupt entry {entry_id}"):
            self.backend.delete([entry_id])

    async def _adiscard(self, entry_id: str) -> None:
        """:meth:`_discard`, awaiting the backend."""
        with _logged(f"could not delete corrupt entry {entry_id}"):
            await self.abackend.adelete([entry_id])


@contextmanager
def _logged(what: str) -> Iterator[None]:
    """Log a semcache error as a warning instead of raising it (for best-effort steps)."""
    try:
        yield
    except SemcacheError as e:
        log.warning("semcache: %s: %s", what, e)


@contextmanager
def _converting(stage: str, kind: type[SemcacheError]) -> Iterator[None]:
    """Let semcache errors through; wrap anything else a component raised in ``kind``.

    Embedders and backends are user-replaceable, so this is where their unexpected exceptions
    become part of semcache's hierarchy (and so fail open in the middleware).
    """
    try:
        yield
    except SemcacheError:
        raise
    except Exception as e:
        raise kind(f"{stage} failed: {type(e).__name__}: {e}") from e
