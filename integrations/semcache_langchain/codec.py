"""LangChain generations and documents to JSON and back (never pickle)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from langchain_core.documents import Document
from langchain_core.messages import message_to_dict, messages_from_dict
from langchain_core.outputs import ChatGeneration, Generation

from semcache.errors import CorruptEntryError
from semcache.llm.responses import JsonCodec

__all__ = [
    "documents_from_json",
    "documents_to_json",
    "generations_from_json",
    "generations_to_json",
]

_JSON = JsonCodec()


def generations_to_json(generations: Sequence[Generation]) -> list[dict[str, Any]]:
    """Raises :class:`semcache.NotCacheableError` when ``generation_info`` is not JSON."""
    out: list[dict[str, Any]] = []
    for gen in generations:
        item: dict[str, Any] = {"generation_info": _JSON.encode(gen.generation_info)}
        if isinstance(gen, ChatGeneration):
            item["message"] = _JSON.encode(message_to_dict(gen.message))
        else:
            item["text"] = gen.text
        out.append(item)
    return out


def generations_from_json(data: Any) -> list[Generation]:
    """Raises :class:`semcache.CorruptEntryError` on anything :func:`generations_to_json` did
    not write."""
    if not isinstance(data, list):
        raise CorruptEntryError(f"stored generations are a {type(data).__name__}, not a list")
    out: list[Generation] = []
    try:
        for item in data:
            info = item.get("generation_info")
            if "message" in item:
                message = messages_from_dict([item["message"]])[0]
                out.append(ChatGeneration(message=message, generation_info=info))
            else:
                out.append(Generation(text=item["text"], generation_info=info))
    except (AttributeError, KeyError, TypeError, ValueError) as e:
        raise CorruptEntryError(f"stored generations cannot be decoded: {e}") from e
    return out


def documents_to_json(documents: Sequence[Document]) -> list[dict[str, Any]]:
    """Raises :class:`semcache.NotCacheableError` when a document's metadata is not JSON."""
    return [
        {"page_content": d.page_content, "metadata": _JSON.encode(d.metadata), "id": d.id}
        for d in documents
    ]


def documents_from_json(data: Any) -> list[Document]:
    if not isinstance(data, list):
        raise CorruptEntryError(f"stored documents are a {type(data).__name__}, not a list")
    try:
        return [
            Document(page_content=d["page_content"], metadata=d["metadata"], id=d.get("id"))
            for d in data
        ]
    except (AttributeError, KeyError, TypeError, ValueError) as e:
        raise CorruptEntryError(f"stored documents cannot be decoded: {e}") from e
