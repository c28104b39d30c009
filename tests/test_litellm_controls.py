"""semcache_litellm.controls: a request's s-maxage and Cache-Control header, as plain values."""

from __future__ import annotations

from typing import Any

import pytest

pytest.importorskip("litellm")

from semcache.models import Entry
from semcache_litellm.controls import (
    STALE,
    header_no_cache,
    max_age,
    stale_check,
    stored_at,
)

NOW = 1_700_000_000.0


def _entry(response: Any, created_at: float = NOW - 500) -> Entry:
    return Entry(
        id="1", scope_key="s", text_key="t", prompt="q", response=response, created_at=created_at
    )


@pytest.mark.parametrize(
    ("control", "expected"),
    [
        (None, None),
        ({}, None),
        ({"ttl": 60}, None),
        ({"s-maxage": 60}, 60.0),
        ({"s-max-age": 30}, 30.0),
        ({"s-maxage": 60, "s-max-age": 30}, 30.0),  # the strictest of LiteLLM's two spellings
        ({"s-maxage": "60"}, 0.0),  # LiteLLM cannot compare a string: it discards every answer
    ],
)
def test_max_age(control: Any, expected: float | None) -> None:
    assert max_age(control) == expected


def test_stored_at_prefers_litellms_timestamp() -> None:
    assert stored_at(_entry({"timestamp": NOW - 10, "response": {}})) == NOW - 10
    assert stored_at(_entry({"timestamp": None, "response": {}})) == NOW - 500
    assert stored_at(_entry("not a mapping")) == NOW - 500


def test_stale_check() -> None:
    assert stale_check(None) is None
    check = stale_check(60, now=lambda: NOW)
    assert check is not None
    assert check(_entry({"timestamp": NOW - 10, "response": {}})) is None
    assert check(_entry({"timestamp": NOW - 120, "response": {}})) == STALE
    assert check(_entry({"timestamp": NOW - 59.5, "response": {}})) == STALE  # within the slack


@pytest.mark.parametrize(
    ("headers", "allowed", "expected"),
    [
        ({"cache-control": "no-cache"}, None, True),
        ({"Cache-Control": "max-age=0, No-Cache"}, [], True),
        ({"cache-control": "no-store"}, None, False),
        ({"cache-control": "no-cache"}, ["no-store"], False),  # the key may not skip the cache
        ({"cache-control": "no-cache"}, ["no-cache"], True),
        ({}, None, False),
        (None, None, False),
    ],
)
def test_header_no_cache(headers: Any, allowed: Any, expected: bool) -> None:
    assert header_no_cache(headers, allowed) is expected
