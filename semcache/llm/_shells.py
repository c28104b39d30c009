"""The four shells of ``@cached``, one per kind of function: plain, ``async``, generator and
async generator.

Each shell only orders the shared steps (:mod:`semcache.llm._steps`, coalescing, exploration,
the upstream call); each sync shell sits beside its async twin, which awaits the ``a``-twins of
the same steps (they never block the event loop).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import aclosing
from typing import Any

from semcache._failopen import MISSING
from semcache.llm._call import Streamed
from semcache.llm._coalescing import Coalescing
from semcache.llm._steps import Steps
from semcache.llm._upstream import UpstreamCalls

__all__ = ["Shells"]


class Shells:
    """The calls of one decorated function, through its cache."""

    def __init__(self, steps: Steps, coalescing: Coalescing, upstream: UpstreamCalls) -> None:
        self.steps = steps
        self.explorer = steps.explorer
        self.coalescing = coalescing
        self.upstream = upstream

    def call_sync(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        steps, coalescing = self.steps, self.coalescing
        call = steps.begin(args, kwargs)
        if call is None:
            return self.upstream.run(args, kwargs, None)[0]
        steps.find(call)
        hit = steps.serve(call)
        if hit is not MISSING:
            return hit
        flight = coalescing.lead(call)
        if flight is not None and flight.wait(coalescing.timeout):
            hit = coalescing.refind(call)
            if hit is not MISSING:
                return hit
        stored: Any = MISSING
        try:
            response, info = self.upstream.run(args, kwargs, call)
            stored = steps.save(call, response, info)
            self.explorer.judge(call, response)
            return response
        finally:
            coalescing.release(call, stored)

    async def call_async(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        steps, coalescing = self.steps, self.coalescing
        call = steps.begin(args, kwargs)
        if call is None:
            return (await self.upstream.arun(args, kwargs, None))[0]
        await steps.afind(call)
        hit = await steps.aserve(call)
        if hit is not MISSING:
            return hit
        flight = coalescing.lead(call)
        if flight is not None and await flight.await_(coalescing.timeout):
            hit = await coalescing.arefind(call)
            if hit is not MISSING:
                return hit
        stored: Any = MISSING
        try:
            response, info = await self.upstream.arun(args, kwargs, call)
            stored = await steps.asave(call, response, info)
            await self.explorer.ajudge(call, response)
            return response
        finally:
            coalescing.release(call, stored)

    def stream_sync(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Iterator[Any]:
        steps, coalescing = self.steps, self.coalescing
        call = steps.begin(args, kwargs)
        if call is None:
            yield from self.upstream.stream(args, kwargs, None, Streamed.tail())
            return
        steps.find(call)
        hit = steps.serve(call)
        if (
            hit is MISSING
            and (flight := coalescing.lead(call)) is not None
            and flight.wait(coalescing.timeout)
        ):
            hit = coalescing.refind(call)
        if hit is not MISSING:
            yield from hit
            return
        out = Streamed()
        stored: Any = MISSING
        try:
            yield from self.upstream.stream(args, kwargs, call, out)
            # Reached only when the stream ran to its end: aborted streams are never stored.
            stored = steps.save(call, out.chunks, out.info)
        finally:
            coalescing.release(call, stored)

    async def stream_async(
        self, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> AsyncIterator[Any]:
        steps, coalescing = self.steps, self.coalescing
        call = steps.begin(args, kwargs)
        if call is None:
            async for chunk in self.upstream.astream(args, kwargs, None, Streamed.tail()):
                yield chunk
            return
        await steps.afind(call)
        hit = await steps.aserve(call)
        if (
            hit is MISSING
            and (flight := coalescing.lead(call)) is not None
            and await flight.await_(coalescing.timeout)
        ):
            hit = await coalescing.arefind(call)
        if hit is not MISSING:
            for chunk in hit:
                yield chunk
            return
        out = Streamed()
        stored: Any = MISSING
        try:
            async with aclosing(self.upstream.astream(args, kwargs, call, out)) as upstream:
                async for chunk in upstream:
                    yield chunk
            stored = await steps.asave(call, out.chunks, out.info)
        finally:
            coalescing.release(call, stored)
