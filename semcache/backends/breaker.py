"""A circuit breaker, so an unreachable backend costs microseconds per request, not a timeout.

The decisions are pure functions over an immutable :class:`BreakerState`; :class:`CircuitBreaker`
holds the state behind a lock and is what sync and async backends share.

States: *closed* (calls pass; consecutive failures are counted), *open* (calls are refused at once
for ``reset_seconds``), *half-open* (one probe call passes; success closes, failure re-opens).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

from semcache.errors import BackendUnavailableError, ConfigurationError

__all__ = ["BreakerParams", "BreakerState", "CircuitBreaker", "admit", "failed", "succeeded"]


@dataclass(frozen=True, slots=True, kw_only=True)
class BreakerParams:
    """When the circuit opens and how long it stays open.

    Attributes:
        failure_threshold: consecutive connection failures (or timeouts) that open the circuit.
        reset_seconds: how long an open circuit refuses calls before letting one probe through.
    """

    failure_threshold: int = 3
    reset_seconds: float = 1.0

    def __post_init__(self) -> None:
        if not isinstance(self.failure_threshold, int) or self.failure_threshold < 1:
            raise ConfigurationError(
                "BreakerParams.failure_threshold must be an int >= 1, "
                f"got {self.failure_threshold!r}"
            )
        if not (math.isfinite(self.reset_seconds) and 0 < self.reset_seconds <= 3600):
            raise ConfigurationError(
                f"BreakerParams.reset_seconds must be in (0, 3600], got {self.reset_seconds!r}"
            )


@dataclass(frozen=True, slots=True)
class BreakerState:
    """Consecutive failures, when the circuit opened (``None`` if closed), when a probe started."""

    failures: int = 0
    opened_at: float | None = None
    probe_at: float | None = None

    @property
    def is_open(self) -> bool:
        return self.opened_at is not None


def admit(state: BreakerState, now: float, params: BreakerParams) -> tuple[bool, BreakerState]:
    """May a call go through now? Returns the decision and the next state."""
    if state.opened_at is None:
        return True, state
    if now - state.opened_at < params.reset_seconds:
        return False, state
    # Half-open: one probe at a time; a probe that never reported back is replaced after a while.
    if state.probe_at is not None and now - state.probe_at < params.reset_seconds:
        return False, state
    return True, replace(state, probe_at=now)


def succeeded(state: BreakerState) -> BreakerState:
    """A call reached the backend: close the circuit."""
    return state if state == _CLOSED else _CLOSED


def failed(state: BreakerState, now: float, params: BreakerParams) -> BreakerState:
    """A call could not reach the backend: count it; open (or re-open) the circuit if due."""
    failures = state.failures + 1
    if state.opened_at is not None or failures >= params.failure_threshold:
        return BreakerState(failures=failures, opened_at=now, probe_at=None)
    return BreakerState(failures=failures)


_CLOSED = BreakerState()


class CircuitBreaker:
    """Thread-safe holder of a :class:`BreakerState`.

    Args:
        params: thresholds.
        name: what is protected, for error messages.
        monotonic: time source (seconds); injectable for tests.
    """

    def __init__(
        self,
        params: BreakerParams | None = None,
        *,
        name: str = "backend",
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.params = params or BreakerParams()
        self.name = name
        self._monotonic = monotonic
        self._state = _CLOSED
        self._lock = threading.Lock()

    @property
    def state(self) -> BreakerState:
        return self._state

    def before_call(self) -> None:
        """Raise :class:`BackendUnavailableError` at once while the circuit is open."""
        with self._lock:
            ok, self._state = admit(self._state, self._monotonic(), self.params)
        if not ok:
            raise BackendUnavailableError(
                f"{self.name} is unavailable (circuit open after {self._state.failures} "
                f"consecutive failures; retrying every {self.params.reset_seconds:g}s)"
            )

    def record_success(self) -> None:
        if self._state is not _CLOSED:
            with self._lock:
                self._state = succeeded(self._state)

    def record_failure(self) -> None:
        with self._lock:
            self._state = failed(self._state, self._monotonic(), self.params)
