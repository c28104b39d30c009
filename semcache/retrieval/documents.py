"""Documents, their chunks and scored results. Every document carries a content hash."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from semcache.errors import InvalidInputError
from semcache.keys import canonical_json

__all__ = ["Chunk", "Document", "ScoredChunk", "content_hash"]


def content_hash(*parts: str) -> str:
    """A 128-bit hex digest of text parts (length-prefixed, so ``("ab", "c") != ("a", "bc")``)."""
    h = hashlib.blake2b(digest_size=16)
    for part in parts:
        data = part.encode("utf-8")
        h.update(len(data).to_bytes(8, "big"))
        h.update(data)
    return h.hexdigest()


@dataclass(frozen=True, slots=True, kw_only=True)
class Document:
    """A source document: an id, its text, an optional title and JSON metadata.

    ``hash`` covers the title, the text and the metadata, so any change re-indexes the document.
    """

    id: str
    text: str
    title: str = ""
    metadata: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.id, str) or not self.id:
            raise InvalidInputError(f"a document id must be a non-empty string, got {self.id!r}")
        if not isinstance(self.text, str) or not isinstance(self.title, str):
            raise InvalidInputError(f"document {self.id!r}: text and title must be strings")

    @property
    def hash(self) -> str:
        return content_hash(self.title, self.text, canonical_json(dict(self.metadata)))


@dataclass(frozen=True, slots=True, kw_only=True)
class Chunk:
    """A piece of a document, the unit that is embedded, indexed and retrieved.

    Attributes:
        id: ``"<doc_id>#<index>"``.
        doc_id: the document it came from.
        index: its position in the document (0-based).
        text: the chunk's own text.
        title: the document's title, indexed with every chunk as a header.
        doc_hash: the content hash of the document version it was cut from.
        metadata: the document's metadata.
    """

    id: str
    doc_id: str
    index: int
    text: str
    title: str = ""
    doc_hash: str = ""
    metadata: Mapping[str, Any] = field(default_factory=dict)

    @property
    def hash(self) -> str:
        """The content hash of what is indexed (title header and text)."""
        return content_hash(self.title, self.text)

    @property
    def indexed_text(self) -> str:
        """What the embedder and BM25 see: the title as a header line, then the text."""
        return f"{self.title}\n{self.text}" if self.title else self.text

    @staticmethod
    def make_id(doc_id: str, index: int) -> str:
        return f"{doc_id}#{index}"


@dataclass(frozen=True, slots=True)
class ScoredChunk:
    """A retrieved chunk and its score (higher is better; the unit depends on the retriever)."""

    chunk: Chunk
    score: float
