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


def _nested(depth: int) -> dict[str, object]:
    value: dict[str, object] = {}
    for _ in range(depth):
        value = {"x": value}
    return value


def test_values_that_cannot_be_keyed_are_invalid_input() -> None:
    """Hostile params are refused as input (a bypass), never a RecursionError or ValueError."""
    circular: dict[str, object] = {}
    circular["self"] = circular
    for bad in (_nested(5_000), circular, 10**5000):
        with pytest.raises(InvalidInputError):
            Scope(params={"p": bad}).key()


def test_numbers_are_not_folded_into_other_numbers() -> None:
    """Compatibility folding keeps full-width letters equal but never makes 10³ equal 103."""
    assert normalize_text("Ｈｅｌｌｏ") == normalize_text("hello")
    for a, b in (("10³", "103"), ("½ cup", "12 cup"), ("H₂O", "H2O"), ("Ⅻ", "XII")):
        assert text_key(a) != text_key(b), (a, b)
    assert text_key("a lone \ud83d surrogate")  # any str hashes
