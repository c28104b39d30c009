"""The ``@cached`` decorator: a semantic cache in front of any LLM call.

One decorator for plain functions, ``async`` functions, and functions that stream (generators and
async generators). A failure of the cache (backend down, embedding error, corrupt entry, a guard
raising, an unencodable response) never breaks the call: it becomes a miss through
:mod:`semcache._failopen`, the wrapped function runs, and its answer is returned.

The four shells share every step of :class:`_Cached`: :meth:`~_Cached.begin` (keys),
:meth:`~_Cached.find` / :meth:`~_Cached.serve` (lookup and decoding), coalescing, and
:meth:`~_Cached.save`; the async shells await the ``a``-twins, which never block the event loop.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator
from contextlib import aclosing, closing
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

from semcache._failopen import MISSING, Bypass, FailOpen, Lookup, Trap
from semcache.cache import Query, SemanticCache
from semcache.errors import ConfigurationError, CorruptEntryError, NotCacheableError
from semcache.llm.coalesce import Flight, Flights
from semcache.llm.genai import request_attributes, response_report
from semcache.llm.options import CallOptions, current_options
from semcache.llm.requests import ChatRequest, PromptRequest, RequestAdapter
from semcache.llm.responses import (
    Codec,
    JsonCodec,
    ResponseInfo,
    inspect_response,
    inspect_stream,
    refusal_reason,
)
from semcache.matching.adaptive import AdaptiveThresholds
from semcache.matching.explore import AnswerCheck, AnswerMatch, Exploration, explore_target
from semcache.models import CallOutcome, Candidate, Entry, LookupResult, Outcome
from semcache.policy import check_threshold, guard_veto
from semcache.stats import CacheInfo
from semcache.telemetry import Upstream

__all__ = ["cached"]

log = logging.getLogger("semcache")
EXPLORE = "explore"  # the miss reason of an explored hit: the LLM answered it
F = TypeVar("F", bound=Callable[..., Any])
Inspect = Callable[[Any], ResponseInfo]


@dataclass(slots=True)
class _Call:
    """One call in progress through the cache."""

    query: Query
    threshold: float
    ttl: float | None
    store: bool
    model: str
    tags: tuple[str, ...] = ()
    result: LookupResult | None = None
    vector: Any = None
    flight: Flight | None = None
    failed: bool = False
    skip_store: bool = False
    explored: Candidate | None = None  # judged against this call's fresh answer


_BYPASS_TAIL = 8  # chunks a bypassed stream keeps: enough for the usage and finish chunks


@dataclass(slots=True)
class _Streamed:
    """An upstream stream as it goes by: its chunks and, once it ended, what they said.

    A stream that will be stored keeps every chunk; a bypassed one only its tail, so a long
    uncached stream costs no memory (its usage and finish reason come in the last chunks).
    """

    chunks: list[Any] | deque[Any] = field(default_factory=list)
    info: ResponseInfo | None = None

    @classmethod
    def tail(cls) -> _Streamed:
        return cls(chunks=deque(maxlen=_BYPASS_TAIL))


class _Cached:
    """The decisions behind one decorated function, shared by its sync and async shells."""

    def __init__(
        self,
        fn: Callable[..., Any],
        cache: SemanticCache,
        *,
        request: RequestAdapter,
        codec: Codec[Any],
        namespace: str,
        min_similarity: float | None,
        ttl: float | None,
        store_tool_calls: bool,
        coalesce: bool,
        coalesce_timeout: float,
        stream: bool,
        on_outcome: Callable[[CallOutcome], None] | None,
        provider: str | None = None,
    ) -> None:
        self.fn = fn
        self.cache = cache
        self.fo = FailOpen(cache)
        self.request = request
        self.codec = codec
        self.namespace = namespace
        self.min_similarity = min_similarity
        self.ttl = ttl
        self.store_tool_calls = store_tool_calls
        self.coalesce = coalesce
        self.coalesce_timeout = coalesce_timeout
        self.kind = "stream" if stream else "value"
        self.flights = Flights()
        self.tel = cache.telemetry
        self.on_outcome = on_outcome
        thresholds = cache.thresholds
        self.exploration: Exploration | None = (
            thresholds.exploration
            if isinstance(thresholds, AdaptiveThresholds)
            and not stream
            and thresholds.exploration.band > 0
            else None
        )
        self.answers: AnswerCheck = (
            self.exploration.check
            if self.exploration is not None and self.exploration.check is not None
            else AnswerMatch(embedder=cache.embedder)
        )
        self.provider = provider
        self.operation = "text_completion" if isinstance(request, PromptRequest) else "chat"

    # -- keys ----------------------------------------------------------------------------------

    def begin(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> _Call | None:
        """Validate and key the call; ``None`` means call upstream uncached (already counted)."""
        opts = current_options()
        planned = (
            self.fo.bypass("requested")
            if opts.bypass
            else self.fo.key(lambda: self._plan(args, kwargs, opts))
        )
        if isinstance(planned, Bypass):
            self.report(Outcome.BYPASS, reason=planned.reason, error=planned.error)
            return None
        return planned

    def _plan(
        self, args: tuple[Any, ...], kwargs: dict[str, Any], opts: CallOptions
    ) -> _Call | str:
        """The call's keys and settings, or the adapter's bypass reason (may raise)."""
        if self.kind == "value" and kwargs.get("stream"):
            # A plain function asked to stream returns a stream object: neither stored nor
            # answerable with a stored value.
            return "stream"
        req = self.request(args, kwargs)
        if req.bypass:
            return req.bypass
        scope = replace(
            req.scope,
            params={**req.scope.params, "semcache.kind": self.kind},
            namespace=req.scope.namespace or self.namespace,
            tenant=opts.tenant if opts.tenant is not None else req.scope.tenant,
        )
        override = opts.min_similarity if opts.min_similarity is not None else self.min_similarity
        return _Call(
            query=self.cache._query(req.text, scope),
            threshold=self.cache._threshold(override),
            ttl=opts.ttl if opts.ttl is not None else self.ttl,
            store=opts.store,
            model=scope.model,
            tags=opts.tags,
        )

    # -- lookups -------------------------------------------------------------------------------

    def find(self, call: _Call) -> None:
        """Look the call up (blocking); a failure leaves no result."""
        found = self.fo.find(call.query, min_similarity=call.threshold, review=self._reviewer(call))
        self._found(call, found)

    async def afind(self, call: _Call) -> None:
        """:meth:`find`, awaiting the cache."""
        found = await self.fo.afind(
            call.query, min_similarity=call.threshold, review=self._reviewer(call)
        )
        self._found(call, found)

    # -- exploration (online learning from the LLM's own answers) -------------------------------

    def _reviewer(self, call: _Call) -> Callable[[LookupResult], LookupResult] | None:
        """With exploration on: the lookup's review, which may turn an uncertain hit into a miss
        (reason ``explore``) and note the entry to judge in ``call.explored``."""
        x = self.exploration
        if x is None:
            return None

        def review(result: LookupResult) -> LookupResult:
            shadow = self.cache.shadow
            target = explore_target(
                result, band=x.band, probability=x.probability, draw=x.draw(), shadow=shadow
            )
            if target is None:
                return result
            call.explored = target
            if shadow or result.entry is None:
                return result  # the call goes upstream anyway
            return replace(result, entry=None, tier=None, reason=EXPLORE)

        return review

    def judge(self, call: _Call, response: Any) -> None:
        """Compare an explored call's fresh answer with the candidate's stored one, and learn
        from the verdict (blocking: the check may embed). A failure is recorded, never raised.

        An explored hit counts in ``explored`` (``explored_false`` if wrong); a shadow-mode
        would-be hit as shadow feedback; a judged near miss as feedback (it was not a hit)."""
        target, result, thresholds = call.explored, call.result, self.cache.thresholds
        if target is None or result is None or thresholds is None:
            return
        with self.fo.failures.trap(None, "lookup"):
            stored = inspect_response(self._decode(target.entry.response)).text
            verdict = bool(self.answers(inspect_response(response).text, stored))
            entry_id = target.entry.id
            if self.cache.shadow and result.shadow is not None:
                self.cache.feedback(result, verdict)
            elif result.reason == EXPLORE:
                self.cache._count("explored")
                if not verdict:
                    self.cache._count("explored_false")
                thresholds.feedback(entry_id, verdict)
            elif call.vector is not None:  # a near miss: never served, so note it first
                self.cache._count("feedback")
                thresholds.served(entry_id, call.vector, target.similarity)
                thresholds.feedback(entry_id, verdict)

    async def ajudge(self, call: _Call, response: Any) -> None:
        """:meth:`judge` in a worker thread (the check may run an embedder)."""
        if call.explored is not None:
            await asyncio.to_thread(self.judge, call, response)

    def _found(self, call: _Call, found: Lookup) -> None:
        call.result, call.vector, call.failed = found.result, found.vector, found.result is None
        call.skip_store = found.skip_store

    def serve(self, call: _Call) -> Any:
        """The decoded hit, or ``MISSING``. A stored value that does not decode is a miss."""
        return self._served(call, self.fo.decode(call.result, self._decode))

    async def aserve(self, call: _Call) -> Any:
        """:meth:`serve`, deleting a corrupt entry without blocking the event loop."""
        return self._served(call, await self.fo.adecode(call.result, self._decode))

    def _served(self, call: _Call, value: Any) -> Any:
        if value is not MISSING:
            self.report(Outcome.HIT, call)
        elif call.result is not None and call.result.entry is not None:
            call.failed = True  # the entry did not decode
        return value

    def _decode(self, stored: Any) -> Any:
        if not isinstance(stored, dict) or stored.get("kind") != self.kind:
            raise CorruptEntryError(f"stored value is not a {self.kind} entry")
        if self.kind == "stream":
            return [self.codec.decode(c) for c in stored["chunks"]]
        return self.codec.decode(stored["value"])

    # -- coalescing ----------------------------------------------------------------------------
    #
    # A follower waits for a near-identical in-flight call, then looks itself up again: it is
    # served only if the cache now answers it (threshold, per-call override, adaptive threshold,
    # guards, verifier and shadow mode all decide, as for any hit), else it calls upstream.

    def lead(self, call: _Call) -> Flight | None:
        """Join the in-flight calls. Returns a flight to wait for, or ``None`` if we lead.

        Shadow mode never coalesces (it promises every call reaches the LLM), nor does a call
        whose lookup failed (the cache could not decide for it), nor an explored call (it must
        reach the LLM).
        """
        if not self.coalesce or self.cache.shadow or call.failed or call.explored is not None:
            return None
        flight, leader = self.flights.join(
            call.query.scope_key,
            call.query.text,
            call.query.text_key,
            call.vector,
            call.threshold,
            accept=lambda text, similarity: self.may_follow(call, text, similarity),
        )
        if leader:
            call.flight = flight
            return None
        return flight

    def may_follow(self, call: _Call, text: str, similarity: float) -> bool:
        """Whether the cache's guards would let an answer to ``text`` serve this call.

        A cheap first look, so a call the guards would refuse ("16 percent" behind "15 percent")
        does not wait for nothing; the follower's own lookup after the wait still decides. A
        guard that fails here says yes (the lookup will record it).
        """
        leader = Entry(
            id="",
            scope_key=call.query.scope_key,
            text_key="",
            prompt=text,
            response=None,
            created_at=0.0,
        )
        with Trap(None, None, "lookup"):
            return (
                guard_veto(call.query.text, Candidate(leader, similarity), self.cache.guards)
                is None
            )
        return True

    def refind(self, call: _Call) -> Any:
        """After the leader stored its answer: the follower's hit, decoded, else ``MISSING``."""
        found = self.fo.find(
            call.query, min_similarity=call.threshold, vector=call.vector, count=False
        )
        return self._followed(call, found, self.fo.decode(found.result, self._decode))

    async def arefind(self, call: _Call) -> Any:
        """:meth:`refind`, awaiting the cache."""
        found = await self.fo.afind(
            call.query, min_similarity=call.threshold, vector=call.vector, count=False
        )
        return self._followed(call, found, await self.fo.adecode(found.result, self._decode))

    def _followed(self, call: _Call, found: Lookup, value: Any) -> Any:
        """Count a served follower as ``coalesced`` (its first lookup counted the miss)."""
        if found.result is None:  # the second lookup failed (recorded): call upstream
            call.failed = True
            return MISSING
        call.result = found.result
        if value is not MISSING:
            self.cache._count("coalesced")
            self.tel.record_coalesced()
            self.report(Outcome.COALESCED, call)
        elif found.result.entry is not None:
            call.failed = True  # the entry did not decode
        return value

    def release(self, call: _Call, stored: Any) -> None:
        """Report the miss and let followers go, telling them whether an answer was stored."""
        self.report(Outcome.MISS, call)
        if call.flight is None:
            return
        self.flights.land(call.query.scope_key, call.flight)
        call.flight.finish(stored=stored is not MISSING)

    # -- stores --------------------------------------------------------------------------------

    def save(self, call: _Call, response: Any, info: ResponseInfo | None) -> Any:
        """Store an eligible response (blocking); returns the stored JSON value or ``MISSING``.

        Nothing here can lose the response: any failure is recorded and the caller returns it.
        Nothing is stored when the lookup failed in a way the store would repeat, or when the
        response could not be inspected (``info`` is ``None``; recorded by :meth:`inspected`).
        """
        if call.skip_store or info is None:
            return MISSING
        with self.fo.failures.trap(None, "store"):
            value = self._prepare(call, response, info)
            options = self._put_options(call, info)
            if value is not MISSING and self.fo.put(call.query, value, **options) is not None:
                return value
        return MISSING

    async def asave(self, call: _Call, response: Any, info: ResponseInfo | None) -> Any:
        """:meth:`save`, awaiting the cache."""
        if call.skip_store or info is None:
            return MISSING
        with self.fo.failures.trap(None, "store"):
            value = self._prepare(call, response, info)
            if value is not MISSING:
                options = self._put_options(call, info)
                if await self.fo.aput(call.query, value, **options) is not None:
                    return value
        return MISSING

    def _prepare(self, call: _Call, response: Any, info: ResponseInfo) -> Any:
        """The JSON value to store; ``MISSING`` if refused (counted)."""
        reason = refusal_reason(info, store_tool_calls=self.store_tool_calls)
        if reason is None and not call.store:
            reason = "no_store"
        if reason is not None:
            self.fo.refused(reason)
            return MISSING
        try:
            if self.kind == "stream":
                return {"kind": "stream", "chunks": [self.codec.encode(c) for c in response]}
            return {"kind": "value", "value": self.codec.encode(response)}
        except NotCacheableError as e:
            log.info("semcache: response not stored: %s", e)
            self.fo.refused("not_serialisable")
            return MISSING

    def _put_options(self, call: _Call, info: ResponseInfo) -> dict[str, Any]:
        metadata = {
            "model": call.model,
            "prompt_tokens": info.prompt_tokens,
            "completion_tokens": info.completion_tokens,
        }
        return {"ttl": call.ttl, "vector": call.vector, "metadata": metadata, "tags": call.tags}

    # -- the upstream call ----------------------------------------------------------------------
    #
    # Every call that reaches the wrapped function (bypassed or not) gets the upstream span, by
    # the GenAI conventions; the response is inspected once, for the span and for the store.

    def genai(self, kwargs: dict[str, Any], *, stream: bool = False) -> dict[str, Any]:
        """The call's ``gen_ai.*`` request attributes (none if they cannot be read)."""
        with Trap(None, None, "key"):
            return request_attributes(
                kwargs, operation=self.operation, provider=self.provider, stream=stream
            )
        return {}

    def inspected(
        self, response: Any, inspect: Inspect, up: Upstream, *, record: bool
    ) -> ResponseInfo | None:
        """What ``response`` says about itself, reported on the upstream span; ``None`` if it
        cannot be inspected (a store failure, recorded if ``record``: the store needed it)."""
        with Trap(self.fo.failures if record else None, None, "store"):
            info = inspect(response)
            up.respond(**response_report(info))
            return info
        return None

    def upstream_sync(
        self, args: tuple[Any, ...], kwargs: dict[str, Any], call: _Call | None
    ) -> tuple[Any, ResponseInfo | None]:
        with self.tel.upstream(self.genai(kwargs)) as up:
            response = self.fn(*args, **kwargs)
            return response, self.inspected(response, inspect_response, up, record=_saves(call))

    async def upstream_async(
        self, args: tuple[Any, ...], kwargs: dict[str, Any], call: _Call | None
    ) -> tuple[Any, ResponseInfo | None]:
        with self.tel.upstream(self.genai(kwargs)) as up:
            response = await self.fn(*args, **kwargs)
            return response, self.inspected(response, inspect_response, up, record=_saves(call))

    def stream_upstream(
        self, args: tuple[Any, ...], kwargs: dict[str, Any], call: _Call | None, out: _Streamed
    ) -> Iterator[Any]:
        """The upstream's chunks, kept in ``out``; ``out.info`` is set once the stream ended.

        The span is not made current: the generator's consumer runs between chunks."""
        attrs = self.genai(kwargs, stream=True)
        with (
            self.tel.upstream(attrs, current=False) as up,
            closing(self.fn(*args, **kwargs)) as upstream,
        ):
            for chunk in upstream:
                up.chunk()
                out.chunks.append(chunk)
                yield chunk
            out.info = self.inspected(out.chunks, inspect_stream, up, record=_saves(call))

    async def astream_upstream(
        self, args: tuple[Any, ...], kwargs: dict[str, Any], call: _Call | None, out: _Streamed
    ) -> AsyncGenerator[Any, None]:
        """:meth:`stream_upstream` for an async generator."""
        attrs = self.genai(kwargs, stream=True)
        with self.tel.upstream(attrs, current=False) as up:
            async with aclosing(self.fn(*args, **kwargs)) as upstream:
                async for chunk in upstream:
                    up.chunk()
                    out.chunks.append(chunk)
                    yield chunk
            out.info = self.inspected(out.chunks, inspect_stream, up, record=_saves(call))

    # -- reporting -----------------------------------------------------------------------------

    def report(
        self, outcome: Outcome, call: _Call | None = None, *, reason: str = "", error: bool = False
    ) -> None:
        """Tell the ``on_outcome`` observer, if any, what happened to a call."""
        if self.on_outcome is None:
            return
        result = call.result if call is not None else None
        self.on_outcome(
            CallOutcome(
                outcome=outcome,
                tier=result.tier.value if result is not None and result.tier else None,
                similarity=result.similarity if result is not None else None,
                reason=result.reason if result is not None else reason,
                error=call.failed if call is not None else error,
                lookup=result,
            )
        )

    def info(self) -> CacheInfo:
        return self.cache.info()

    # -- shells ---------------------------------------------------------------------------------

    def call_sync(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        call = self.begin(args, kwargs)
        if call is None:
            return self.upstream_sync(args, kwargs, None)[0]
        self.find(call)
        hit = self.serve(call)
        if hit is not MISSING:
            return hit
        flight = self.lead(call)
        if flight is not None and flight.wait(self.coalesce_timeout):
            hit = self.refind(call)
            if hit is not MISSING:
                return hit
        stored: Any = MISSING
        try:
            response, info = self.upstream_sync(args, kwargs, call)
            stored = self.save(call, response, info)
            self.judge(call, response)
            return response
        finally:
            self.release(call, stored)

    async def call_async(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        call = self.begin(args, kwargs)
        if call is None:
            return (await self.upstream_async(args, kwargs, None))[0]
        await self.afind(call)
        hit = await self.aserve(call)
        if hit is not MISSING:
            return hit
        flight = self.lead(call)
        if flight is not None and await flight.await_(self.coalesce_timeout):
            hit = await self.arefind(call)
            if hit is not MISSING:
                return hit
        stored: Any = MISSING
        try:
            response, info = await self.upstream_async(args, kwargs, call)
            stored = await self.asave(call, response, info)
            await self.ajudge(call, response)
            return response
        finally:
            self.release(call, stored)

    def stream_sync(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Iterator[Any]:
        call = self.begin(args, kwargs)
        if call is None:
            yield from self.stream_upstream(args, kwargs, None, _Streamed.tail())
            return
        self.find(call)
        hit = self.serve(call)
        if (
            hit is MISSING
            and (flight := self.lead(call)) is not None
            and flight.wait(self.coalesce_timeout)
        ):
            hit = self.refind(call)
        if hit is not MISSING:
            yield from hit
            return
        out = _Streamed()
        stored: Any = MISSING
        try:
            yield from self.stream_upstream(args, kwargs, call, out)
            # Reached only when the stream ran to its end: aborted streams are never stored.
            stored = self.save(call, out.chunks, out.info)
        finally:
            self.release(call, stored)

    async def stream_async(
        self, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> AsyncIterator[Any]:
        call = self.begin(args, kwargs)
        if call is None:
            async for chunk in self.astream_upstream(args, kwargs, None, _Streamed.tail()):
                yield chunk
            return
        await self.afind(call)
        hit = await self.aserve(call)
        if (
            hit is MISSING
            and (flight := self.lead(call)) is not None
            and await flight.await_(self.coalesce_timeout)
        ):
            hit = await self.arefind(call)
        if hit is not MISSING:
            for chunk in hit:
                yield chunk
            return
        out = _Streamed()
        stored: Any = MISSING
        try:
            async with aclosing(self.astream_upstream(args, kwargs, call, out)) as upstream:
                async for chunk in upstream:
                    yield chunk
            stored = await self.asave(call, out.chunks, out.info)
        finally:
            self.release(call, stored)


def cached(
    cache: SemanticCache,
    *,
    request: RequestAdapter | None = None,
    codec: Codec[Any] | None = None,
    namespace: str | None = None,
    min_similarity: float | None = None,
    ttl: float | None = None,
    store_tool_calls: bool = False,
    coalesce: bool = True,
    coalesce_timeout: float = 30.0,
    on_outcome: Callable[[CallOutcome], None] | None = None,
    provider: str | None = None,
) -> Callable[[F], F]:
    """Put ``cache`` in front of an LLM-calling function.

    Args:
        cache: the :class:`SemanticCache` to use (it may be shared by many functions).
        request: maps the call's arguments to the text and scope; :class:`ChatRequest` (OpenAI
            style ``messages``) by default, or :class:`PromptRequest`, or your own callable.
        codec: turns responses (or stream chunks) into JSON and back. The default accepts JSON
            values only; use ``ModelCodec(ChatCompletion)`` for pydantic responses.
        namespace: entries are shared only between functions with the same namespace; by
            default the function's qualified name.
        min_similarity: this function's threshold (else the cache policy's).
        ttl: seconds entries stored by this function live (else the cache policy's).
        store_tool_calls: store responses that call tools (off: they depend on the tools' state).
        coalesce: concurrent misses for the same or a near-identical prompt wait for one call;
            a waiting call then looks itself up again and is served only on a hit (so the
            thresholds, guards, verifier and shadow mode decide as for any hit), else it
            calls upstream. Shadow mode never waits.
        coalesce_timeout: seconds a waiting call waits before calling upstream itself.
        on_outcome: called (in the caller's thread or task) with a :class:`CallOutcome` for
            every call: for per-request logging, or tests. It must not raise.
        provider: the ``gen_ai.provider.name`` of the upstream span (``openai``,
            ``anthropic``, ``aws.bedrock``...); by default read from a ``provider/model``
            prefix or the model's family, and left out when neither tells.

    The wrapper keeps the function's kind (sync, async, generator, async generator) and gains
    ``cache_info()``, ``cache_clear()`` (empties the whole cache, shared or not) and
    ``uncached`` (the original function). Errors raised by the function propagate unchanged and
    are never stored; a stream is stored only when it runs to its end. A plain function called
    with ``stream=True`` (an SDK stream) bypasses the cache (reason ``stream``); to cache a
    stream, decorate a generator that yields its chunks.
    """
    if min_similarity is not None:
        check_threshold(min_similarity)
    if coalesce_timeout <= 0:
        raise ConfigurationError(f"coalesce_timeout must be > 0 seconds, got {coalesce_timeout}")
    adapter = request or ChatRequest()
    chosen_codec: Codec[Any] = codec or JsonCodec()

    def decorate(fn: F) -> F:
        is_async_gen = inspect.isasyncgenfunction(fn)
        is_gen = inspect.isgeneratorfunction(fn)
        core = _Cached(
            fn,
            cache,
            request=adapter,
            codec=chosen_codec,
            namespace=namespace or f"{fn.__module__}.{fn.__qualname__}",
            min_similarity=min_similarity,
            ttl=ttl,
            store_tool_calls=store_tool_calls,
            coalesce=coalesce,
            coalesce_timeout=coalesce_timeout,
            stream=is_gen or is_async_gen,
            on_outcome=on_outcome,
            provider=provider,
        )
        wrapper: Any
        if is_async_gen:

            async def wrapper(*args: Any, **kwargs: Any) -> AsyncIterator[Any]:
                async for chunk in core.stream_async(args, kwargs):
                    yield chunk

        elif is_gen:

            def wrapper(*args: Any, **kwargs: Any) -> Iterator[Any]:
                yield from core.stream_sync(args, kwargs)

        elif inspect.iscoroutinefunction(fn):

            async def wrapper(*args: Any, **kwargs: Any) -> Any:
                return await core.call_async(args, kwargs)

        else:

            def wrapper(*args: Any, **kwargs: Any) -> Any:
                return core.call_sync(args, kwargs)

        functools.update_wrapper(wrapper, fn)
        wrapper.cache_info = core.info
        wrapper.cache_clear = cache.clear
        wrapper.uncached = fn
        wrapper.cache = cache
        return wrapper  # type: ignore[no-any-return]

    return decorate


def _saves(call: _Call | None) -> bool:
    """Whether the response of ``call`` is meant for the store (so failing to inspect it is a
    store failure to record)."""
    return call is not None and not call.skip_store
