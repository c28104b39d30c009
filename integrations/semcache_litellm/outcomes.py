"""What the cache did for each recent call, kept until the proxy writes the response headers."""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass

__all__ = ["CallOutcome", "OutcomeLog"]


@dataclass(frozen=True, slots=True, kw_only=True)
class CallOutcome:
    """One lookup: ``hit``, ``miss``, ``bypass`` or ``error``, and the details of the decision."""

    outcome: str
    tier: str | None = None
    similarity: float | None = None
    reason: str = ""

    def header(self) -> str:
        """The ``x-semcache`` header value, e.g. ``hit; tier=semantic; similarity=0.9412``."""
        parts = [self.outcome]
        if self.tier:
            parts.append(f"tier={self.tier}")
        if self.similarity is not None:
            parts.append(f"similarity={self.similarity:.4f}")
        if self.reason:
            parts.append(f"reason={self.reason}")
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
