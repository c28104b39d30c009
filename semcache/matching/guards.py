"""Guards: cheap checks that veto a semantic hit the embedding cannot tell apart.

Sentence embeddings place "flights under 300 dollars" next to "flights under 500 dollars", and
"is it safe" next to "is it not safe". A :class:`LexicalGuard` compares the tokens that decide an
answer (numbers, negation) and refuses a candidate whose set differs from the query's. An
:class:`UnreadTextGuard` refuses a candidate that differs from the query only where the embedder
cannot see (:mod:`semcache.embedders.window`). :func:`default_guards` is both.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from semcache.embedders.window import TextWindow, text_window_of
from semcache.models import Candidate

if TYPE_CHECKING:
    from semcache.policy import Guard

__all__ = [
    "NEGATION_WORDS",
    "LexicalGuard",
    "UnreadTextGuard",
    "default_guards",
    "negations",
    "numbers",
]

#: Words (lower case, after splitting "n't") that flip a question's meaning.
NEGATION_WORDS = frozenset(
    {
        "not",
        "no",
        "never",
        "none",
        "nobody",
        "nothing",
        "neither",
        "nor",
        "nowhere",
        "without",
        "cannot",
        "n't",
    }
)

_NUMBER_WORDS = {
    "zero": "0",
    "two": "2",
    "three": "3",
    "four": "4",
    "five": "5",
    "six": "6",
    "seven": "7",
    "eight": "8",
    "nine": "9",
    "ten": "10",
    "eleven": "11",
    "twelve": "12",
    "twenty": "20",
    "hundred": "100",
    "thousand": "1000",
    "million": "1000000",
    "billion": "1000000000",
}
_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")
_WORD = re.compile(r"[a-z]+(?:'[a-z]+)?")


def numbers(text: str, *, words: bool = True) -> frozenset[str]:
    """The numbers in ``text``, normalised (``1,000`` -> ``1000``; with ``words``, two -> 2)."""
    found = {m.group().replace(",", "").rstrip(".") for m in _NUMBER.finditer(text)}
    found = {n.rstrip("0").rstrip(".") if "." in n else n for n in found}
    if words:
        found |= {_NUMBER_WORDS[w] for w in _WORD.findall(text.lower()) if w in _NUMBER_WORDS}
    return frozenset(found)


def negations(text: str) -> int:
    """How many negation words ``text`` has (``don't`` counts as one)."""
    count = 0
    for word in _WORD.findall(text.lower().replace("’", "'")):
        if word in NEGATION_WORDS or word.endswith("n't"):
            count += 1
    return count


@dataclass(frozen=True, slots=True, kw_only=True)
class LexicalGuard:
    """Veto a semantic hit whose answer-determining tokens differ from the query's.

    A :class:`semcache.policy.Guard`: pass it in ``SemanticCache(guards=[LexicalGuard()])``.

    Attributes:
        numbers: refuse when the sets of numbers differ (``"numbers"``).
        number_words: also read "two".."twelve", "hundred"... as numbers ("one" is left out:
            it is usually a pronoun, as in "which one").
        negation: refuse when one side is negated and the other is not (``"negation"``); compares
            the parity of negation words, so "not un-" double negatives are not special-cased.
    """

    numbers: bool = True
    number_words: bool = True
    negation: bool = True

    def __call__(self, query: str, candidate: Candidate) -> str | None:
        stored = candidate.entry.prompt
        if self.numbers and numbers(query, words=self.number_words) != numbers(
            stored, words=self.number_words
        ):
            return "numbers"
        if self.negation and negations(query) % 2 != negations(stored) % 2:
            return "negation"
        return None


@dataclass(frozen=True, slots=True)
class UnreadTextGuard:
    """Veto a semantic hit that differs from the query where the embedder cannot read.

    Text past the embedder's token window and characters it maps to its unknown token leave no
    trace in the vector, so "what is 🍕?" and "what is 🍣?" (or one long document followed by two
    different questions) meet at similarity 1.0. This guard refuses (``"unread_text"``) unless
    both prompts have the same unread parts (:class:`semcache.embedders.window.Unread`).
    """

    window: TextWindow

    def __call__(self, query: str, candidate: Candidate) -> str | None:
        if self.window.signature(query) != self.window.signature(candidate.entry.prompt):
            return "unread_text"
        return None


def default_guards(embedder: object) -> tuple[Guard, ...]:
    """What ``SemanticCache`` guards with unless told: a :class:`LexicalGuard`, and an
    :class:`UnreadTextGuard` when the embedder has a text window (the packaged embedders do)."""
    window = text_window_of(embedder)
    lexical: tuple[Guard, ...] = (LexicalGuard(),)
    return lexical if window is None else (*lexical, UnreadTextGuard(window))
