"""The steps of a call through ``@cached`` that every shell shares: keying the call
(:meth:`Steps.begin`), looking it up and decoding a hit (:meth:`~Steps.find`,
:meth:`~Steps.serve`), storing the answer (:meth:`~Steps.save`) and reporting the outcome.

Each blocking step has an ``a``-twin beside it that awaits the cache instead; a failure of the
cache goes through :mod:`semcache._failopen` and becomes a miss.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from semcache._failopen import MISSING, Bypass, FailOpen, Lookup
from semcache.cache import SemanticCache
from semcache.errors import CorruptEntryError, NotCacheableError
from semcache.llm._call import Call
from semcache.llm._exploring import Explorer
from semcache.llm.options import CallOptions, current_options
from semcache.llm.requests import RequestAdapter
from semcache.llm.responses import Codec, ResponseInfo, refusal_reason
from semcache.models import CallOutcome, Outcome

__all__ = ["Steps"]

log = logging.getLogger("semcache")


class Steps:
    """One decorated function's settings, and the steps of its calls."""

    def __init__(
        self,
        cache: SemanticCache,
        *,
        request: RequestAdapter,
        codec: Codec[Any],
        namespace: str,
        min_similarity: float | None,
        ttl: float | None,
        store_tool_calls: bool,
        stream: bool,
        on_outcome: Callable[[CallOutcome], None] | None,
    ) -> None:
        self.cache = cache
        self.fo = FailOpen(cache)
        self.request = request
        self.codec = codec
        self.namespace = namespace
        self.min_similarity = min_similarity
        self.ttl = ttl
        self.store_tool_calls = store_tool_calls
        self.kind = "stream" if stream else "value"
        self.on_outcome = on_outcome
        self.explorer = Explorer(cache, self.fo, stream=stream, decode=self.decode)

    # -- keys ----------------------------------------------------------------------------------

    def begin(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Call | None:
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

    def _plan(self, args: tuple[Any, ...], kwargs: dict[str, Any], opts: CallOptions) -> Call | str:
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
        return Call(
            query=self.cache._query(req.text, scope),
            threshold=self.cache._threshold(override),
            ttl=opts.ttl if opts.ttl is not None else self.ttl,
            store=opts.store,
            model=scope.model,
            tags=opts.tags,
        )

    # -- lookups -------------------------------------------------------------------------------

    def find(self, call: Call) -> None:
        """Look the call up (blocking); a failure leaves no result."""
        review = self.explorer.reviewer(call)
        found = self.fo.find(call.query, min_similarity=call.threshold, review=review)
        self._found(call, found)

    async def afind(self, call: Call) -> None:
        """:meth:`find`, awaiting the cache."""
        review = self.explorer.reviewer(call)
        found = await self.fo.afind(call.query, min_similarity=call.threshold, review=review)
        self._found(call, found)

    def _found(self, call: Call, found: Lookup) -> None:
        call.result, call.vector, call.failed = found.result, found.vector, found.result is None
        call.skip_store = found.skip_store

    def serve(self, call: Call) -> Any:
        """The decoded hit, or ``MISSING``. A stored value that does not decode is a miss."""
        return self._served(call, self.fo.decode(call.result, self.decode))

    async def aserve(self, call: Call) -> Any:
        """:meth:`serve`, deleting a corrupt entry without blocking the event loop."""
        return self._served(call, await self.fo.adecode(call.result, self.decode))

    def _served(self, call: Call, value: Any) -> Any:
        if value is not MISSING:
            self.report(Outcome.HIT, call)
        elif call.result is not None and call.result.entry is not None:
            call.failed = True  # the entry did not decode
        return value

    def decode(self, stored: Any) -> Any:
        """A stored JSON value back to a response (a list of chunks for a stream)."""
        if not isinstance(stored, dict) or stored.get("kind") != self.kind:
            raise CorruptEntryError(f"stored value is not a {self.kind} entry")
        if self.kind == "stream":
            return [self.codec.decode(c) for c in stored["chunks"]]
        return self.codec.decode(stored["value"])

    # -- stores --------------------------------------------------------------------------------

    def save(self, call: Call, response: Any, info: ResponseInfo | None) -> Any:
        """Store an eligible response (blocking); returns the stored JSON value or ``MISSING``.

        Nothing here can lose the response: any failure is recorded and the caller returns it.
        Nothing is stored when the lookup failed in a way the store would repeat, or when the
        response could not be inspected (``info`` is ``None``; recorded by the upstream call).
        """
        if call.skip_store or info is None:
            return MISSING
        with self.fo.failures.trap(None, "store"):
            value = self._prepare(call, response, info)
            options = self._put_options(call, info)
            if value is not MISSING and self.fo.put(call.query, value, **options) is not None:
                return value
        return MISSING

    async def asave(self, call: Call, response: Any, info: ResponseInfo | None) -> Any:
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

    def _prepare(self, call: Call, response: Any, info: ResponseInfo) -> Any:
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

    def _put_options(self, call: Call, info: ResponseInfo) -> dict[str, Any]:
        metadata = {
            "model": call.model,
            "prompt_tokens": info.prompt_tokens,
            "completion_tokens": info.completion_tokens,
        }
        return {"ttl": call.ttl, "vector": call.vector, "metadata": metadata, "tags": call.tags}

    # -- reporting -----------------------------------------------------------------------------

    def report(
        self, outcome: Outcome, call: Call | None = None, *, reason: str = "", error: bool = False
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
