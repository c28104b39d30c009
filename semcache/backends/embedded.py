"""The embedded backend: SQLite holds the entries, an in-process vector index per scope.

SQLite (WAL mode) is the source of truth and includes each entry's vector, so the HNSW graphs
are a derived, rebuildable structure: they are snapshotted to disk atomically on ``flush()`` /
``close()`` (and every ``autosave_seconds`` while writing), and on open each snapshot is reconciled
with SQLite (entries added since are inserted, deleted ones marked). A crash loses no entry.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from semcache._clock import Clock, SystemClock
from semcache.backends.base import check_vector
from semcache.backends.vector_index import ExactIndex, HnswIndex, HnswParams, VectorIndex
from semcache.errors import (
    BackendError,
    ConfigurationError,
    CorruptEntryError,
    InvalidInputError,
)
from semcache.models import Candidate, Entry, ModelFingerprint, NewEntry, check_fingerprint

if TYPE_CHECKING:
    from numpy.typing import NDArray

__all__ = ["EmbeddedBackend", "HnswParams", "LocalBackend", "MemoryBackend"]

_FORMAT = 1
_SCHEMA = """
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
_COLUMNS = "id, scope_key, text_key, prompt, response, metadata, created_at, expires_at"


def _row_id(entry_id: str) -> int | None:
    """The SQLite row id of an entry id, or ``None`` for an id this backend never issued."""
    try:
        return int(entry_id)
    except (TypeError, ValueError):
        return None


def _row_to_entry(row: tuple[Any, ...]) -> Entry:
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
    )


