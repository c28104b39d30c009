"""The ``@cached`` decorator: a semantic cache in front of any LLM call.

One decorator for plain functions, ``async`` functions, and functions that stream (generators and
async generators). A failure of the cache (backend down, embedding error, corrupt entry) never
breaks the call: it becomes a miss, the wrapped function runs, and the failure is counted in
``cache_info().errors`` and recorded on the span.

The steps are shared by the four shells: :meth:`_Cached.begin` (pure), :meth:`_Cached.find`
and :meth:`_Cached.save` (I/O; the async shells await their twins :meth:`_Cached.afind` and
:meth:`_Cached.asave`), and :meth:`_Cached.serve` (pure decoding).
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import aclosing, closing
from dataclasses import dataclass, replace
from typing import Any, TypeVar

from semcache.cache import Query, SemanticCache
from semcache.errors import (
    ConfigurationError,
    CorruptEntryError,
    InvalidInputError,
    NotCacheableError,
    SemcacheError,
)
from semcache.llm.coalesce import Flight, Flights
from semcache.llm.options import CallOutcome, current_options
from semcache.llm.requests import ChatRequest, RequestAdapter
from semcache.llm.responses import (
    Codec,
    JsonCodec,
    ResponseInfo,
    inspect_response,
    inspect_stream,
    refusal_reason,
)
from semcache.models import LookupResult, Outcome
from semcache.policy import check_threshold
from semcache.stats import CacheInfo

__all__ = ["cached"]

log = logging.getLogger("semcache")
F = TypeVar("F", bound=Callable[..., Any])
_MISSING = object()


@dataclass(slots=True)
class _Call:
    """One call in progress through the cache."""

    query: Query | None
    threshold: float
    ttl: float | None
    store: bool
    span: Any = None
    result: LookupResult | None = None
    vector: Any = None
    flight: Flight | None = None
    failed: bool = False
    model: str = ""


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
    ) -> None:
        self.fn = fn
        self.cache = cache
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

    # -- steps ----------------------------------------------------------------------------------

    def begin(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> _Call | None:
        """Validate and key the call; ``None`` means bypass (already counted)."""
        opts = current_options()
        if opts.bypass:
            self._bypass("requested")
            return None
        try:
            req = self.request(args, kwargs)
            if req.bypass:
                self._bypass(req.bypass)
                return None
            scope = req.scope
            params = {**scope.params, "semcache.kind": self.kind}
            scope = replace(
                scope,
                params=params,
                namespace=scope.namespace or self.namespace,
                tenant=opts.tenant if opts.tenant is not None else scope.tenant,
            )
            query = self.cache.query(req.text, scope)
        except InvalidInputError as e:
            log.debug("semcache: bypass (%s)", e)
            self._bypass("invalid_input")
            return None
        threshold = self.cache.threshold(
            opts.min_similarity if opts.min_similarity is not None else self.min_similarity
        )
        return _Call(
            model=scope.model,
            query=query,
            threshold=threshold,
            ttl=opts.ttl if opts.ttl is not None else self.ttl,
            store=opts.store,
        )

    def report(self, outcome: Outcome, call: _Call | None = None) -> None:
        """Tell the ``on_outcome`` observer, if any, what happened to a call."""
        if self.on_outcome is None:
            return
        result = call.result if call is not None else None
        self.on_outcome(
            CallOutcome(
                outcome=outcome,
                tier=result.tier.value if result is not None and result.tier else None,
                similarity=result.similarity if result is not None else None,
                error=call.failed if call is not None else False,
            )
        )

    def _bypass(self, reason: str) -> None:
        self.report(Outcome.BYPASS)
        self.cache.count("bypasses")
        with self.tel.span("semcache.request") as span:
            self.tel.record_bypass(span, reason)

    def find(self, call: _Call) -> None:
        """Look the call up (blocking). Failures become misses, recorded."""
        assert call.query is not None
        with self.tel.span("semcache.lookup") as span:
            try:
                call.result, call.vector = self.cache.find(
                    call.query, min_similarity=call.threshold
                )
            except SemcacheError as e:
                self._missed(span, call, e)
                return
            self.cache.record_result(span, call.result)

    async def afind(self, call: _Call) -> None:
        """:meth:`find`, awaiting the cache."""
        assert call.query is not None
        with self.tel.span("semcache.lookup") as span:
            try:
                call.result, call.vector = await self.cache.afind(
                    call.query, min_similarity=call.threshold
                )
            except SemcacheError as e:
                self._missed(span, call, e)
                return
            await self.cache.arecord_result(span, call.result)

    def _missed(self, span: Any, call: _Call, error: SemcacheError) -> None:
        self._fail(span, "lookup", error)
        call.result = None
        call.failed = True

    def serve(self, call: _Call) -> Any:
        """The decoded hit, or ``_MISSING``. A stored value that does not decode is a miss."""
        if call.result is None or call.result.entry is None:
            return _MISSING
        stored = call.result.entry.response
        try:
            value = self._decode(stored)
            self.report(Outcome.HIT, call)
            return value
        except (SemcacheError, KeyError, TypeError, ValueError) as e:
            error = (
                e
                if isinstance(e, CorruptEntryError)
                else CorruptEntryError(
                    f"entry {call.result.entry.id} cannot be decoded: {e}",
                    entry_id=call.result.entry.id,
                )
            )
            with self.tel.span("semcache.decode") as span:
                self._fail(span, "decode", error)
            self.cache.discard_corrupt(error)
            call.failed = True
            return _MISSING

    def _decode(self, stored: Any) -> Any:
        if not isinstance(stored, dict) or stored.get("kind") != self.kind:
            raise CorruptEntryError(f"stored value is not a {self.kind} entry")
        if self.kind == "stream":
            return [self.codec.decode(c) for c in stored["chunks"]]
        return self.codec.decode(stored["value"])

    def lead(self, call: _Call) -> Flight | None:
        """Join the in-flight calls. Returns a flight to wait for, or ``None`` if we lead."""
        if not self.coalesce or call.query is None:
            return None
        flight, leader = self.flights.join(
            call.query.scope_key, call.query.text_key, call.vector, call.threshold
        )
        if leader:
            call.flight = flight
            return None
        return flight

    def followed(self, found: bool, value: Any) -> Any:
        """What a follower returns: the leader's stored value, decoded, else ``_MISSING``."""
        if not found:
            return _MISSING
        try:
            decoded = self._decode(value)
        except (SemcacheError, KeyError, TypeError, ValueError):
            return _MISSING
        self.cache.count("coalesced")
        self.report(Outcome.COALESCED)
        return decoded

    def save(self, call: _Call, response: Any, info: ResponseInfo) -> Any:
        """Store an eligible response (blocking); returns the stored JSON value or ``_MISSING``."""
        assert call.query is not None
        stored = self.storable(call, response, info)
        if stored is not _MISSING:
            with self.tel.span("semcache.store") as span:
                try:
                    self.cache.put(call.query, stored, **self._put_options(call, info))
                except SemcacheError as e:
                    self._fail(span, "store", e)
                    return _MISSING
        return stored

    async def asave(self, call: _Call, response: Any, info: ResponseInfo) -> Any:
        """:meth:`save`, awaiting the cache."""
        assert call.query is not None
        stored = self.storable(call, response, info)
        if stored is not _MISSING:
            with self.tel.span("semcache.store") as span:
                try:
                    await self.cache.aput(call.query, stored, **self._put_options(call, info))
                except SemcacheError as e:
                    self._fail(span, "store", e)
                    return _MISSING
        return stored

    def storable(self, call: _Call, response: Any, info: ResponseInfo) -> Any:
        """The JSON value to store for an eligible response, else ``_MISSING`` (counted)."""
        reason = refusal_reason(info, store_tool_calls=self.store_tool_calls)
        if reason is None and not call.store:
            reason = "no_store"
        if reason is not None:
            self.cache.count("store_refusals")
            self.tel.record_store(reason)
            return _MISSING
        try:
            if self.kind == "stream":
                return {"kind": "stream", "chunks": [self.codec.encode(c) for c in response]}
            return {"kind": "value", "value": self.codec.encode(response)}
        except NotCacheableError as e:
            self.cache.count("store_refusals")
            self.tel.record_store("not_serialisable")
            log.warning("semcache: response not stored: %s", e)
            return _MISSING

    def _put_options(self, call: _Call, info: ResponseInfo) -> dict[str, Any]:
        metadata = {
            "model": call.model,
            "prompt_tokens": info.prompt_tokens,
            "completion_tokens": info.completion_tokens,
        }
        return {"ttl": call.ttl, "vector": call.vector, "metadata": metadata}

    def release(self, call: _Call, stored: Any) -> None:
        """Report the miss and let followers go: with the stored value, or empty-handed."""
        self.report(Outcome.MISS, call)
        if call.flight is None or call.query is None:
            return
        self.flights.land(call.query.scope_key, call.flight)
        if stored is _MISSING:
            call.flight.finish()
        else:
            call.flight.finish(stored)

    def _fail(self, span: Any, stage: str, error: SemcacheError) -> None:
        log.warning("semcache: %s failed, continuing without the cache: %s", stage, error)
        self.cache.record_error(span, stage, error)
        if isinstance(error, CorruptEntryError):
            self.cache.discard_corrupt(error)

    def info(self) -> CacheInfo:
        return self.cache.info()

    # -- shells ---------------------------------------------------------------------------------

    def call_sync(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        call = self.begin(args, kwargs)
        if call is None:
            return self.fn(*args, **kwargs)
        self.find(call)
        hit = self.serve(call)
        if hit is not _MISSING:
            return hit
        flight = self.lead(call)
        if flight is not None:
            hit = self.followed(*flight.wait(self.coalesce_timeout))
            if hit is not _MISSING:
                return hit
        stored: Any = _MISSING
        try:
            with self.tel.stage("upstream"):
                response = self.fn(*args, **kwargs)
            stored = self.save(call, response, inspect_response(response))
            return response
        finally:
            self.release(call, stored)

    async def call_async(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        call = self.begin(args, kwargs)
        if call is None:
            return await self.fn(*args, **kwargs)
        await self.afind(call)
        hit = self.serve(call)
        if hit is not _MISSING:
            return hit
        flight = self.lead(call)
        if flight is not None:
            hit = self.followed(*await flight.await_(self.coalesce_timeout))
            if hit is not _MISSING:
                return hit
        stored: Any = _MISSING
        try:
            with self.tel.stage("upstream"):
                response = await self.fn(*args, **kwargs)
            stored = await self.asave(call, response, inspect_response(response))
            return response
        finally:
            self.release(call, stored)

    def stream_sync(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Iterator[Any]:
        call = self.begin(args, kwargs)
        if call is None:
            yield from self.fn(*args, **kwargs)
            return
        self.find(call)
        hit = self.serve(call)
        if hit is _MISSING and (flight := self.lead(call)) is not None:
            hit = self.followed(*flight.wait(self.coalesce_timeout))
        if hit is not _MISSING:
            yield from hit
            return
        chunks: list[Any] = []
        stored: Any = _MISSING
        try:
            with closing(self.fn(*args, **kwargs)) as upstream:
                for chunk in upstream:
                    chunks.append(chunk)
                    yield chunk
            # Reached only when the stream ran to its end: aborted streams are never stored.
            stored = self.save(call, chunks, inspect_stream(chunks))
        finally:
            self.release(call, stored)

    async def stream_async(
        self, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> AsyncIterator[Any]:
        call = self.begin(args, kwargs)
        if call is None:
            async for chunk in self.fn(*args, **kwargs):
                yield chunk
            return
        await self.afind(call)
        hit = self.serve(call)
        if hit is _MISSING and (flight := self.lead(call)) is not None:
            hit = self.followed(*await flight.await_(self.coalesce_timeout))
        if hit is not _MISSING:
            for chunk in hit:
                yield chunk
            return
        chunks: list[Any] = []
        stored: Any = _MISSING
        try:
            async with aclosing(self.fn(*args, **kwargs)) as upstream:
                async for chunk in upstream:
                    chunks.append(chunk)
                    yield chunk
            stored = await self.asave(call, chunks, inspect_stream(chunks))
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
    coalesce_timeout: float = 120.0,
    on_outcome: Callable[[CallOutcome], None] | None = None,
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
        coalesce: concurrent misses for the same or a near-identical prompt wait for one call.
        coalesce_timeout: seconds a waiting call waits before calling upstream itself.
        on_outcome: called (in the caller's thread or task) with a :class:`CallOutcome` for
            every call: for per-request logging, or tests. It must not raise.

    The wrapper keeps the function's kind (sync, async, generator, async generator) and gains
    ``cache_info()``, ``cache_clear()`` (empties the whole cache, shared or not) and
    ``uncached`` (the original function). Errors raised by the function propagate unchanged and
    are never stored; a stream is stored only when it runs to its end.
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
