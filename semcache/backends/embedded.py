"""The embedded backend: SQLite holds the entries, an in-process vector index per scope.

SQLite (WAL mode) is the source of truth and includes each entry's vector, so the indexes are
derived and rebuildable. A small scope is searched exactly from a numpy matrix rebuilt on open;
a large one has an HNSW graph (``scoped_index.py`` gives each structure's cost and bound),
snapshotted to disk atomically on ``flush()`` / ``close()`` (and every ``autosave_seconds`` while
writing) and reconciled with SQLite when loaded (entries added since are inserted, deleted ones
marked). A crash loses no entry. ``max_scopes`` and ``max_bytes`` cap the store.

Past ``max_entries`` or ``max_bytes``, entries go lowest priority first, as the backend's
eviction policy (:mod:`.eviction`) ranks them: three columns per entry (uses, cost, priority;
about 24 bytes) and an index on the priority (about 30 bytes), so a use is one indexed update and
evicting ``k`` entries reads ``k`` index rows. ``max_scopes`` evicts whole scopes, least recently
used first, whatever the policy.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterable, Sequence
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from semcache._clock import Clock, SystemClock
from semcache.backends import sqlite_io, sqlite_labels
from semcache.backends import sqlite_rows as store_rows
from semcache.backends.base import EntryPage, check_limit, check_vector
from semcache.backends.eviction import (
    GDSF,
    LRU,
    Eviction,
    check_eviction,
    entry_cost,
    metadata_cost,
)
from semcache.backends.lock import DirectoryLock
from semcache.backends.scoped_index import ScopedIndexes, over_cap
from semcache.backends.vector_index import HnswParams
from semcache.errors import (
    BackendError,
    ConfigurationError,
    InvalidInputError,
    NotCacheableError,
)
from semcache.models import Candidate, Entry, ModelFingerprint, NewEntry, check_fingerprint

if TYPE_CHECKING:
    from numpy.typing import NDArray

    from semcache.selector import Selector

__all__ = ["EmbeddedBackend", "HnswParams", "LocalBackend", "MemoryBackend", "StoreStats"]

log = logging.getLogger("semcache")


@dataclass(frozen=True, slots=True)
class StoreStats:
    """What a :class:`LocalBackend` holds (see :meth:`LocalBackend.stats`).

    Attributes:
        entries: entries stored.
        stored_bytes: their bytes, as ``max_bytes`` counts them.
        evictions: entries evicted by ``max_scopes`` and ``max_bytes`` since the store opened.
        scopes, exact_scopes, graph_scopes, resident_graphs, exact_vectors: as
            :class:`~semcache.backends.scoped_index.IndexCounts`.
    """

    entries: int
    stored_bytes: int
    evictions: int
    scopes: int
    exact_scopes: int
    graph_scopes: int
    resident_graphs: int
    exact_vectors: int


class LocalBackend:
    """Entries in SQLite, vectors in one in-process index per scope.

    Use :class:`EmbeddedBackend` (HNSW, on disk) or :class:`MemoryBackend` (exact, in memory).
    """

    def __init__(
        self,
        path: str | Path | None,
        *,
        hnsw: HnswParams | None,
        snapshot: bool,
        max_scopes: int | None = None,
        max_bytes: int | None = None,
        autosave_seconds: float = 60.0,
        clock: Clock | None = None,
        eviction: Eviction | None = None,
    ) -> None:
        self.eviction: Eviction = GDSF() if eviction is None else check_eviction(eviction)
        self._evict_clock = 0.0  # GDSF's clock: the priority of the last entry evicted
        self._dir = Path(path) if path is not None else None
        self._hnsw = hnsw
        self._snapshot = snapshot and self._dir is not None
        for name, cap in (("max_scopes", max_scopes), ("max_bytes", max_bytes)):
            if cap is not None and (not isinstance(cap, int) or cap < 1):
                raise ConfigurationError(f"{name} must be an int >= 1 or None, got {cap!r}")
        self.max_scopes = max_scopes
        self.max_bytes = max_bytes
        self._autosave = autosave_seconds
        self._clock = clock or SystemClock()
        self._lock = threading.RLock()
        self._scoped: ScopedIndexes | None = None  # built by bind(), once the dim is known
        self._bytes = 0  # stored bytes, as store_rows.SIZE counts them
        self._evicted = 0  # evicted by the caps since evict() last reported them
        self._evictions = 0
        self._last_save = self._clock.now()
        self._dim: int | None = None
        self._closed = False
        self._dir_lock: DirectoryLock | None = None
        if self._dir is not None:
            try:
                self._dir.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise BackendError(f"cannot create the cache directory {self._dir}: {e}") from e
            self._dir_lock = DirectoryLock.acquire(self._dir)
            self._path = str(self._dir / "entries.sqlite3")
        else:
            self._path = ":memory:"
        try:
            self._db = sqlite_io.connect(self._path)
            try:
                self._open_store()
            except BaseException:
                self._db.close()
                raise
        except BaseException:
            if self._dir_lock is not None:
                self._dir_lock.release()
            raise

    def _open_store(self) -> None:
        """Create the schema if new; read the count, the bound model and the format."""
        db = self._path
        with self._sql("read the entry store"):
            self._db.executescript(store_rows.SCHEMA)
            sqlite_io.add_columns(self._db, "entries", sqlite_labels.COLUMNS)
            for statement in sqlite_labels.INDEXES:
                self._db.execute(statement)
            self._open_eviction()
            self._count = int(self._db.execute("SELECT COUNT(*) FROM entries").fetchone()[0])
            stored = self._meta("fingerprint")
            fmt = self._meta("format")
        try:
            self._fingerprint = ModelFingerprint.from_dict(json.loads(stored)) if stored else None
            version = None if fmt is None else int(fmt)
        except (ValueError, TypeError, KeyError) as e:
            raise BackendError(
                f"the entry store {db} has an unreadable model record ({e}): move it aside "
                "and the cache starts empty"
            ) from e
        if version is not None and version != store_rows.FORMAT:
            raise ConfigurationError(
                f"{db} has format {fmt}; this semcache reads format {store_rows.FORMAT}"
            )

    def _open_eviction(self) -> None:
        """Add the eviction columns if missing, then rank the entries without a priority (written
        by an older semcache) or, if the store was ranked by another policy, all of them anew
        (an old store was ranked by recency: LRU). O(entries) only then."""
        db, policy = self._db, self.eviction
        db.create_function("semcache_priority", 5, policy.priority, deterministic=True)
        db.create_function("semcache_cost", 3, metadata_cost, deterministic=True)
        with sqlite_io.transaction(db, self._path, "rank the entries for eviction"):
            sqlite_io.add_columns(db, "entries", store_rows.EVICTION_COLUMNS)
            db.execute(store_rows.EVICTION_INDEX)
            if (self._meta("eviction") or LRU().name) == policy.name:
                clock = float(self._meta("eviction_clock") or 0.0)
                db.execute(f"{store_rows.RANK} WHERE priority IS NULL", (clock,))
            else:
                clock = 0.0
                db.execute(store_rows.RANK, (clock,))
            db.execute(
                "INSERT OR REPLACE INTO meta VALUES ('eviction', ?), ('eviction_clock', ?)",
                (policy.name, repr(clock)),
            )
        self._evict_clock = clock

    def _sql(self, action: str) -> AbstractContextManager[None]:
        """SQLite errors inside the block become a :class:`BackendError` naming the file."""
        return sqlite_io.translated(self._path, action)

    # -- metadata and binding ------------------------------------------------------------------

    def _meta(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    @property
    def fingerprint(self) -> ModelFingerprint | None:
        """The embedding model this store was built with, once bound."""
        return self._fingerprint

    def bind(self, fingerprint: ModelFingerprint) -> None:
        """Record the model, or refuse another one; then load the vector indexes.

        On disk, a refused model or a failure (a corrupt store) closes the backend without
        saving, so it does not keep its directory locked.
        """
        with self._lock:
            try:
                with self._sql("bind the entry store"):
                    self._bind(fingerprint)
            except BaseException:
                if self._dir_lock is not None:
                    self._abandon()
                raise

    def _bind(self, fingerprint: ModelFingerprint) -> None:
        check_fingerprint(
            self._fingerprint,
            fingerprint,
            str(self._dir or "this memory store"),
            "use the same embedder, or a new directory",
        )
        if self._fingerprint is None:
            self._db.execute(
                "INSERT OR REPLACE INTO meta VALUES ('fingerprint', ?), ('format', ?)",
                (json.dumps(fingerprint.to_dict()), str(store_rows.FORMAT)),
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
        if self._dir_lock is not None:
            self._dir_lock.check_process()
        return self._dim

    # -- vector indexes ------------------------------------------------------------------------

    def _load_indexes(self) -> None:
        """Register every stored scope (least recently used first) and count the stored bytes."""
        assert self._dim is not None
        graphs = self._dir / "hnsw" if self._snapshot and self._dir is not None else None
        self._scoped = ScopedIndexes(
            self._dim, self._hnsw, graphs, store_rows.SqliteVectors(self._db)
        )
        rows = self._db.execute(
            f"SELECT scope_key, COUNT(*), SUM({store_rows.SIZE}) FROM entries "
            "GROUP BY scope_key ORDER BY MAX(last_access)"
        ).fetchall()
        self._bytes = sum(int(r[2]) for r in rows)
        self._scoped.open((str(r[0]), int(r[1])) for r in rows)

    def _indexes(self) -> ScopedIndexes:
        self._require_dim()
        assert self._scoped is not None
        return self._scoped

    def _maybe_autosave(self) -> None:
        if (
            self._snapshot
            and self._indexes().dirty
            and self._clock.now() - self._last_save >= self._autosave
        ):
            self._save_dirty()

    def _save_dirty(self) -> None:
        if self._scoped is not None:
            self._scoped.save()
        self._last_save = self._clock.now()

    def stats(self) -> StoreStats:
        """What the store holds now, and how much the caps have evicted since it opened."""
        with self._lock:
            counts = self._indexes().counts()
            return StoreStats(
                entries=self._count,
                stored_bytes=self._bytes,
                evictions=self._evictions,
                **asdict(counts),
            )

    # -- reads ---------------------------------------------------------------------------------

    def get_exact(self, scope_key: str, text_key: str, now: float) -> Entry | None:
        with self._lock, self._sql("read an entry"):
            self._require_dim()
            row = self._db.execute(
                f"SELECT {store_rows.COLUMNS} FROM entries WHERE scope_key = ? AND text_key = ?",
                (scope_key, text_key),
            ).fetchone()
        if row is None:
            return None
        entry = store_rows.row_to_entry(row)
        return None if entry.expired(now) else entry

    def search(
        self, scope_key: str, vector: NDArray[np.float32], k: int, now: float
    ) -> list[Candidate]:
        with self._lock, self._sql("read the nearest entries"):
            vec = check_vector(vector, self._require_dim())
            hits = self._indexes().knn(scope_key, vec, k)
            if not hits:
                return []
            ids = [label for label, _ in hits]
            marks = ",".join("?" * len(ids))
            rows = self._db.execute(
                f"SELECT {store_rows.COLUMNS} FROM entries WHERE id IN ({marks})", ids
            ).fetchall()
        by_id = {int(r[0]): r for r in rows}
        out: list[Candidate] = []
        for label, similarity in hits:
            row = by_id.get(label)
            if row is None:
                continue
            entry = store_rows.row_to_entry(row)
            if not entry.expired(now):
                out.append(Candidate(entry, similarity))
        return out

    def get(self, entry_id: str) -> Entry | None:
        row_id = store_rows.row_id(entry_id)
        if row_id is None:
            return None
        with self._lock, self._sql("read an entry"):
            row = self._db.execute(
                f"SELECT {store_rows.COLUMNS} FROM entries WHERE id = ?", (row_id,)
            ).fetchone()
        return None if row is None else store_rows.row_to_entry(row)

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
        encoded = [store_rows.encode(e) for e in entries]
        label_rows = [sqlite_labels.values(e) for e in entries]
        with self._lock, self._sql("store entries"):
            dim = self._require_dim()
            vecs = [check_vector(v, dim) for v in vectors]
            sizes = [
                store_rows.entry_bytes(e, c, v.nbytes)
                for e, c, v in zip(entries, encoded, vecs, strict=True)
            ]
            incoming = store_rows.batch_bytes(entries, sizes)
            self._make_room(entries, sizes, incoming)
            added: dict[int, tuple[str, NDArray[np.float32]]] = {}  # new id -> (scope, vector)
            replaced: list[tuple[int, str]] = []
            replaced_bytes = 0
            ids: list[int] = []
            with sqlite_io.transaction(self._db, self._path, "store entries"):
                for entry, vec, (response, metadata), size, label in zip(
                    entries, vecs, encoded, sizes, label_rows, strict=True
                ):
                    old = self._db.execute(
                        f"SELECT id, {store_rows.SIZE} FROM entries "
                        "WHERE scope_key = ? AND text_key = ?",
                        (entry.scope_key, entry.text_key),
                    ).fetchone()
                    if old is not None:
                        self._db.execute("DELETE FROM entries WHERE id = ?", (old[0],))
                        if added.pop(int(old[0]), None) is None:
                            replaced.append((int(old[0]), entry.scope_key))
                            replaced_bytes += int(old[1])
                    cost = entry_cost(entry.prompt, response, entry.metadata)
                    cur = self._db.execute(
                        "INSERT INTO entries (scope_key, text_key, prompt, response, metadata, "
                        "created_at, expires_at, last_access, vector, hits, cost, priority, "
                        f"{store_rows.LABELS}) VALUES (?,?,?,?,?,?,?,?,?,1,?,?,?,?,?,?)",
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
                            cost,
                            self.eviction.priority(
                                self._evict_clock, 1, cost, size, entry.created_at
                            ),
                            *label,
                        ),
                    )
                    new_id = int(cur.lastrowid or 0)
                    added[new_id] = (entry.scope_key, vec)
                    ids.append(new_id)
            self._count += len(added) - len(replaced)
            self._bytes += incoming - replaced_bytes
            indexes = self._indexes()
            for scope, old_ids in store_rows.by_scope(replaced).items():
                indexes.remove(scope, old_ids)
            for scope, scope_ids in store_rows.by_scope(
                (i, s) for i, (s, _) in added.items()
            ).items():
                labels = np.array(scope_ids, dtype=np.int64)
                indexes.add(scope, labels, np.stack([added[i][1] for i in scope_ids]))
            self._make_room((), [], 0)  # a batch larger than a cap: its lowest-ranked entries go
            self._maybe_autosave()
        return [e.stored_as(str(new_id)) for new_id, e in zip(ids, entries, strict=True)]

    def touch(self, entry_id: str, now: float) -> None:
        """Count a use of the entry at ``now`` and re-rank it (one indexed update)."""
        with self._lock, self._sql("mark an entry used"):
            rows = self._db.execute(
                "UPDATE entries SET last_access = ?, hits = hits + 1, priority = "
                f"semcache_priority(?, hits + 1, coalesce(cost, 0), {store_rows.SIZE}, ?) "
                "WHERE id = ? RETURNING scope_key",
                (now, self._evict_clock, now, store_rows.row_id(entry_id)),
            ).fetchall()  # fetched to the end, so the statement is done before the next one
            if rows and self._scoped is not None:
                self._scoped.use(str(rows[0][0]))  # the scope's recency, for max_scopes

    def _make_room(self, entries: Sequence[NewEntry], sizes: list[int], incoming: int) -> None:
        """Evict least-recently-used scopes, then the lowest-ranked entries, so the batch fits.

        An entry larger than ``max_bytes`` is refused, before anything is evicted. Caller holds
        the lock.
        """
        if self.max_bytes is not None and any(size > self.max_bytes for size in sizes):
            raise NotCacheableError(
                f"an entry of {max(sizes)} bytes is larger than the whole store "
                f"(max_bytes={self.max_bytes})"
            )
        self._evict_scopes({e.scope_key for e in entries})
        self._evict_bytes(entries, incoming)

    def _evict_scopes(self, batch: set[str]) -> None:
        """Evict the least recently used scopes (not those of the batch) to fit ``max_scopes``."""
        indexes = self._indexes()
        new_scopes = sum(1 for scope in batch if scope not in indexes)
        excess = over_cap(len(indexes), new_scopes, self.max_scopes)
        if not excess:
            return
        victims = indexes.least_recent(excess, keep=batch)
        rows: list[tuple[Any, ...]] = []
        for at in range(0, len(victims), 500):
            chunk = victims[at : at + 500]
            rows += self._db.execute(
                f"SELECT {store_rows.ROW_REF} FROM entries "
                f"WHERE scope_key IN ({','.join('?' * len(chunk))})",
                chunk,
            ).fetchall()
        self._evicted_by_caps(self._delete_rows(rows))

    def _evict_bytes(self, entries: Sequence[NewEntry], incoming: int) -> None:
        """Evict the lowest-ranked entries (``evict``'s order) until ``incoming`` bytes fit."""
        need = over_cap(self._bytes, incoming, self.max_bytes)
        if need > 0 and entries:  # what the batch replaces makes room too
            keys = {(e.scope_key, e.text_key) for e in entries}
            replaced = sum(
                int(row[0])
                for key in keys
                for row in self._db.execute(
                    f"SELECT {store_rows.SIZE} FROM entries WHERE scope_key = ? AND text_key = ?",
                    key,
                )
            )
            need = over_cap(self._bytes - replaced, incoming, self.max_bytes)
        while need > 0:
            rows = self._db.execute(store_rows.VICTIMS, (256,)).fetchall()
            if not rows:
                return
            take = 0
            while take < len(rows) and need > 0:
                need -= int(rows[take][2])
                take += 1
            self._evicted_by_caps(self._evict_rows(rows[:take]))

    def _evicted_by_caps(self, n: int) -> None:
        self._evicted += n
        self._evictions += n

    def _evict_rows(self, rows: list[tuple[Any, ...]]) -> int:
        """Delete rows of ``sqlite_rows.VICTIMS``, advancing (and saving) the policy's clock."""
        clock = self.eviction.clock_after(self._evict_clock, (float(r[3]) for r in rows))
        deleted = self._delete_rows(rows, clock=clock)
        self._evict_clock = clock
        return deleted

    def _delete_rows(self, rows: Iterable[tuple[Any, ...]], *, clock: float | None = None) -> int:
        """Delete (id, scope_key, size) rows (``sqlite_rows.ROW_REF``) and their vectors;
        with ``clock``, save it as the eviction clock in the same transaction.

        Caller holds the lock.
        """
        rows = list(rows)
        if not rows:
            return 0
        with sqlite_io.transaction(self._db, self._path, "delete entries"):
            self._db.executemany("DELETE FROM entries WHERE id = ?", [(r[0],) for r in rows])
            if clock is not None and clock != self._evict_clock:
                self._db.execute(
                    "UPDATE meta SET value = ? WHERE key = 'eviction_clock'", (repr(clock),)
                )
        self._count -= len(rows)
        self._bytes -= sum(int(r[2]) for r in rows)
        indexes = self._indexes()
        for scope, ids in store_rows.by_scope((int(r[0]), str(r[1])) for r in rows).items():
            indexes.remove(scope, ids)
        return len(rows)

    def delete(self, entry_ids: Iterable[str]) -> int:
        ids = [i for i in map(store_rows.row_id, entry_ids) if i is not None]
        if not ids:
            return 0
        with self._lock, self._sql("delete entries"):
            marks = ",".join("?" * len(ids))
            rows = self._db.execute(
                f"SELECT {store_rows.ROW_REF} FROM entries WHERE id IN ({marks})", ids
            ).fetchall()
            return self._delete_rows(rows)

    def evict(self, max_entries: int) -> int:
        """Evict the lowest-ranked entries (see ``eviction``) past ``max_entries``.

        Returns how many went, counting those the ``max_scopes`` and ``max_bytes`` caps evicted
        since the last call (stores evict for the caps before they write).
        """
        with self._lock, self._sql("evict entries"):
            by_caps, self._evicted = self._evicted, 0
            excess = self._count - max_entries
            if excess <= 0:
                return by_caps
            rows = self._db.execute(store_rows.VICTIMS, (excess,)).fetchall()
            return by_caps + self._evict_rows(rows)

    def purge_expired(self, now: float) -> int:
        with self._lock, self._sql("purge expired entries"):
            rows = self._db.execute(
                f"SELECT {store_rows.ROW_REF} FROM entries "
                "WHERE expires_at IS NOT NULL AND expires_at <= ?",
                (now,),
            ).fetchall()
            return self._delete_rows(rows)

    def clear(self, scope_key: str | None = None) -> int:
        with self._lock, self._sql("clear entries"):
            if scope_key is None:
                rows = self._db.execute(f"SELECT {store_rows.ROW_REF} FROM entries").fetchall()
            else:
                rows = self._db.execute(
                    f"SELECT {store_rows.ROW_REF} FROM entries WHERE scope_key = ?", (scope_key,)
                ).fetchall()
            return self._delete_rows(rows)

    def delete_where(self, selector: Selector) -> int:
        """Delete the selected entries and leave no trace of them in the directory.

        Their rows are overwritten (SQLite ``secure_delete``) and the write-ahead log
        truncated; graphs that held them are rebuilt without their slots and snapshotted now.
        """
        clause, params = sqlite_labels.where(selector)
        with self._lock, self._sql("delete entries"):
            self._require_dim()
            rows = self._db.execute(
                f"SELECT {store_rows.ROW_REF} FROM entries WHERE {clause}", params
            ).fetchall()
            if not rows:
                return 0
            before = self._db.execute("PRAGMA secure_delete").fetchone()[0]
            self._db.execute("PRAGMA secure_delete = ON")
            try:
                deleted = self._delete_rows(rows)
            finally:
                self._db.execute(f"PRAGMA secure_delete = {int(before)}")
            self._indexes().compact({str(r[1]) for r in rows})
            if self._snapshot:
                self._save_dirty()
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
            return deleted

    def entries(
        self, selector: Selector, cursor: str | None = None, limit: int = 100, vectors: bool = False
    ) -> EntryPage:
        """A page of the selected entries in id order; the cursor is the last id returned."""
        check_limit(limit)
        after = 0 if cursor is None else store_rows.row_id(cursor)
        if after is None:
            raise InvalidInputError(f"not a cursor of this store: {cursor!r}")
        clause, params = sqlite_labels.where(selector)
        extra = ", vector" if vectors else ""
        with self._lock, self._sql("list entries"):
            self._require_dim()
            rows = self._db.execute(
                f"SELECT {store_rows.COLUMNS}{extra} FROM entries WHERE id > ? AND {clause} "
                "ORDER BY id LIMIT ?",
                [after, *params, limit],
            ).fetchall()
        found = tuple(store_rows.row_to_entry(r) for r in rows)
        vecs = tuple(np.frombuffer(r[-1], dtype=np.float32).copy() for r in rows) if vectors else ()
        more = len(rows) == limit
        return EntryPage(found, vecs, found[-1].id if more else None)

    def flush(self) -> None:
        """Write the vector-index snapshots now."""
        with self._lock:
            self._save_dirty()

    def close(self) -> None:
        """Save the snapshots, close the database and release the directory."""
        with self._lock:
            if self._closed:
                return
            try:
                self._save_dirty()
            finally:
                self._abandon()

    def _abandon(self) -> None:
        """Close the database and release the directory, saving nothing."""
        self._closed = True
        try:
            self._db.close()
        finally:
            if self._dir_lock is not None:
                self._dir_lock.release()

    def __enter__(self) -> LocalBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class EmbeddedBackend(LocalBackend):
    """The default backend: HNSW (hnswlib) in process, persisted under ``path``.

    Small scopes are searched exactly and large ones with a graph (see ``HnswParams``), so
    memory follows the entries, not the number of scopes. The caps bound the store: past them,
    a store first evicts the least recently used scopes, or the entries its ``eviction`` policy
    ranks lowest, and :meth:`evict` reports them.

    Args:
        path: a directory; created if missing, reopened with its entries if present. Held
            (a lock file) until :meth:`close`: a second backend on it, in any process, raises
            :class:`ConfigurationError`.
        hnsw: graph parameters, and the size from which a scope gets a graph.
        max_scopes: the most scopes held; ``None``: no cap.
        max_bytes: the most bytes of entries held (text, JSON and vectors, as stored); an entry
            larger than this is refused with :class:`NotCacheableError`. ``None``: no cap.
        autosave_seconds: while writing, snapshot the HNSW graphs at most this often.
        clock: time source for autosave.
        eviction: which entries go first past ``max_entries`` or ``max_bytes``: ``GDSF()``
            (default: the fewest tokens saved per byte, aged) or ``LRU()``
            (:mod:`semcache.backends.eviction`). A store ranked by another policy (one written
            before semcache had this choice was ranked by LRU) is re-ranked once on open.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        hnsw: HnswParams | None = None,
        max_scopes: int | None = 100_000,
        max_bytes: int | None = 4 * 2**30,
        autosave_seconds: float = 60.0,
        clock: Clock | None = None,
        eviction: Eviction | None = None,
    ) -> None:
        self.hnsw = hnsw or HnswParams()
        super().__init__(
            path,
            hnsw=self.hnsw,
            snapshot=True,
            max_scopes=max_scopes,
            max_bytes=max_bytes,
            autosave_seconds=autosave_seconds,
            clock=clock,
            eviction=eviction,
        )


class MemoryBackend(LocalBackend):
    """Exact search over an in-memory store: no persistence. A test oracle and a scratch cache.

    ``max_scopes``, ``max_bytes`` and ``eviction`` work as in :class:`EmbeddedBackend` (no cap
    here unless given).
    """

    def __init__(
        self,
        *,
        max_scopes: int | None = None,
        max_bytes: int | None = None,
        eviction: Eviction | None = None,
    ) -> None:
        super().__init__(
            None,
            hnsw=None,
            snapshot=False,
            max_scopes=max_scopes,
            max_bytes=max_bytes,
            eviction=eviction,
        )
