"""A request's cache controls as semcache decides them. Pure functions, shared by sync and async.

LiteLLM reads ``cache: {"s-maxage": N}`` itself, but only after the cache has answered: an
entry it then finds too old was already counted (and reported) as a hit. So semcache decides
age in the lookup, from the same stored timestamp LiteLLM compares.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

from semcache.models import Entry

__all__ = ["STALE", "header_no_cache", "max_age", "stale_check", "stored_at"]

#: The miss reason of an entry older than the request's ``s-maxage``.
STALE = "stale"

# LiteLLM checks the age again a moment after the lookup: an entry this close to the limit is
# already stale, so LiteLLM never discards an answer semcache counted as a hit.
_SLACK = 1.0


def max_age(control: object) -> float | None:
    """The strictest of ``s-maxage`` and ``s-max-age`` (LiteLLM reads either), ``None`` if
    neither is set. A value that is not a number makes LiteLLM discard every answer: ``0``."""
    if not isinstance(control, Mapping):
        return None
    ages: list[float] = []
    for name in ("s-maxage", "s-max-age"):
        value = control.get(name)
        if value is None:
            continue
        ages.append(float(value) if isinstance(value, int | float) else 0.0)
    return min(ages, default=None)


def stored_at(entry: Entry) -> float:
    """When the answer was stored: LiteLLM's ``timestamp`` in the value, else ``created_at``."""
    value = entry.response
    stamp = value.get("timestamp") if isinstance(value, Mapping) else None
    if isinstance(stamp, int | float) and not isinstance(stamp, bool):
        return float(stamp)
    return entry.created_at


def stale_check(
    age_limit: float | None, now: Callable[[], float] = time.time
) -> Callable[[Entry], str | None] | None:
    """The ``check`` that refuses an entry older than ``age_limit`` seconds (``None``: none)."""
    if age_limit is None:
        return None

    def check(entry: Entry) -> str | None:
        return STALE if now() - stored_at(entry) > age_limit - _SLACK else None

    return check


def header_no_cache(headers: object, allowed_controls: object) -> bool:
    """Whether an HTTP ``Cache-Control`` request header says ``no-cache``, and the API key may
    use that control (LiteLLM's ``allowed_cache_controls``: empty or unset allows all)."""
    if not isinstance(headers, Mapping):
        return False
    value = next((v for k, v in headers.items() if str(k).lower() == "cache-control"), None)
    if not isinstance(value, str):
        return False
    directives = {part.strip().split("=", 1)[0].lower() for part in value.split(",")}
    if "no-cache" not in directives:
        return False
    allowed: Any = allowed_controls
    return not (isinstance(allowed, list) and allowed and "no-cache" not in allowed)
