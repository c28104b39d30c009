"""The embedded retrieval store: chunks in SQLite, vectors on disk, HNSW and BM25 in memory.

Layout of a store directory::

    chunks.sqlite3    documents (id, content hash) and chunks (text, title, metadata, slot)
    float32.f32       float32 vectors, one row per slot, memory-mapped (rescoring, rebuilds)
    int8.i8           int8 codes, memory-mapped (rescoring)
    binary.b1         packed bits (loaded into RAM when the binary index is on)
    quantizers.json   per-dimension int8 ranges, binary thresholds, the compact projection
    *.hnsw            hnswlib snapshots of the float32 and compact indexes
    bm25.npz          the BM25 index (:mod:`semcache.retrieval.bm25_file`), with a checksum

The dense side (files, quantizers, search pipelines) is :mod:`semcache.retrieval.dense`. BM25
(bm25s) is built from SQLite on the first sparse search after a change and saved then (and at
:meth:`EmbeddedRetrievalStore.flush`, if sparse search is in use); after a restart it is loaded
from ``bm25.npz`` if that file is intact and was built at the store's current corpus generation
(a counter in SQLite bumped by every write), else rebuilt.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from semcache.backends.base import check_vector
from semcache.errors import (
    BackendError,
    ConfigurationError,
    InvalidInputError,
)
from semcache.models import ModelFingerprint, check_fingerprint
from semcache.retrieval import bm25_file
from semcache.retrieval.base import DenseMode, MemoryUse
from semcache.retrieval.bm25 import Bm25Index, Bm25Params
from semcache.retrieval.dense import DenseConfig, DenseIndexes
from semcache.retrieval.documents import Chunk, Document

if TYPE_CHECKING:
    from numpy.typing import NDArray

__all__ = ["EmbeddedRetrievalStore", "EmbeddedStoreConfig"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS documents (doc_id TEXT PRIMARY KEY, hash TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS chunks (
    slot INTEGER PRIMARY KEY,
    chunk_id TEXT NOT NULL UNIQUE,
    doc_id TEXT NOT NULL,
    idx INTEGER NOT NULL,
    text TEXT NOT NULL,
    title TEXT NOT NULL,
    doc_hash TEXT NOT NULL,
    metadata TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS chunks_doc ON chunks (doc_id);
"""
_CHUNK_COLUMNS = "slot, chunk_id, doc_id, idx, text, title, doc_hash, metadata"


@dataclass(frozen=True, slots=True, kw_only=True)
class EmbeddedStoreConfig(DenseConfig):
    """The dense indexes to build (see :class:`~semcache.retrieval.dense.DenseConfig`) and BM25.

    Attributes:
        bm25: BM25 settings.
    """

    bm25: Bm25Params = field(default_factory=Bm25Params)


def _chunk_of(row: tuple[Any, ...]) -> Chunk:
    return Chunk(
        id=row[1],
        doc_id=row[2],
        index=int(row[3]),
        text=row[4],
        title=row[5],
        doc_hash=row[6],
        metadata=json.loads(row[7]),
    )


