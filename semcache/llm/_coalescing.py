"""Request coalescing in ``@cached``: a call leads or follows a near-identical call in flight,
and a leader releases its followers when it is done (the flights: :mod:`semcache.llm.coalesce`).

A follower waits for the leader, then looks itself up again: it is served only if the cache now
answers it (threshold, per-call override, adaptive threshold, guards, verifier and shadow mode
all decide, as for any hit), else it calls upstream.
"""

from __future__ import annotations

from typing import Any

from semcache._failopen import MISSING, Lookup, Trap
from semcache.llm._call import Call
from semcache.llm._steps import Steps
from semcache.llm.coalesce import Flight, Flights
from semcache.models import Candidate, Entry, Outcome
from semcache.policy import guard_veto

__all__ = ["Coalescing"]


class Coalescing:
    """Lead, follow and release for the calls of one decorated function."""

    def __init__(self, steps: Steps, *, enabled: bool, timeout: float) -> None:
        self.steps = steps
        self.cache = steps.cache
        self.fo = steps.fo
        self.tel = steps.cache.telemetry
        self.enabled = enabled
        self.timeout = timeout  # seconds a follower waits before calling upstream itself
        self.flights = Flights()

    def lead(self, call: Call) -> Flight | None:
        """Join the in-flight calls. Returns a flight to wait for, or ``None`` if we lead.

        Shadow mode never coalesces (it promises every call reaches the LLM), nor does a call
        whose lookup failed (the cache could not decide for it), nor an explored call (it must
        reach the LLM).
        """
        if not self.enabled or self.cache.shadow or call.failed or call.explored is not None:
            return None
        flight, leader = self.flights.join(
            call.query.scope_key,
            call.query.text,
            call.query.text_key,
            call.vector,
            call.threshold,
            accept=lambda text, similarity: self.may_follow(call, text, similarity),
        )
        if leader:
            call.flight = flight
            return None
        return flight

    def may_follow(self, call: Call, text: str, similarity: float) -> bool:
        """Whether the cache's guards would let an answer to ``text`` serve this call.

        A cheap first look, so a call the guards would refuse ("16 percent" behind "15 percent")
        does not wait for nothing; the follower's own lookup after the wait still decides. A
        guard that fails here says yes (the lookup will record it).
        """
        leader = Entry(
            id="",
            scope_key=call.query.scope_key,
            text_key="",
            prompt=text,
            response=None,
            created_at=0.0,
        )
        with Trap(None, None, "lookup"):
            return (
                guard_veto(call.query.text, Candidate(leader, similarity), self.cache.guards)
                is None
            )
        return True

    def refind(self, call: Call) -> Any:
        """After the leader stored its answer: the follower's hit, decoded, else ``MISSING``."""
        found = self.fo.find(
            call.query, min_similarity=call.threshold, vector=call.vector, count=False
        )
        return self._followed(call, found, self.fo.decode(found.result, self.steps.decode))

    async def arefind(self, call: Call) -> Any:
        """:meth:`refind`, awaiting the cache."""
        found = await self.fo.afind(
            call.query, min_similarity=call.threshold, vector=call.vector, count=False
        )
        return self._followed(call, found, await self.fo.adecode(found.result, self.steps.decode))

    def _followed(self, call: Call, found: Lookup, value: Any) -> Any:
        """Count a served follower as ``coalesced`` (its first lookup counted the miss)."""
        if found.result is None:  # the second lookup failed (recorded): call upstream
            call.failed = True
            return MISSING
        call.result = found.result
        if value is not MISSING:
            self.cache._count("coalesced")
            self.tel.record_coalesced()
            self.steps.report(Outcome.COALESCED, call)
        elif found.result.entry is not None:
            call.failed = True  # the entry did not decode
        return value

    def release(self, call: Call, stored: Any) -> None:
        """Report the miss and let followers go, telling them whether an answer was stored."""
        self.steps.report(Outcome.MISS, call)
        if call.flight is None:
            return
        self.flights.land(call.query.scope_key, call.flight)
        call.flight.finish(stored=stored is not MISSING)
