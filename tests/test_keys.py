from __future__ import annotations

import pytest

from semcache import InvalidInputError, Scope
from semcache.keys import normalize_text, text_key


def test_normalize_text_folds_case_space_and_unicode() -> None:
    assert normalize_text("  Hello\t\nWORLD  ") == "hello world"
    assert normalize_text("ｆｕｌｌ width") == "full width"
    assert text_key("What is  RAG?") == text_key("what is rag?")
    assert text_key("what is rag?") == text_key("What is RAG")
    assert text_key("what is rag, really") != text_key("what is rag really")
    assert normalize_text("???") == "???"  # all punctuation: kept, never empty


def test_scope_key_is_stable_and_canonical() -> None:
    a = Scope(model="gpt-4o", params={"temperature": 0, "max_tokens": 100})
    b = Scope(model="gpt-4o", params={"max_tokens": 100, "temperature": 0.0})
    assert a.key() == b.key()
    assert len(a.key()) == 32


@pytest.mark.parametrize(
    "other",
    [
        Scope(model="gpt-4o-mini", params={"temperature": 0}),
        Scope(model="gpt-4o", params={"temperature": 0.2}),
        Scope(model="gpt-4o", params={"temperature": 0}, system="You are a pirate."),
        Scope(model="gpt-4o", params={"temperature": 0}, tools=[{"name": "search"}]),
        Scope(model="gpt-4o", params={"temperature": 0}, tenant="acme"),
        Scope(model="gpt-4o", params={"temperature": 0}, namespace="app2"),
    ],
)
def test_every_scope_field_partitions(other: Scope) -> None:
    base = Scope(model="gpt-4o", params={"temperature": 0})
    assert base.key() != other.key()


def test_scope_rejects_unhashable_values() -> None:
    with pytest.raises(InvalidInputError):
        Scope(params={"x": float("nan")}).key()
    with pytest.raises(InvalidInputError):
        Scope(params={"x": object()}).key()