def _batched(items: Sequence[Any], size: int = 500) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class EmbeddedRetrievalStore:
    """A single-process retrieval store on local disk (or in memory with ``path=None``).

    Args:
        path: a directory (created if missing); ``None`` keeps everything in RAM.
        config: which indexes to build.

    Attributes:
        bm25_builds: how many times this instance built BM25 from SQLite (not counting loads
            of ``bm25.npz``).
    """

    def __init__(self, path: str | Path | None, config: EmbeddedStoreConfig | None = None):
        self.config = config or EmbeddedStoreConfig()
        self._dir = Path(path) if path is not None else None
        self._lock = threading.RLock()
        self._closed = False
        if self._dir is not None:
            self._dir.mkdir(parents=True, exist_ok=True)
        db = str(self._dir / "chunks.sqlite3") if self._dir is not None else ":memory:"
        try:
            self._db = sqlite3.connect(db, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.executescript(_SCHEMA)
        except sqlite3.DatabaseError as e:
            raise BackendError(f"cannot open the chunk store at {db}: {e}") from e
        row = self._db.execute("SELECT value FROM meta WHERE key = 'fingerprint'").fetchone()
        self._fingerprint = ModelFingerprint.from_dict(json.loads(row[0])) if row else None
        row = self._db.execute("SELECT value FROM meta WHERE key = 'generation'").fetchone()
        self._generation = int(row[0]) if row else 0
        self._bm25: Bm25Index | None = None
        self._bm25_dirty = True
        self._bm25_saved = False
        self.bm25_builds = 0
        self._slot_ids: list[str | None] = []
        self._dense: DenseIndexes | None = None
        if self._fingerprint is not None:
            self._open_dense(self._fingerprint.dim)

    # -- setup ---------------------------------------------------------------------------------

    def bind(self, fingerprint: ModelFingerprint) -> None:
        with self._lock:
            if self._fingerprint is not None:
                check_fingerprint(
                    self._fingerprint,
                    fingerprint,
                    str(self._dir or "this store"),
                    "use the same embedder, or a new directory",
                )
                return
            self._db.execute(
                "INSERT OR REPLACE INTO meta VALUES ('fingerprint', ?)",
                (json.dumps(fingerprint.to_dict()),),
            )
            self._fingerprint = fingerprint
            self._open_dense(fingerprint.dim)

    def _open_dense(self, dim: int) -> None:
        rows = self._db.execute("SELECT slot, chunk_id FROM chunks").fetchall()
        size = max((int(r[0]) for r in rows), default=-1) + 1
        alive = np.zeros(size, dtype=bool)
        self._slot_ids = [None] * size
        for slot, chunk_id in rows:
            alive[slot] = True
            self._slot_ids[slot] = chunk_id
        self._dense = DenseIndexes(self._dir, dim, self.config, alive)
        # Slots written before a crash, never committed, stay dead.
        self._slot_ids.extend([None] * (len(self._dense.alive) - len(self._slot_ids)))

    def _require(self) -> DenseIndexes:
        if self._closed:
            raise BackendError("retrieval store is closed")
        if self._dense is None:
            raise ConfigurationError("retrieval store is not bound to an embedder; call bind()")
        return self._dense

    # -- reads ---------------------------------------------------------------------------------

    def doc_hashes(self, doc_ids: Iterable[str] | None = None) -> dict[str, str]:
        with self._lock:
            if doc_ids is None:
                rows = self._db.execute("SELECT doc_id, hash FROM documents").fetchall()
                return {r[0]: r[1] for r in rows}
            out: dict[str, str] = {}
            for part in _batched(list(dict.fromkeys(doc_ids))):
                marks = ",".join("?" * len(part))
                for r in self._db.execute(
                    f"SELECT doc_id, hash FROM documents WHERE doc_id IN ({marks})", list(part)
                ):
                    out[r[0]] = r[1]
            return out

    def chunks(self, chunk_ids: Iterable[str]) -> dict[str, Chunk]:
        out: dict[str, Chunk] = {}
        with self._lock:
            for part in _batched(list(dict.fromkeys(chunk_ids))):
                marks = ",".join("?" * len(part))
                rows = self._db.execute(
                    f"SELECT {_CHUNK_COLUMNS} FROM chunks WHERE chunk_id IN ({marks})", list(part)
                ).fetchall()
                out.update((r[1], _chunk_of(r)) for r in rows)
        return out

    def count(self) -> int:
        with self._lock:
            return 0 if self._dense is None else int(self._dense.alive.sum())

    def dense(
        self, vector: NDArray[np.float32], k: int, mode: DenseMode
    ) -> list[tuple[str, float]]:
        with self._lock:
            dense = self._require()
            query = check_vector(vector, dense.dim)
            hits = dense.search(query, k, mode)
            return [(ident, score) for slot, score in hits if (ident := self._slot_ids[slot])]

    def sparse(self, query: str, k: int) -> list[tuple[str, float]]:
        with self._lock:
            self._require()
            return self._current_bm25().search(query, k)

    def _bm25_path(self) -> Path | None:
        return None if self._dir is None else self._dir / "bm25.npz"

    def _current_bm25(self) -> Bm25Index:
        """BM25 of the current corpus: in memory, else loaded from disk, else built (and saved)."""
        if self._bm25 is not None and not self._bm25_dirty:
            return self._bm25
        path = self._bm25_path()
        if self._bm25 is None and path is not None:
            loaded = bm25_file.load(path, self.config.bm25, self._generation)
            if loaded is not None:
                self._bm25, self._bm25_dirty, self._bm25_saved = loaded, False, True
                return loaded
        rows = self._db.execute("SELECT chunk_id, title, text FROM chunks ORDER BY slot").fetchall()
        index = Bm25Index(self.config.bm25)
        index.build([r[0] for r in rows], [f"{r[1]}\n{r[2]}" if r[1] else r[2] for r in rows])
        self.bm25_builds += 1
        self._bm25, self._bm25_dirty, self._bm25_saved = index, False, False
        self._save_bm25()
        return index

    def _save_bm25(self) -> None:
        path = self._bm25_path()
        if path is None or self._bm25 is None or self._bm25_dirty or self._bm25_saved:
            return
        try:
            bm25_file.save(path, self._bm25, self._generation)
        except OSError as e:
            raise BackendError(f"cannot save the BM25 index to {path}: {e}") from e
        self._bm25_saved = True

    def _bump_generation(self) -> None:
        """Inside a write transaction: the corpus changes, so any saved BM25 is stale."""
        self._db.execute(
            "INSERT INTO meta VALUES ('generation', ?) "
            "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            (str(self._generation + 1),),
        )

    # -- writes --------------------------------------------------------------------------------

    def replace(
        self, docs: Sequence[Document], chunks: Sequence[Chunk], vectors: NDArray[np.float32]
    ) -> None:
        dense = self._require()
        vecs = np.asarray(vectors, dtype=np.float32)
        if vecs.shape != (len(chunks), dense.dim):
            raise InvalidInputError(
                f"{len(chunks)} chunks need a ({len(chunks)}, {dense.dim}) array, got {vecs.shape}"
            )
        if not np.isfinite(vecs).all():
            raise InvalidInputError("chunk vectors contain NaN or infinity")
        doc_ids = {d.id for d in docs}
        stray = {c.doc_id for c in chunks} - doc_ids
        if stray:
            raise InvalidInputError(f"chunks of documents not being stored: {sorted(stray)[:5]}")
        with self._lock:
            # Vectors first, in dead slots: SQLite never names a slot that is not on disk.
            slots = dense.append(vecs)
            self._slot_ids.extend([None] * len(slots))
            self._db.execute("BEGIN IMMEDIATE")
            try:
                old = self._remove_docs(list(doc_ids))
                self._db.executemany(
                    "INSERT INTO documents (doc_id, hash) VALUES (?, ?)",
                    [(d.id, d.hash) for d in docs],
                )
                self._db.executemany(
                    f"INSERT INTO chunks ({_CHUNK_COLUMNS}) VALUES (?,?,?,?,?,?,?,?)",
                    [
                        (
                            int(s),
                            c.id,
                            c.doc_id,
                            c.index,
                            c.text,
                            c.title,
                            c.doc_hash,
                            json.dumps(dict(c.metadata), ensure_ascii=False, allow_nan=False),
                        )
                        for s, c in zip(slots, chunks, strict=True)
                    ],
                )
                self._bump_generation()
                self._db.execute("COMMIT")
            except (sqlite3.DatabaseError, TypeError, ValueError) as e:
                self._db.execute("ROLLBACK")
                raise BackendError(f"cannot store chunks: {e}") from e
            self._generation += 1
            self._forget(old)
            for slot, chunk in zip(slots.tolist(), chunks, strict=True):
                self._slot_ids[slot] = chunk.id
            dense.activate(slots)
            self._bm25_dirty = True

    def _remove_docs(self, doc_ids: list[str]) -> list[int]:
        """Delete rows of these documents (inside a transaction); returns their slots."""
        slots: list[int] = []
        for part in _batched(doc_ids):
            marks = ",".join("?" * len(part))
            slots.extend(
                int(r[0])
                for r in self._db.execute(
                    f"SELECT slot FROM chunks WHERE doc_id IN ({marks})", list(part)
                )
            )
            self._db.execute(f"DELETE FROM chunks WHERE doc_id IN ({marks})", list(part))
            self._db.execute(f"DELETE FROM documents WHERE doc_id IN ({marks})", list(part))
        return slots

    def _forget(self, slots: list[int]) -> None:
        if self._dense is not None:
            self._dense.kill(slots)
        for slot in slots:
            self._slot_ids[slot] = None
        if slots:
            self._bm25_dirty = True

    def delete(self, doc_ids: Iterable[str]) -> int:
        ids = list(dict.fromkeys(doc_ids))
        with self._lock:
            self._require()
            existing = len(self.doc_hashes(ids))
            self._db.execute("BEGIN IMMEDIATE")
            try:
                slots = self._remove_docs(ids)
                self._bump_generation()
                self._db.execute("COMMIT")
            except sqlite3.DatabaseError as e:
                self._db.execute("ROLLBACK")
                raise BackendError(f"cannot delete documents: {e}") from e
            self._generation += 1
            self._forget(slots)
            return existing

    # -- sizes and lifecycle -------------------------------------------------------------------

    @property
    def calibrated_on(self) -> int:
        """How many live chunks the quantizers were last fitted on."""
        with self._lock:
            return self._require().calibrated_on

    def vector_bytes(self) -> dict[str, int]:
        """Bytes per vector of each representation this store keeps, without graph overhead."""
        with self._lock:
            return self._require().vector_bytes()

    def memory(self) -> list[MemoryUse]:
        with self._lock:
            out = self._require().memory()
            if self._bm25 is not None:
                out.append(MemoryUse(name="bm25", nbytes=self._bm25.nbytes, resident=True))
            return out

    def flush(self) -> None:
        """Write the HNSW snapshots now, and BM25 if sparse search is in use and it changed."""
        with self._lock:
            if self._dense is not None:
                self._dense.flush()
            path = self._bm25_path()
            in_use = self._bm25 is not None or (path is not None and path.exists())
            if in_use and self._dense is not None and (self._bm25_dirty or not self._bm25_saved):
                self._current_bm25()
                self._save_bm25()

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self.flush()
            self._db.close()
            self._closed = True

    def __enter__(self) -> EmbeddedRetrievalStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
