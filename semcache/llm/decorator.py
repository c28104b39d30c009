"""The ``@cached`` decorator: a semantic cache in front of any LLM call.

One decorator for plain functions, ``async`` functions, and functions that stream (generators and
async generators). A failure of the cache (backend down, embedding error, corrupt entry, a guard
raising, an unencodable response) never breaks the call: it becomes a miss through
:mod:`semcache._failopen`, the wrapped function runs, and its answer is returned.

:func:`cached` builds, per decorated function, the steps its calls share (keys, lookup and
decoding, storing: :mod:`~semcache.llm._steps`; exploration: :mod:`~semcache.llm._exploring`),
coalescing (:mod:`~semcache.llm._coalescing`) and the upstream call
(:mod:`~semcache.llm._upstream`), and wraps the function in the shell of its kind
(:mod:`~semcache.llm._shells`); the async shells await the ``a``-twins, which never block the
event loop.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, TypeVar

from semcache.cache import SemanticCache
from semcache.errors import ConfigurationError
from semcache.llm._coalescing import Coalescing
from semcache.llm._shells import Shells
from semcache.llm._steps import Steps
from semcache.llm._upstream import UpstreamCalls
from semcache.llm.requests import ChatRequest, RequestAdapter
from semcache.llm.responses import Codec, JsonCodec
from semcache.models import CallOutcome
from semcache.policy import check_threshold

__all__ = ["cached"]

F = TypeVar("F", bound=Callable[..., Any])


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
        steps = Steps(
            cache,
            request=adapter,
            codec=chosen_codec,
            namespace=namespace or f"{fn.__module__}.{fn.__qualname__}",
            min_similarity=min_similarity,
            ttl=ttl,
            store_tool_calls=store_tool_calls,
            stream=is_gen or is_async_gen,
            on_outcome=on_outcome,
        )
        shells = Shells(
            steps,
            Coalescing(steps, enabled=coalesce, timeout=coalesce_timeout),
            UpstreamCalls(fn, steps.fo, request=adapter, provider=provider),
        )
        wrapper: Any
        if is_async_gen:

            async def wrapper(*args: Any, **kwargs: Any) -> AsyncIterator[Any]:
                async for chunk in shells.stream_async(args, kwargs):
                    yield chunk

        elif is_gen:

            def wrapper(*args: Any, **kwargs: Any) -> Iterator[Any]:
                yield from shells.stream_sync(args, kwargs)

        elif inspect.iscoroutinefunction(fn):

            async def wrapper(*args: Any, **kwargs: Any) -> Any:
                return await shells.call_async(args, kwargs)

        else:

            def wrapper(*args: Any, **kwargs: Any) -> Any:
                return shells.call_sync(args, kwargs)

        functools.update_wrapper(wrapper, fn)
        wrapper.cache_info = cache.info
        wrapper.cache_clear = cache.clear
        wrapper.uncached = fn
        wrapper.cache = cache
        return wrapper  # type: ignore[no-any-return]

    return decorate
