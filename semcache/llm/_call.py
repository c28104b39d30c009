"""One call's state on its way through ``@cached``: its keys and lookup (:class:`Call`), and an
upstream stream as it goes by (:class:`Streamed`)."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

from semcache.cache import Query
from semcache.llm.coalesce import Flight
from semcache.llm.responses import ResponseInfo
from semcache.models import Candidate, LookupResult

__all__ = ["Call", "Streamed", "saves"]


@dataclass(slots=True)
class Call:
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


def saves(call: Call | None) -> bool:
    """Whether the response of ``call`` is meant for the store (so failing to inspect it is a
    store failure to record)."""
    return call is not None and not call.skip_store


_BYPASS_TAIL = 8  # chunks a bypassed stream keeps: enough for the usage and finish chunks


@dataclass(slots=True)
class Streamed:
    """An upstream stream as it goes by: its chunks and, once it ended, what they said.

    A stream that will be stored keeps every chunk; a bypassed one only its tail, so a long
    uncached stream costs no memory (its usage and finish reason come in the last chunks).
    """

    chunks: list[Any] | deque[Any] = field(default_factory=list)
    info: ResponseInfo | None = None

    @classmethod
    def tail(cls) -> Streamed:
        return cls(chunks=deque(maxlen=_BYPASS_TAIL))
