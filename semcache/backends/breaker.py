"""A circuit breaker, so an unreachable or slow backend costs microseconds per request.

The decisions are pure functions over an immutable :class:`BreakerState`; :class:`CircuitBreaker`
holds the state behind a lock and is what sync and async backends share.

States: *closed* (calls pass; consecutive failures are counted), *open* (calls are refused at once
for ``reset_seconds``), *half-open* (one probe call passes; success closes, failure re-opens).
A call that answers but takes longer than ``slow_call_seconds`` is a failure too, so a backend
that is slow rather than down opens the circuit as well.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

from semcache.errors import BackendUnavailableError, ConfigurationError

__all__ = [
    "DEFAULT_SLOW_CALL_SECONDS",
    "BreakerParams",
    "BreakerState",
    "CircuitBreaker",
    "abandoned",
    "admit",
    "failed",
    "finished",
    "is_slow",
    "succeeded",
]

#: A call slower than this counts as a failure: ~100x a healthy Redis command on a LAN, and
#: under half the default lookup budget (a lookup makes two or three commands).
DEFAULT_SLOW_CALL_SECONDS = 0.1


@dataclass(frozen=True, slots=True, kw_only=True)
class BreakerParams:
    """When the circuit opens and how long it stays open.

    Attributes:
        failure_threshold: consecutive failures (connection errors, timeouts, slow calls) that
            open the circuit.
        reset_seconds: how long an open circuit refuses calls before letting one probe through.
        slow_call_seconds: a call that answers after longer than this counts as a failure;
            ``None``: only errors count. Keep it under the connection's socket timeout (past
            which a call fails anyway) and under a lookup's budget.
    """

    failure_threshold: int = 3
    reset_seconds: float = 1.0
    slow_call_seconds: float | None = DEFAULT_SLOW_CALL_SECONDS

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
        slow = self.slow_call_seconds
        if slow is not None and not (
            isinstance(slow, int | float)
            and not isinstance(slow, bool)
            and math.isfinite(slow)
            and 0 < slow <= 3600
        ):
            raise ConfigurationError(
                f"BreakerParams.slow_call_seconds must be in (0, 3600] or None, got {slow!r}"
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


def is_slow(duration: float, params: BreakerParams) -> bool:
    """Whether a call that took ``duration`` seconds was too slow."""
    return params.slow_call_seconds is not None and duration > params.slow_call_seconds


def finished(
    state: BreakerState, now: float, duration: float, params: BreakerParams
) -> BreakerState:
    """A call reached the backend in ``duration`` seconds: a success, or a failure if slow."""
    return failed(state, now, params) if is_slow(duration, params) else succeeded(state)


def abandoned(
    state: BreakerState, now: float, duration: float, params: BreakerParams
) -> BreakerState:
    """A call was given up (cancelled) after ``duration`` seconds, before it answered: a failure
    if it was already slow, else no news."""
    return failed(state, now, params) if is_slow(duration, params) else state


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
        self.openings = 0  # times the circuit went from closed to open

    @property
    def state(self) -> BreakerState:
        return self._state

    def before_call(self) -> float:
        """Raise :class:`BackendUnavailableError` at once while the circuit is open; else return
        the call's start time, for :meth:`record_success` and :meth:`record_abandoned`."""
        now = self._monotonic()
        with self._lock:
            ok, self._state = admit(self._state, now, self.params)
        if not ok:
            raise BackendUnavailableError(
                f"{self.name} is unavailable (circuit open after {self._state.failures} "
                f"consecutive failed or slow calls; retrying every "
                f"{self.params.reset_seconds:g}s)"
            )
        return now

    def record_success(self, started: float | None = None) -> None:
        """The call answered; if it started at ``started`` (from :meth:`before_call`) and was
        slow, it counts as a failure."""
        now = self._monotonic()
        duration = 0.0 if started is None else now - started
        if self._state is _CLOSED and not is_slow(duration, self.params):
            return  # the common case: no lock
        self._update(lambda s: finished(s, now, duration, self.params))

    def record_failure(self) -> None:
        now = self._monotonic()
        self._update(lambda s: failed(s, now, self.params))

    def record_abandoned(self, started: float) -> None:
        """The call started at ``started`` was given up before it answered (cancelled)."""
        now = self._monotonic()
        self._update(lambda s: abandoned(s, now, now - started, self.params))

    def _update(self, step: Callable[[BreakerState], BreakerState]) -> None:
        with self._lock:
            old, self._state = self._state, step(self._state)
            if old.opened_at is None and self._state.opened_at is not None:
                self.openings += 1
