"""What the cache did for each recent call, kept until the proxy writes the response headers."""

from __future__ import annotations

import threading
from collections import OrderedDict

from semcache.models import CallOutcome

__all__ = ["CallOutcome", "OutcomeLog", "header"]


def header(outcome: CallOutcome) -> str:
    """The ``x-semcache`` header value, e.g. ``hit; tier=semantic; similarity=0.9412``.

    A lookup that failed reads ``error; reason=<exception type>``.
    """
    parts = ["error" if outcome.error else str(outcome.outcome)]
    if outcome.tier:
        parts.append(f"tier={outcome.tier}")
    if outcome.similarity is not None:
        parts.append(f"similarity={outcome.similarity:.4f}")
    if outcome.reason:
        parts.append(f"reason={outcome.reason}")
    return "; ".join(parts)


class OutcomeLog:
    """A bounded, thread-safe map from LiteLLM call id to :class:`CallOutcome`.

    Entries are taken by the response-headers hook; the bound drops those never taken (calls
    that failed before the headers were written).
    """

    def __init__(self, size: int = 1024) -> None:
        self._size = size
        self._items: OrderedDict[str, CallOutcome] = OrderedDict()
        self._lock = threading.Lock()

    def put(self, call_id: object, outcome: CallOutcome) -> None:
        if not isinstance(call_id, str) or not call_id:
            return
        with self._lock:
            self._items[call_id] = outcome
            self._items.move_to_end(call_id)
            while len(self._items) > self._size:
                self._items.popitem(last=False)

    def pop(self, call_id: object) -> CallOutcome | None:
        if not isinstance(call_id, str):
            return None
        with self._lock:
            return self._items.pop(call_id, None)
