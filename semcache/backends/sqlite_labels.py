"""The embedded backend's label columns: their migration, encoding and selector queries.

Pure SQL text and values (the backend runs them). Each label column is added to an older store
in place, one ``ALTER TABLE ... ADD COLUMN`` per missing column, so opening a store twice, or
one another version already migrated, is harmless.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from semcache.backends import sqlite_io
from semcache.errors import CorruptEntryError

if TYPE_CHECKING:
    from semcache.models import NewEntry
    from semcache.selector import Selector

__all__ = ["COLUMNS", "INDEXES", "NAMES", "decode_tags", "values", "where"]

#: Each label column and its definition; rows stored before a column existed get its default.
COLUMNS: dict[str, str] = {
    "tenant": "TEXT NOT NULL DEFAULT ''",
    "model": "TEXT NOT NULL DEFAULT ''",
    "namespace": "TEXT NOT NULL DEFAULT ''",
    "tags": "TEXT NOT NULL DEFAULT '[]'",  # a JSON array of strings
}
#: The label columns in the order :func:`values` gives them.
NAMES = tuple(COLUMNS)
#: Indexes created once the columns exist: deleting or listing a tenant does not scan the store.
INDEXES = (
    "CREATE INDEX IF NOT EXISTS entries_tenant ON entries (tenant)",
    "CREATE INDEX IF NOT EXISTS entries_model ON entries (model)",
)


def values(entry: NewEntry) -> tuple[str, str, str, str]:
    """The label columns of ``entry``; refuses text SQLite cannot store."""
    for name in ("tenant", "model", "namespace"):
        sqlite_io.check_text(getattr(entry, name), f"the {name}")
    return entry.tenant, entry.model, entry.namespace, json.dumps(list(entry.tags))


def decode_tags(entry_id: object, text: str) -> tuple[str, ...]:
    """The tags column of a row, or :class:`CorruptEntryError`."""
    try:
        tags = json.loads(text)
    except (json.JSONDecodeError, TypeError) as e:
        raise CorruptEntryError(
            f"entry {entry_id} has unreadable tags: {e}", entry_id=str(entry_id)
        ) from e
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        raise CorruptEntryError(f"entry {entry_id} has tags {tags!r}", entry_id=str(entry_id))
    return tuple(tags)


def where(selector: Selector) -> tuple[str, list[Any]]:
    """A ``WHERE`` condition and its parameters matching exactly what ``selector`` matches."""
    terms: list[str] = []
    params: list[Any] = []
    for column, value in (
        ("scope_key", selector.scope),
        ("tenant", selector.tenant),
        ("model", selector.model),
        ("namespace", selector.namespace),
    ):
        if value is not None:
            terms.append(f"{column} = ?")
            params.append(value)
    if selector.tag is not None:
        terms.append("EXISTS (SELECT 1 FROM json_each(entries.tags) WHERE json_each.value = ?)")
        params.append(selector.tag)
    return " AND ".join(terms) or "1", params
