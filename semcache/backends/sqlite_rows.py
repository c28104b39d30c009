"""The entry table of the embedded store: its schema, its columns and SQL, and rows to and
from :class:`~semcache.models.Entry` (used by :mod:`semcache.backends.embedded`)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from semcache.backends import sqlite_io, sqlite_labels
from semcache.backends.base import encode_json
from semcache.errors import CorruptEntryError
from semcache.models import Entry, NewEntry

if TYPE_CHECKING:
    import sqlite3

    from numpy.typing import NDArray

__all__ = [
    "CHUNK",
    "COLUMNS",
    "EVICTION_COLUMNS",
    "EVICTION_INDEX",
    "FORMAT",
    "LABELS",
    "RANK",
    "ROW_REF",
    "SCHEMA",
    "SIZE",
    "VICTIMS",
    "SqliteVectors",
    "batch_bytes",
    "by_scope",
    "encode",
    "entry_bytes",
    "row_id",
    "row_to_entry",
    "unpack",
]

FORMAT = 1
SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS entries (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    scope_key TEXT NOT NULL,
    text_key TEXT NOT NULL,
    prompt TEXT NOT NULL,
    response TEXT NOT NULL,
    metadata TEXT NOT NULL,
    created_at REAL NOT NULL,
    expires_at REAL,
    last_access REAL NOT NULL,
    vector BLOB NOT NULL,
    UNIQUE (scope_key, text_key)
);
CREATE INDEX IF NOT EXISTS entries_lru ON entries (last_access);
CREATE INDEX IF NOT EXISTS entries_expiry ON entries (expires_at) WHERE expires_at IS NOT NULL;
"""
#: Added to stores written before cost-aware eviction, one ``ADD COLUMN`` each (idempotent):
#: uses so far, tokens a hit saves, and the policy's rank (lowest evicted first).
EVICTION_COLUMNS = {"hits": "INTEGER NOT NULL DEFAULT 1", "cost": "REAL", "priority": "REAL"}
EVICTION_INDEX = "CREATE INDEX IF NOT EXISTS entries_priority ON entries (priority, id)"
COLUMNS = (
    "id, scope_key, text_key, prompt, response, metadata, created_at, expires_at, "
    + ", ".join(sqlite_labels.NAMES)
)
#: The bytes an entry takes in the store, counted against ``max_bytes`` (as :func:`entry_bytes`).
SIZE = (
    "length(CAST(scope_key AS BLOB)) + length(CAST(text_key AS BLOB)) + "
    "length(CAST(prompt AS BLOB)) + length(CAST(response AS BLOB)) + "
    "length(CAST(metadata AS BLOB)) + length(vector)"
)
LABELS = ", ".join(sqlite_labels.NAMES)
#: What ``LocalBackend._delete_rows`` (embedded.py) takes: id, scope key and size.
ROW_REF = f"id, scope_key, {SIZE}"
#: The entries to evict first (:data:`ROW_REF` and the priority), in the policy's order.
VICTIMS = f"SELECT {ROW_REF}, priority FROM entries ORDER BY priority, id LIMIT ?"
#: The priority of every entry (``?``: the clock), recomputed when the policy changes.
RANK = (
    "UPDATE entries SET cost = coalesce(cost, semcache_cost(prompt, response, metadata)), "
    "priority = semcache_priority(?, hits, "
    f"coalesce(cost, semcache_cost(prompt, response, metadata)), {SIZE}, last_access)"
)


def row_id(entry_id: str) -> int | None:
    """The SQLite row id of an entry id, or ``None`` for an id this backend never issued."""
    try:
        return int(entry_id)
    except (TypeError, ValueError):
        return None


def encode(entry: NewEntry) -> tuple[str, str]:
    """The response and metadata columns of ``entry``; refuses text SQLite cannot store."""
    sqlite_io.check_text(entry.prompt, "the prompt")
    sqlite_io.check_text(entry.scope_key, "the scope key")
    sqlite_io.check_text(entry.text_key, "the text key")
    return (
        encode_json(entry.response, "the response"),
        encode_json(dict(entry.metadata), "the metadata"),
    )


def entry_bytes(entry: NewEntry, encoded: tuple[str, str], vector_bytes: int) -> int:
    """The bytes ``entry`` takes in the store (its text as UTF-8, JSON columns and vector)."""
    texts = (entry.scope_key, entry.text_key, entry.prompt, *encoded)
    return sum(len(t.encode("utf-8")) for t in texts) + vector_bytes


def batch_bytes(entries: Sequence[NewEntry], sizes: Sequence[int]) -> int:
    """The bytes a batch adds: an entry replaced by a later one in the batch counts once."""
    last = {(e.scope_key, e.text_key): size for e, size in zip(entries, sizes, strict=True)}
    return sum(last.values())


def by_scope(pairs: Iterable[tuple[int, str]]) -> dict[str, list[int]]:
    """(id, scope) pairs grouped by scope."""
    out: dict[str, list[int]] = {}
    for entry_id, scope in pairs:
        out.setdefault(scope, []).append(entry_id)
    return out


class SqliteVectors:
    """The vectors in the entry store, read back for the scoped indexes."""

    __slots__ = ("_db",)

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def scope_ids(self, scope_key: str) -> set[int]:
        rows = self._db.execute("SELECT id FROM entries WHERE scope_key = ?", (scope_key,))
        return {int(r[0]) for r in rows}

    def scope_vectors(
        self, scope_key: str, ids: list[int] | None = None
    ) -> Iterator[tuple[NDArray[np.int64], NDArray[np.float32]]]:
        if ids is None:
            cursor = self._db.execute(
                "SELECT id, vector FROM entries WHERE scope_key = ?", (scope_key,)
            )
            while rows := cursor.fetchmany(CHUNK):
                yield unpack(rows)
            return
        for at in range(0, len(ids), CHUNK):
            chunk = ids[at : at + CHUNK]
            marks = ",".join("?" * len(chunk))
            rows = self._db.execute(
                f"SELECT id, vector FROM entries WHERE id IN ({marks})", chunk
            ).fetchall()
            if rows:
                yield unpack(rows)


CHUNK = 10_000


def unpack(rows: list[Any]) -> tuple[NDArray[np.int64], NDArray[np.float32]]:
    labels = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
    vectors = np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float32)
    return labels, vectors.reshape(len(rows), -1)


def row_to_entry(row: tuple[Any, ...]) -> Entry:
    try:
        response = json.loads(row[4])
        metadata = json.loads(row[5])
    except (json.JSONDecodeError, TypeError) as e:
        raise CorruptEntryError(
            f"entry {row[0]} cannot be decoded: {e}", entry_id=str(row[0])
        ) from e
    if not isinstance(metadata, dict):
        raise CorruptEntryError(
            f"entry {row[0]} has metadata of type {type(metadata).__name__}", entry_id=str(row[0])
        )
    return Entry(
        id=str(row[0]),
        scope_key=row[1],
        text_key=row[2],
        prompt=row[3],
        response=response,
        metadata=metadata,
        created_at=row[6],
        expires_at=row[7],
        tenant=row[8],
        model=row[9],
        namespace=row[10],
        tags=sqlite_labels.decode_tags(row[0], row[11]),
    )
