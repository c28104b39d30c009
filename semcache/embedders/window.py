"""What an embedder never reads: text past its token window, and characters it maps to [UNK].

A sentence embedder sees a text through its tokenizer. Anything past ``max_seq_length`` tokens is
cut off, and characters outside its vocabulary (emoji, many CJK characters) all become the one
unknown token. Two prompts that differ only there get the *same* vector, similarity 1.0: "what
is 🍕?" and "what is 🍣?", or one long document followed by two different questions.
:class:`TextWindow` says what that unread text is, so a guard can refuse such a hit
(:class:`semcache.matching.guards.UnreadTextGuard`).
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from semcache.errors import ConfigurationError

if TYPE_CHECKING:
    from pathlib import Path

    from tokenizers import Tokenizer

__all__ = ["TextWindow", "Unread", "WindowedEmbedder", "text_window_of"]

#: Texts whose signature a window remembers, by digest (a query meets several candidates): two
#: 16-byte digests each, about 0.5 MB in all whatever the texts' length (measured).
MEMO_SIZE = 2048


@dataclass(frozen=True, slots=True)
class Unread:
    """The parts of a text an embedder does not see.

    Attributes:
        unknown: the pieces of text the tokenizer maps to its unknown token, sorted.
        tail: the text past the token window, whitespace collapsed (``""`` when it all fits).
    """

    unknown: tuple[str, ...]
    tail: str


class TextWindow:
    """Reads a text as an embedder's fast tokenizer does, to tell what falls outside it.

    Args:
        tokenizer: a ``tokenizers.Tokenizer`` (copied; the copy truncates at ``max_tokens``).
        max_tokens: the embedder's window, special tokens included (``max_seq_length``).
    """

    def __init__(self, tokenizer: Tokenizer, max_tokens: int) -> None:
        from tokenizers import Tokenizer

        if max_tokens < 1:
            raise ConfigurationError(f"max_tokens must be >= 1, got {max_tokens}")
        unk = getattr(tokenizer.model, "unk_token", None)
        self._tokenizer = Tokenizer.from_str(tokenizer.to_str())
        self._tokenizer.no_padding()
        self._tokenizer.enable_truncation(max_tokens)
        self._unk_id = tokenizer.token_to_id(unk) if isinstance(unk, str) else None
        self.max_tokens = max_tokens
        self._memo: OrderedDict[bytes, bytes] = OrderedDict()
        self._lock = threading.Lock()

    @classmethod
    def from_file(cls, path: Path | str, max_tokens: int) -> TextWindow:
        """A window over a ``tokenizer.json`` file."""
        from tokenizers import Tokenizer

        return cls(Tokenizer.from_file(str(path)), max_tokens)

    def signature(self, text: str) -> bytes:
        """A digest of :meth:`unread`: equal for two texts exactly when their unread parts are
        (up to a 128-bit collision). Remembered for the last ``MEMO_SIZE`` texts."""
        key = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()
        with self._lock:
            found = self._memo.get(key)
            if found is not None:
                self._memo.move_to_end(key)
                return found
        unread = self.unread(text)
        parts = json.dumps([unread.unknown, unread.tail])  # unambiguous whatever the pieces hold
        value = hashlib.blake2b(parts.encode("utf-8", "surrogatepass"), digest_size=16).digest()
        with self._lock:
            self._memo[key] = value
            if len(self._memo) > MEMO_SIZE:
                self._memo.popitem(last=False)
        return value

    def unread(self, text: str) -> Unread:
        """What of ``text`` the embedder does not read."""
        encoding = self._tokenizer.encode(text)
        unknown: list[str] = []
        end = 0
        for token_id, (start, stop), special in zip(
            encoding.ids, encoding.offsets, encoding.special_tokens_mask, strict=True
        ):
            if special:
                continue
            end = max(end, stop)
            if token_id == self._unk_id:
                unknown.append(text[start:stop])
        tail = " ".join(text[end:].split()) if encoding.overflowing else ""
        return Unread(tuple(sorted(unknown)), tail)

    def __repr__(self) -> str:
        return f"TextWindow(max_tokens={self.max_tokens})"


@runtime_checkable
class WindowedEmbedder(Protocol):
    """An embedder that can say what of a text it reads (``None``: it cannot tell)."""

    @property
    def text_window(self) -> TextWindow | None: ...


def text_window_of(embedder: object) -> TextWindow | None:
    """The embedder's :class:`TextWindow`, or ``None`` when it has none."""
    return embedder.text_window if isinstance(embedder, WindowedEmbedder) else None
