"""The embedded backend's SQLite plumbing: opening, write transactions, errors and JSON columns.

Every SQLite error leaves as a :class:`BackendError` naming the file; a corrupt file's error
also says how to recover. A write transaction is rolled back on *any* exception, so one bad
entry can never leave the database locked for the other writers.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager

from semcache.errors import BackendError, InvalidInputError

__all__ = ["add_columns", "check_text", "connect", "storage_error", "transaction", "translated"]

_CORRUPT = ("malformed", "not a database", "corrupt", "encrypted")


def storage_error(db: str, action: str, error: sqlite3.Error) -> BackendError:
    """The :class:`BackendError` for ``error`` raised by SQLite on ``db`` while ``action``."""
    text = str(error)
    if isinstance(error, sqlite3.DatabaseError) and any(w in text.lower() for w in _CORRUPT):
        return BackendError(
            f"the entry store {db} is corrupt ({text}) while trying to {action}: stop the "
            f"process, move {db} (and its -wal and -shm files) aside, and the cache starts "
            "empty (the HNSW snapshots beside it are dropped)"
        )
    return BackendError(f"cannot {action} in the entry store {db}: {text}")


@contextmanager
def translated(db: str, action: str) -> Iterator[None]:
    """Raise SQLite's errors inside the block as :func:`storage_error`."""
    try:
        yield
    except sqlite3.Error as e:
        raise storage_error(db, action, e) from e


def connect(db: str) -> sqlite3.Connection:
    """Open ``db`` with WAL, in autocommit mode: transactions are explicit (:func:`transaction`)."""
    with translated(db, "open the database"):
        conn = sqlite3.connect(db, check_same_thread=False, isolation_level=None)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
        except BaseException:
            conn.close()
            raise
        return conn


@contextmanager
def transaction(conn: sqlite3.Connection, db: str, action: str) -> Iterator[None]:
    """``BEGIN IMMEDIATE`` ... ``COMMIT``; any exception in the block rolls back and propagates."""
    with translated(db, action):
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise


def check_text(text: str, what: str) -> str:
    """``text`` if SQLite can store it as UTF-8; a lone surrogate is :class:`InvalidInputError`."""
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as e:
            raise InvalidInputError(f"{what} is not valid Unicode: {e}") from e
    return text


def add_columns(conn: sqlite3.Connection, table: str, columns: dict[str, str]) -> list[str]:
    """Add each of ``columns`` (name -> definition) that ``table`` lacks; returns those added.

    One ``ALTER TABLE ... ADD COLUMN`` per missing column, so it is idempotent and each feature
    migrates its own columns. Caller translates errors (:func:`translated`).
    """
    have = {str(row[1]) for row in conn.execute(f"PRAGMA table_info({table})")}
    added = [name for name in columns if name not in have]
    for name in added:
        conn.execute(f"ALTER TABLE {table} ADD COLUMN {name} {columns[name]}")
    return added