class LocalBackend:
    """Entries in SQLite, vectors in one in-process index per scope.

    Use :class:`EmbeddedBackend` (HNSW, on disk) or :class:`MemoryBackend` (exact, in memory).
    """

    def __init__(
        self,
        path: str | Path | None,
        *,
        index_factory: Callable[[int, Path | None], VectorIndex],
        snapshot: bool,
        autosave_seconds: float = 60.0,
        clock: Clock | None = None,
    ) -> None:
        self._dir = Path(path) if path is not None else None
        self._index_factory = index_factory
        self._snapshot = snapshot and self._dir is not None
        self._autosave = autosave_seconds
        self._clock = clock or SystemClock()
        self._lock = threading.RLock()
        self._indexes: dict[str, VectorIndex] = {}
        self._dirty: set[str] = set()
        self._last_save = self._clock.now()
        self._dim: int | None = None
        self._closed = False
        if self._dir is not None:
            self._dir.mkdir(parents=True, exist_ok=True)
            db = str(self._dir / "entries.sqlite3")
        else:
            db = ":memory:"
        try:
            self._db = sqlite3.connect(db, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
        except sqlite3.DatabaseError as e:
            raise BackendError(f"cannot open the entry store at {db}: {e}") from e
        self._count = int(self._db.execute("SELECT COUNT(*) FROM entries").fetchone()[0])
        stored = self._meta("fingerprint")
        self._fingerprint = ModelFingerprint.from_dict(json.loads(stored)) if stored else None
        fmt = self._meta("format")
        if fmt is not None and int(fmt) != _FORMAT:
            raise ConfigurationError(f"{db} has format {fmt}; this semcache reads format {_FORMAT}")

    # -- metadata and binding ------------------------------------------------------------------

    def _meta(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    @property
    def fingerprint(self) -> ModelFingerprint | None:
        """The embedding model this store was built with, once bound."""
        return self._fingerprint

    def bind(self, fingerprint: ModelFingerprint) -> None:
        with self._lock:
            check_fingerprint(
                self._fingerprint,
                fingerprint,
                str(self._dir or "this memory store"),
                "use the same embedder, or a new directory",
            )
            if self._fingerprint is None:
                self._db.execute(
                    "INSERT OR REPLACE INTO meta VALUES ('fingerprint', ?), ('format', ?)",
                    (json.dumps(fingerprint.to_dict()), str(_FORMAT)),
                )
                self._fingerprint = fingerprint
            if self._dim is None:
                self._dim = fingerprint.dim
                self._load_indexes()

    def _require_dim(self) -> int:
        if self._dim is None:
            raise ConfigurationError("backend is not bound to an embedder; call bind() first")
        if self._closed:
            raise BackendError("backend is closed")
        return self._dim

    # -- vector indexes ------------------------------------------------------------------------

    def _snapshot_path(self, scope_key: str) -> Path:
        assert self._dir is not None
        return self._dir / "hnsw" / f"{scope_key}.bin"

    def _load_indexes(self) -> None:
        """Load each scope's snapshot (if any) and reconcile it with SQLite."""
        assert self._dim is not None
        scopes = [r[0] for r in self._db.execute("SELECT DISTINCT scope_key FROM entries")]
        for scope in scopes:
            index: VectorIndex | None = None
            if self._snapshot and self._snapshot_path(scope).exists():
                try:
                    index = self._index_factory(self._dim, self._snapshot_path(scope))
                except (RuntimeError, ValueError, OSError):
                    index = None  # unreadable snapshot: rebuilt below from SQLite
            rebuilt = index is None
            if index is None:
                index = self._index_factory(self._dim, None)
            have = index.labels()
            rows = self._db.execute(
                "SELECT id, vector FROM entries WHERE scope_key = ?", (scope,)
            ).fetchall()
            in_db = {int(r[0]) for r in rows}
            missing = [r for r in rows if int(r[0]) not in have]
            if missing:
                labels = np.array([r[0] for r in missing], dtype=np.int64)
                vectors = np.stack([np.frombuffer(r[1], dtype=np.float32) for r in missing])
                index.add(labels, vectors)
            for stale in have - in_db:
                index.remove(stale)
            self._indexes[scope] = index
            if rebuilt or missing or (have - in_db):
                self._dirty.add(scope)

    def _index_for(self, scope_key: str) -> VectorIndex:
        index = self._indexes.get(scope_key)
        if index is None:
            index = self._index_factory(self._require_dim(), None)
            self._indexes[scope_key] = index
        return index

    def _maybe_autosave(self) -> None:
        if self._snapshot and self._dirty and self._clock.now() - self._last_save >= self._autosave:
            self._save_dirty()

    def _save_dirty(self) -> None:
        if not self._snapshot:
            self._dirty.clear()
            return
        (self._dir / "hnsw").mkdir(exist_ok=True)  # type: ignore[operator]
        for scope in sorted(self._dirty):
            index = self._indexes.get(scope)
            path = self._snapshot_path(scope)
            if index is None or len(index) == 0:
                path.unlink(missing_ok=True)
            else:
                index.save(path)
        self._dirty.clear()
        self._last_save = self._clock.now()

    # -- reads ---------------------------------------------------------------------------------

    def get_exact(self, scope_key: str, text_key: str, now: float) -> Entry | None:
        with self._lock:
            self._require_dim()
            row = self._db.execute(
                f"SELECT {_COLUMNS} FROM entries WHERE scope_key = ? AND text_key = ?",
                (scope_key, text_key),
            ).fetchone()
        if row is None:
            return None
        entry = _row_to_entry(row)
        return None if entry.expired(now) else entry

    def search(
        self, scope_key: str, vector: NDArray[np.float32], k: int, now: float
    ) -> list[Candidate]:
        with self._lock:
            vec = check_vector(vector, self._require_dim())
            index = self._indexes.get(scope_key)
            if index is None or k <= 0:
                return []
            hits = index.knn(vec, k)
            if not hits:
                return []
            ids = [label for label, _ in hits]
            marks = ",".join("?" * len(ids))
            rows = self._db.execute(
                f"SELECT {_COLUMNS} FROM entries WHERE id IN ({marks})", ids
            ).fetchall()
        by_id = {int(r[0]): r for r in rows}
        out: list[Candidate] = []
        for label, similarity in hits:
            row = by_id.get(label)
            if row is None:
                continue
            entry = _row_to_entry(row)
            if not entry.expired(now):
                out.append(Candidate(entry, similarity))
        return out

    def get(self, entry_id: str) -> Entry | None:
        row_id = _row_id(entry_id)
        if row_id is None:
            return None
        with self._lock:
            row = self._db.execute(
                f"SELECT {_COLUMNS} FROM entries WHERE id = ?", (row_id,)
            ).fetchone()
        return None if row is None else _row_to_entry(row)

    def count(self) -> int:
        with self._lock:
            return self._count

    # -- writes --------------------------------------------------------------------------------

    def put(self, entry: NewEntry, vector: NDArray[np.float32]) -> Entry:
        return self.put_many([entry], [vector])[0]

    def put_many(
        self, entries: Sequence[NewEntry], vectors: Sequence[NDArray[np.float32]]
    ) -> list[Entry]:
        """Store several entries in one transaction and one index insertion per scope.

        Each entry replaces any entry with the same scope and text key (a later one in the batch
        replaces an earlier one). For bulk loads: much faster than one :meth:`put` per entry.
        """
        if len(entries) != len(vectors):
            raise InvalidInputError(f"{len(entries)} entries but {len(vectors)} vectors")
        encoded = [
            (
                json.dumps(e.response, ensure_ascii=False, allow_nan=False),
                json.dumps(dict(e.metadata), ensure_ascii=False, allow_nan=False),
            )
            for e in entries
        ]
        with self._lock:
            dim = self._require_dim()
            vecs = [check_vector(v, dim) for v in vectors]
            added: dict[int, tuple[str, NDArray[np.float32]]] = {}  # new id -> (scope, vector)
            replaced: list[tuple[int, str]] = []
            ids: list[int] = []
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for entry, vec, (response, metadata) in zip(entries, vecs, encoded, strict=True):
                    old = self._db.execute(
                        "SELECT id FROM entries WHERE scope_key = ? AND text_key = ?",
                        (entry.scope_key, entry.text_key),
                    ).fetchone()
                    if old is not None:
                        self._db.execute("DELETE FROM entries WHERE id = ?", (old[0],))
                        if added.pop(int(old[0]), None) is None:
                            replaced.append((int(old[0]), entry.scope_key))
                    cur = self._db.execute(
                        "INSERT INTO entries (scope_key, text_key, prompt, response, metadata, "
                        "created_at, expires_at, last_access, vector) VALUES (?,?,?,?,?,?,?,?,?)",
                        (
                            entry.scope_key,
                            entry.text_key,
                            entry.prompt,
                            response,
                            metadata,
                            entry.created_at,
                            entry.expires_at,
                            entry.created_at,
                            vec.tobytes(),
                        ),
                    )
                    new_id = int(cur.lastrowid or 0)
                    added[new_id] = (entry.scope_key, vec)
                    ids.append(new_id)
                self._db.execute("COMMIT")
            except sqlite3.DatabaseError as e:
                self._db.execute("ROLLBACK")
                raise BackendError(f"cannot store entries: {e}") from e
            self._count += len(added) - len(replaced)
            for old_id, scope in replaced:
                self._index_for(scope).remove(old_id)
                self._dirty.add(scope)
            by_scope: dict[str, list[int]] = {}
            for new_id, (scope, _) in added.items():
                by_scope.setdefault(scope, []).append(new_id)
            for scope, scope_ids in by_scope.items():
                labels = np.array(scope_ids, dtype=np.int64)
                self._index_for(scope).add(labels, np.stack([added[i][1] for i in scope_ids]))
                self._dirty.add(scope)
            self._maybe_autosave()
        return [e.stored_as(str(new_id)) for new_id, e in zip(ids, entries, strict=True)]

    def touch(self, entry_id: str, now: float) -> None:
        with self._lock:
            self._db.execute(
                "UPDATE entries SET last_access = ? WHERE id = ?", (now, _row_id(entry_id))
            )

    def _delete_rows(self, rows: Iterable[tuple[Any, ...]]) -> int:
        """Delete (id, scope_key) rows from SQLite and their vectors. Caller holds the lock."""
        rows = list(rows)
        if not rows:
            return 0
        self._db.executemany("DELETE FROM entries WHERE id = ?", [(r[0],) for r in rows])
        self._count -= len(rows)
        for entry_id, scope in rows:
            index = self._indexes.get(scope)
            if index is not None:
                index.remove(int(entry_id))
                self._dirty.add(scope)
        return len(rows)

    def delete(self, entry_ids: Iterable[str]) -> int:
        ids = [i for i in map(_row_id, entry_ids) if i is not None]
        if not ids:
            return 0
        with self._lock:
            marks = ",".join("?" * len(ids))
            rows = self._db.execute(
                f"SELECT id, scope_key FROM entries WHERE id IN ({marks})", ids
            ).fetchall()
            return self._delete_rows(rows)

    def evict(self, max_entries: int) -> int:
        with self._lock:
            excess = self._count - max_entries
            if excess <= 0:
                return 0
            rows = self._db.execute(
                "SELECT id, scope_key FROM entries ORDER BY last_access, id LIMIT ?", (excess,)
            ).fetchall()
            return self._delete_rows(rows)

    def purge_expired(self, now: float) -> int:
        with self._lock:
            rows = self._db.execute(
                "SELECT id, scope_key FROM entries "
                "WHERE expires_at IS NOT NULL AND expires_at <= ?",
                (now,),
            ).fetchall()
            return self._delete_rows(rows)

    def clear(self, scope_key: str | None = None) -> int:
        with self._lock:
            if scope_key is None:
                rows = self._db.execute("SELECT id, scope_key FROM entries").fetchall()
            else:
                rows = self._db.execute(
                    "SELECT id, scope_key FROM entries WHERE scope_key = ?", (scope_key,)
                ).fetchall()
            return self._delete_rows(rows)

    def flush(self) -> None:
        """Write the vector-index snapshots now."""
        with self._lock:
            self._save_dirty()

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._save_dirty()
            self._db.close()
            self._closed = True

    def __enter__(self) -> LocalBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class EmbeddedBackend(LocalBackend):
    """The default backend: HNSW (hnswlib) in process, persisted under ``path``.

    Args:
        path: a directory; created if missing, reopened with its entries if present.
        hnsw: graph parameters.
        autosave_seconds: while writing, snapshot the HNSW graphs at most this often.
        clock: time source for autosave.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        hnsw: HnswParams | None = None,
        autosave_seconds: float = 60.0,
        clock: Clock | None = None,
    ) -> None:
        params = hnsw or HnswParams()
        self.hnsw = params

        def factory(dim: int, snapshot: Path | None) -> VectorIndex:
            return HnswIndex(dim, params, snapshot)

        super().__init__(
            path,
            index_factory=factory,
            snapshot=True,
            autosave_seconds=autosave_seconds,
            clock=clock,
        )


class MemoryBackend(LocalBackend):
    """Exact search over an in-memory store: no persistence. A test oracle and a scratch cache."""

    def __init__(self) -> None:
        def factory(dim: int, snapshot: Path | None) -> VectorIndex:
            return ExactIndex(dim)

        super().__init__(None, index_factory=factory, snapshot=False)
