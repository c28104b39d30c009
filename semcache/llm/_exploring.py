"""Exploration in ``@cached`` (online learning from the LLM's own answers): the lookup's review
that sends an uncertain hit upstream, and the judging of the fresh answer against the stored one.

Whether a hit is explored is :func:`semcache.matching.explore.explore_target`, one pure decision
for the sync and async shells; the verdicts feed the cache's adaptive thresholds.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from semcache._failopen import FailOpen
from semcache.cache import SemanticCache
from semcache.llm._call import Call
from semcache.llm.responses import inspect_response
from semcache.matching.adaptive import AdaptiveThresholds
from semcache.matching.explore import AnswerCheck, AnswerMatch, Exploration, explore_target
from semcache.models import LookupResult

__all__ = ["Explorer"]

EXPLORE = "explore"  # the miss reason of an explored hit: the LLM answered it


class Explorer:
    """The exploration hooks of one decorated function; inert unless the cache has adaptive
    thresholds with an exploration band (and never for streams)."""

    def __init__(
        self,
        cache: SemanticCache,
        fo: FailOpen,
        *,
        stream: bool,
        decode: Callable[[Any], Any],
    ) -> None:
        self.cache = cache
        self.fo = fo
        self.decode = decode
        thresholds = cache.thresholds
        self.exploration: Exploration | None = (
            thresholds.exploration
            if isinstance(thresholds, AdaptiveThresholds)
            and not stream
            and thresholds.exploration.band > 0
            else None
        )
        self.answers: AnswerCheck = (
            self.exploration.check
            if self.exploration is not None and self.exploration.check is not None
            else AnswerMatch(embedder=cache.embedder)
        )

    def reviewer(self, call: Call) -> Callable[[LookupResult], LookupResult] | None:
        """With exploration on: the lookup's review, which may turn an uncertain hit into a miss
        (reason ``explore``) and note the entry to judge in ``call.explored``."""
        x = self.exploration
        if x is None:
            return None

        def review(result: LookupResult) -> LookupResult:
            shadow = self.cache.shadow
            target = explore_target(
                result, band=x.band, probability=x.probability, draw=x.draw(), shadow=shadow
            )
            if target is None:
                return result
            call.explored = target
            if shadow or result.entry is None:
                return result  # the call goes upstream anyway
            return replace(result, entry=None, tier=None, reason=EXPLORE)

        return review

    def judge(self, call: Call, response: Any) -> None:
        """Compare an explored call's fresh answer with the candidate's stored one, and learn
        from the verdict (blocking: the check may embed). A failure is recorded, never raised.

        An explored hit counts in ``explored`` (``explored_false`` if wrong); a shadow-mode
        would-be hit as shadow feedback; a judged near miss as feedback (it was not a hit)."""
        target, result, thresholds = call.explored, call.result, self.cache.thresholds
        if target is None or result is None or thresholds is None:
            return
        with self.fo.failures.trap(None, "lookup"):
            stored = inspect_response(self.decode(target.entry.response)).text
            verdict = bool(self.answers(inspect_response(response).text, stored))
            entry_id = target.entry.id
            if self.cache.shadow and result.shadow is not None:
                self.cache.feedback(result, verdict)
            elif result.reason == EXPLORE:
                self.cache._count("explored")
                if not verdict:
                    self.cache._count("explored_false")
                thresholds.feedback(entry_id, verdict)
            elif call.vector is not None:  # a near miss: never served, so note it first
                self.cache._count("feedback")
                thresholds.served(entry_id, call.vector, target.similarity)
                thresholds.feedback(entry_id, verdict)

    async def ajudge(self, call: Call, response: Any) -> None:
        """:meth:`judge` in a worker thread (the check may run an embedder)."""
        if call.explored is not None:
            await asyncio.to_thread(self.judge, call, response)
