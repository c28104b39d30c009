"""Chat calls that may get different answers get different scopes (issue #14, finding 10a)."""

from __future__ import annotations

from typing import Any

import pytest

from semcache import ChatRequest

Q = {"role": "user", "content": "What should I cook tonight?"}
SYS = {"role": "system", "content": "You are a chef."}
EARLIER = [
    {"role": "user", "content": "Hi"},
    {"role": "assistant", "content": "Hello! How can I help?"},
]


def scope_key(**kwargs: Any) -> str:
    request = ChatRequest()((), {"model": "m", **kwargs})
    assert request.bypass == ""
    return request.scope.key()


PAIRS = {
    "last message name": (
        {"messages": [SYS, {**Q, "name": "alice"}]},
        {"messages": [SYS, {**Q, "name": "bob"}]},
    ),
    "last message name vs none": (
        {"messages": [SYS, {**Q, "name": "alice"}]},
        {"messages": [SYS, Q]},
    ),
    "user=0 vs none": ({"messages": [Q], "user": 0}, {"messages": [Q]}),
    "user=False vs none": ({"messages": [Q], "user": False}, {"messages": [Q]}),
    "user=0 vs user=False": ({"messages": [Q], "user": 0}, {"messages": [Q], "user": False}),
    "one system message vs two with the same text": (
        {"messages": [{"role": "system", "content": "A\nB"}, Q]},
        {"messages": [{"role": "system", "content": "A"}, {"role": "system", "content": "B"}, Q]},
    ),
    "two system messages split differently": (
        {
            "messages": [
                {"role": "system", "content": "A\nB"},
                {"role": "system", "content": "C"},
                Q,
            ]
        },
        {
            "messages": [
                {"role": "system", "content": "A"},
                {"role": "system", "content": "B\nC"},
                Q,
            ]
        },
    ),
    "system message before vs after the earlier turns": (
        {"messages": [SYS, *EARLIER, Q]},
        {"messages": [*EARLIER, SYS, Q]},
    ),
    "system vs developer role": (
        {"messages": [SYS, *EARLIER, Q]},
        {"messages": [{**SYS, "role": "developer"}, *EARLIER, Q]},
    ),
}


@pytest.mark.parametrize(("a", "b"), PAIRS.values(), ids=PAIRS.keys())
def test_each_pair_gets_its_own_partition(a: dict[str, Any], b: dict[str, Any]) -> None:
    assert scope_key(**a) != scope_key(**b)


def test_equal_calls_still_share_a_partition() -> None:
    assert scope_key(messages=[SYS, Q]) == scope_key(messages=[SYS, Q], stream=True)
    assert scope_key(messages=[Q], user=None) == scope_key(messages=[Q])
    assert scope_key(messages=[Q], user="7") == scope_key(messages=[Q], user="7")
    # One leading system message keeps its plain text as the scope's system prompt.
    request = ChatRequest()((), {"model": "m", "messages": [SYS, Q]})
    assert request.scope.system == "You are a chef."
    assert "semcache.system" not in request.scope.params
