"""A recursive, token-aware text splitter: paragraphs, then lines, sentences, words.

Text is cut at the coarsest boundary that makes every piece fit, then pieces are packed greedily
into chunks of at most ``max_tokens``; consecutive chunks share up to ``overlap_tokens`` of
trailing pieces. Token counts come from the embedder's own tokenizer when there is one.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from semcache.errors import ConfigurationError
from semcache.retrieval.documents import Chunk, Document

__all__ = [
    "ChunkingConfig",
    "RecursiveSplitter",
    "TokenCounter",
    "count_words",
    "tokenizer_counter",
]

TokenCounter = Callable[[str], int]
"""Returns how many tokens a text has."""

_WORD = re.compile(r"\S+")
# Boundaries from coarse to fine, as zero-width splits: joining the pieces gives the text back.
_BOUNDARIES: tuple[re.Pattern[str], ...] = (
    re.compile(r"(?<=\n\n)"),  # paragraphs
    re.compile(r"(?<=\n)"),  # lines
    re.compile(r"(?<=[.!?;:])(?=\s)"),  # sentences (and clauses)
    re.compile(r"(?<=\s)(?=\S)"),  # words
)


def count_words(text: str) -> int:
    """A tokenizer-free counter: whitespace-separated words."""
    return len(_WORD.findall(text))


def tokenizer_counter(tokenizer: Any) -> TokenCounter:
    """A counter over a Hugging Face tokenizer (special tokens not counted)."""

    def count(text: str) -> int:
        return len(tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"])

    return count


@dataclass(frozen=True, slots=True, kw_only=True)
class ChunkingConfig:
    """Chunk size and overlap, in tokens of the counter in use.

    Attributes:
        max_tokens: the largest chunk (the title header included).
        overlap_tokens: how much of a chunk's tail the next chunk repeats; 15% of
            ``max_tokens`` if ``None``.
    """

    max_tokens: int = 400
    overlap_tokens: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.max_tokens, int) or self.max_tokens < 16:
            raise ConfigurationError(f"max_tokens must be an int >= 16, got {self.max_tokens!r}")
        if self.overlap_tokens is None:
            object.__setattr__(self, "overlap_tokens", round(0.15 * self.max_tokens))
        if not isinstance(self.overlap_tokens, int) or not (
            0 <= self.overlap_tokens <= self.max_tokens // 2
        ):
            raise ConfigurationError(
                f"overlap_tokens must be in [0, max_tokens // 2 = {self.max_tokens // 2}], "
                f"got {self.overlap_tokens!r}"
            )

    @property
    def overlap(self) -> int:
        """``overlap_tokens`` as resolved at construction."""
        return int(self.overlap_tokens or 0)

    def fit(self, window: int) -> ChunkingConfig:
        """This config shrunk to a model window (overlap kept in proportion), if it is larger."""
        if self.max_tokens <= window:
            return self
        overlap = round(self.overlap * window / self.max_tokens)
        return ChunkingConfig(max_tokens=window, overlap_tokens=overlap)


class RecursiveSplitter:
    """Cuts documents into :class:`Chunk` s.

    Args:
        config: chunk size and overlap.
        count: the token counter; whitespace words by default.
    """

    def __init__(self, config: ChunkingConfig | None = None, count: TokenCounter = count_words):
        self.config = config or ChunkingConfig()
        self._count = count

    @classmethod
    def for_embedder(
        cls, embedder: object, config: ChunkingConfig | None = None
    ) -> RecursiveSplitter:
        """Count with the embedder's tokenizer and never exceed its input window.

        Works with :class:`~semcache.SentenceTransformerEmbedder` (``.model.tokenizer`` and
        ``.model.max_seq_length``); other embedders fall back to counting words.
        """
        config = config or ChunkingConfig()
        model = getattr(embedder, "model", None)
        tokenizer = getattr(model, "tokenizer", None)
        if tokenizer is None:
            return cls(config)
        window = getattr(model, "max_seq_length", None)
        if isinstance(window, int) and window > 18:
            config = config.fit(window - 2)  # [CLS] and [SEP]
        return cls(config, tokenizer_counter(tokenizer))

    def split(self, text: str, budget: int | None = None) -> list[str]:
        """The chunk texts of ``text``, each at most ``budget`` (default ``max_tokens``) tokens."""
        limit = max(8, budget if budget is not None else self.config.max_tokens)
        if not text.strip():
            return []
        total = self._count(text)
        if total <= limit:
            return [text.strip()]
        pieces = self._pieces(text, limit, 0)
        return _pack(pieces, limit, min(self.config.overlap, limit // 2))

    def chunk(self, doc: Document) -> list[Chunk]:
        """The chunks of one document; the title is a header counted in every chunk's budget."""
        header = self._count(doc.title) + 1 if doc.title else 0
        texts = self.split(doc.text, self.config.max_tokens - header)
        if not texts and doc.title:
            texts = [""]  # a title-only document is still findable
        doc_hash = doc.hash
        return [
            Chunk(
                id=Chunk.make_id(doc.id, i),
                doc_id=doc.id,
                index=i,
                text=text,
                title=doc.title,
                doc_hash=doc_hash,
                metadata=dict(doc.metadata),
            )
            for i, text in enumerate(texts)
        ]

    def _pieces(self, text: str, limit: int, level: int) -> list[tuple[str, int]]:
        """Split ``text`` at the coarsest boundary that helps; each piece with its token count."""
        if level >= len(_BOUNDARIES):
            return _hard_split(text, limit, self._count)
        parts = [p for p in _BOUNDARIES[level].split(text) if p]
        if len(parts) <= 1:
            return self._pieces(text, limit, level + 1)
        out: list[tuple[str, int]] = []
        for part in parts:
            n = self._count(part)
            if n <= limit:
                out.append((part, n))
            else:
                out.extend(self._pieces(part, limit, level + 1))
        return out


def _hard_split(text: str, limit: int, count: TokenCounter) -> list[tuple[str, int]]:
    """Cut a boundary-free run of text into character windows that fit."""
    out: list[tuple[str, int]] = []
    rest = text
    while rest:
        n = count(rest)
        if n <= limit:
            out.append((rest, n))
            break
        size = max(1, math.floor(len(rest) * limit / n))
        while size > 1 and count(rest[:size]) > limit:
            size = max(1, size * 3 // 4)
        head, rest = rest[:size], rest[size:]
        out.append((head, count(head)))
    return out


def _pack(pieces: Sequence[tuple[str, int]], limit: int, overlap: int) -> list[str]:
    """Greedily join pieces into chunks of at most ``limit`` tokens, overlapping by ``overlap``."""
    chunks: list[str] = []
    window: list[tuple[str, int]] = []
    size = 0
    fresh = False  # the window holds a piece not yet in any chunk
    for piece in pieces:
        n = piece[1]
        if window and fresh and size + n > limit:
            chunks.append("".join(p for p, _ in window).strip())
            fresh = False
        # Keep the longest tail that fits the overlap and leaves room for the new piece.
        while window and (size + n > limit or (not fresh and size > overlap)):
            size -= window.pop(0)[1]
        window.append(piece)
        size += n
        fresh = True
    if window and fresh:
        chunks.append("".join(p for p, _ in window).strip())
    return [c for c in chunks if c]
