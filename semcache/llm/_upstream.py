"""The upstream call of ``@cached``: the wrapped function run inside its GenAI client span.

Every call that reaches the wrapped function (bypassed or not) gets the upstream span, by the
GenAI conventions (:mod:`semcache.llm.genai`); the response is inspected once, for the span and
for the store.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable, Iterator
from contextlib import aclosing, closing
from typing import Any

from semcache._failopen import FailOpen, Trap
from semcache.llm._call import Call, Streamed, saves
from semcache.llm.genai import request_attributes, response_report
from semcache.llm.requests import PromptRequest, RequestAdapter
from semcache.llm.responses import ResponseInfo, inspect_response, inspect_stream
from semcache.telemetry import Upstream

__all__ = ["UpstreamCalls"]

Inspect = Callable[[Any], ResponseInfo]


class UpstreamCalls:
    """Calls of one decorated function's wrapped function, each reported on its span."""

    def __init__(
        self,
        fn: Callable[..., Any],
        fo: FailOpen,
        *,
        request: RequestAdapter,
        provider: str | None,
    ) -> None:
        self.fn = fn
        self.fo = fo
        self.tel = fo.cache.telemetry
        self.provider = provider
        self.operation = "text_completion" if isinstance(request, PromptRequest) else "chat"

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

    def run(
        self, args: tuple[Any, ...], kwargs: dict[str, Any], call: Call | None
    ) -> tuple[Any, ResponseInfo | None]:
        """The wrapped function's response, and what it says about itself."""
        with self.tel.upstream(self.genai(kwargs)) as up:
            response = self.fn(*args, **kwargs)
            return response, self.inspected(response, inspect_response, up, record=saves(call))

    async def arun(
        self, args: tuple[Any, ...], kwargs: dict[str, Any], call: Call | None
    ) -> tuple[Any, ResponseInfo | None]:
        """:meth:`run`, awaiting the wrapped function."""
        with self.tel.upstream(self.genai(kwargs)) as up:
            response = await self.fn(*args, **kwargs)
            return response, self.inspected(response, inspect_response, up, record=saves(call))

    def stream(
        self, args: tuple[Any, ...], kwargs: dict[str, Any], call: Call | None, out: Streamed
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
            out.info = self.inspected(out.chunks, inspect_stream, up, record=saves(call))

    async def astream(
        self, args: tuple[Any, ...], kwargs: dict[str, Any], call: Call | None, out: Streamed
    ) -> AsyncGenerator[Any, None]:
        """:meth:`stream` for an async generator."""
        attrs = self.genai(kwargs, stream=True)
        with self.tel.upstream(attrs, current=False) as up:
            async with aclosing(self.fn(*args, **kwargs)) as upstream:
                async for chunk in upstream:
                    up.chunk()
                    out.chunks.append(chunk)
                    yield chunk
            out.info = self.inspected(out.chunks, inspect_stream, up, record=saves(call))
