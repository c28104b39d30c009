"""Where adaptive thresholds keep what they learned, so replicas share it and restarts keep it.

A :class:`LearnedState` stores, for one set of adaptive-threshold settings and centroids:

- per region, how many observations were ever recorded (``seen``), and counts per similarity bin
  (:mod:`semcache.matching.binned`) of observations and of false hits, in *generations* of
  ``half`` observations: the latest two are kept, older ones are deleted (the drift window);
- per entry served wrongly, the similarity at or below which it is not served again (the most
  recent ``keep_floors``).

Updates are increments (a batch of counts per region), so replicas add concurrently without
losing each other's verdicts. A batch lands in the generation of its region's last observation.
A store written with other settings or centroids is refused (:class:`ConfigurationError`), as an
index written by another embedder is.

:class:`SqliteLearnedState` keeps them in an SQLite file (e.g. ``learned.sqlite3`` in the
embedded store's directory); :class:`semcache.matching.learned_redis.RedisLearnedState` in Redis
keys. Their methods raise :class:`BackendError` on a storage failure;
:class:`semcache.matching.ledger.Ledger` decides what such a failure means (never a failed lookup).
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from semcache.backends.sqlite_io import connect, transaction, translated
from semcache.errors import ConfigurationError
from semcache.matching.binned import BINS

if TYPE_CHECKING:
    from numpy.typing import NDArray

__all__ = [
    "Batch",
    "LearnedState",
    "RegionBatch",
    "Snapshot",
    "SqliteLearnedState",
    "StateSpec",
    "generation",
]

FORMAT = 1


def generation(seen: int, half: int) -> int:
    """The generation of a region's latest observation, after ``seen`` in all."""
    return 0 if seen <= 0 else (seen - 1) // half


@dataclass(frozen=True, slots=True)
class StateSpec:
    """What a shared store must agree on: the settings that change a solved threshold, and the
    centroids (as float32 bytes). ``half`` and ``keep_floors`` tell the store how to keep data."""

    settings: dict[str, Any]
    centroids: bytes
    half: int
    keep_floors: int

    @property
    def settings_text(self) -> str:
        return json.dumps({"format": FORMAT, **self.settings}, sort_keys=True)

    @property
    def centroids_text(self) -> str:
        return base64.b64encode(self.centroids).decode("ascii")

    @property
    def regions(self) -> int:
        return int(self.settings["regions"])

    def check(self, where: str, settings: str, centroids: str) -> None:
        """Raise :class:`ConfigurationError` unless the stored ``settings``/``centroids`` match."""
        if settings != self.settings_text:
            stored, given = json.loads(settings), json.loads(self.settings_text)
            diff = ", ".join(
                f"{k}: stored {stored.get(k)!r}, given {given.get(k)!r}"
                for k in sorted(set(stored) | set(given))
                if stored.get(k) != given.get(k)
            )
            raise ConfigurationError(
                f"the learned state at {where} was written with other adaptive settings ({diff});"
                " use the same settings, or another path or prefix for these"
            )
        if centroids != self.centroids_text:
            stored_hash = hashlib.sha256(base64.b64decode(centroids)).hexdigest()[:12]
            given_hash = hashlib.sha256(self.centroids).hexdigest()[:12]
            raise ConfigurationError(
                f"the learned state at {where} was written with other centroids (sha256 "
                f"{stored_hash}..., given {given_hash}...); pass the centroids it was built with"
                " (stored_centroids()), or use another path or prefix"
            )


@dataclass(frozen=True, slots=True)
class RegionBatch:
    """New observations of one region: how many, and the counts of their non-empty bins."""

    region: int
    n: int
    bins: NDArray[np.int64]
    total: NDArray[np.int64]
    false: NDArray[np.int64]


@dataclass(frozen=True, slots=True)
class Batch:
    """Increments to add in one write."""

    regions: list[RegionBatch] = field(default_factory=list)
    floors: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Snapshot:
    """What a store holds: ``seen`` per region; counts ``(regions, 2, BINS)`` of the latest
    generation (index 0) and the one before (index 1); the entries' floors."""

    seen: NDArray[np.int64]
    total: NDArray[np.int64]
    false: NDArray[np.int64]
    floors: dict[str, float]

    @classmethod
    def empty(cls, regions: int) -> Snapshot:
        return cls(
            np.zeros(regions, dtype=np.int64),
            np.zeros((regions, 2, BINS), dtype=np.int64),
            np.zeros((regions, 2, BINS), dtype=np.int64),
            {},
        )


class LearnedState(Protocol):
    """Shared storage of adaptive thresholds' observations (see the module docstring)."""

    where: str

    def bind(self, spec: StateSpec) -> None:
        """Record ``spec`` in an empty store, or check it against the stored one."""
        ...

    def add(self, batch: Batch) -> None:
        """Add ``batch``'s counts and floors (increments; safe with concurrent writers)."""
        ...

    def load(self) -> Snapshot:
        """Read everything (after :meth:`bind`)."""
        ...

    def stored_centroids(self) -> NDArray[np.float32] | None:
        """The centroids a store was built with (``None``: one region, or an empty store)."""
        ...

    def close(self) -> None: ...


def decode_centroids(settings: str | None, centroids: str | None) -> NDArray[np.float32] | None:
    """The stored centroids as a ``(k, dim)`` array, from the stored texts."""
    if settings is None or centroids is None or not centroids:
        return None
    stored = json.loads(settings)
    data = np.frombuffer(base64.b64decode(centroids), dtype="<f4")
    return data.reshape(int(stored["regions"]), int(stored["dim"])).astype(np.float32)


_SCHEMA = """
CREATE TABLE IF NOT EXISTS learned_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS learned_seen (region INTEGER PRIMARY KEY, n INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS learned_counts (
    region INTEGER NOT NULL, generation INTEGER NOT NULL, bin INTEGER NOT NULL,
    total INTEGER NOT NULL, false INTEGER NOT NULL,
    PRIMARY KEY (region, generation, bin)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS learned_floors (
    entry_id TEXT PRIMARY KEY, floor REAL NOT NULL, seq INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS learned_floors_seq ON learned_floors (seq);
"""


class SqliteLearnedState:
    """Learned state in an SQLite file (WAL; several processes may share it).

    Args:
        path: the file, e.g. ``Path(cache_dir) / "learned.sqlite3"`` beside an embedded store
            (a file of its own, so its writes never wait for the entry store's lock).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self.where = self.path
        self._spec: StateSpec | None = None
        self._lock = threading.Lock()
        self._conn = connect(self.path)
        with translated(self.path, "create the learned-state tables"):
            self._conn.executescript(_SCHEMA)

    def _bound(self) -> StateSpec:
        if self._spec is None:
            raise ConfigurationError(f"the learned state at {self.where} is used before bind()")
        return self._spec

    def bind(self, spec: StateSpec) -> None:
        with self._lock, transaction(self._conn, self.path, "bind the learned state"):
            rows = dict(self._conn.execute("SELECT key, value FROM learned_meta").fetchall())
            if "settings" not in rows:
                self._conn.executemany(
                    "INSERT INTO learned_meta (key, value) VALUES (?, ?)",
                    [("settings", spec.settings_text), ("centroids", spec.centroids_text)],
                )
            else:
                spec.check(self.where, rows["settings"], rows.get("centroids", ""))
        self._spec = spec

    def add(self, batch: Batch) -> None:
        spec = self._bound()
        conn = self._conn
        with self._lock, transaction(conn, self.path, "add learned counts"):
            for rb in batch.regions:
                (seen,) = conn.execute(
                    "INSERT INTO learned_seen (region, n) VALUES (?, ?) ON CONFLICT (region)"
                    " DO UPDATE SET n = n + excluded.n RETURNING n",
                    (rb.region, rb.n),
                ).fetchone()
                gen = generation(int(seen), spec.half)
                conn.executemany(
                    "INSERT INTO learned_counts (region, generation, bin, total, false)"
                    " VALUES (?, ?, ?, ?, ?) ON CONFLICT (region, generation, bin) DO UPDATE"
                    " SET total = total + excluded.total, false = false + excluded.false",
                    [
                        (rb.region, gen, int(b), int(t), int(f))
                        for b, t, f in zip(rb.bins, rb.total, rb.false, strict=True)
                    ],
                )
                conn.execute(
                    "DELETE FROM learned_counts WHERE region = ? AND generation < ?",
                    (rb.region, gen - 1),
                )
            if batch.floors:
                (top,) = conn.execute("SELECT COALESCE(MAX(seq), 0) FROM learned_floors").fetchone()
                conn.executemany(
                    "INSERT INTO learned_floors (entry_id, floor, seq) VALUES (?, ?, ?)"
                    " ON CONFLICT (entry_id) DO UPDATE"
                    " SET floor = MAX(floor, excluded.floor), seq = excluded.seq",
                    [(e, f, top + i + 1) for i, (e, f) in enumerate(batch.floors.items())],
                )
                conn.execute(
                    "DELETE FROM learned_floors WHERE seq <= ?",
                    (top + len(batch.floors) - spec.keep_floors,),
                )

    def load(self) -> Snapshot:
        spec = self._bound()
        snap = Snapshot.empty(spec.regions)
        with self._lock, translated(self.path, "read the learned state"):
            conn = self._conn
            conn.execute("BEGIN")
            try:
                seen = conn.execute("SELECT region, n FROM learned_seen").fetchall()
                counts = conn.execute(
                    "SELECT region, generation, bin, total, false FROM learned_counts"
                ).fetchall()
                floors = conn.execute("SELECT entry_id, floor FROM learned_floors").fetchall()
            finally:
                conn.execute("COMMIT")
        for region, n in seen:
            if 0 <= region < spec.regions:
                snap.seen[region] = n
        if counts:
            rows = np.asarray(counts, dtype=np.int64)
            region, gen, b = rows[:, 0], rows[:, 1], rows[:, 2]
            valid = (region >= 0) & (region < spec.regions) & (b >= 0) & (b < BINS)
            rows, region, gen, b = rows[valid], region[valid], gen[valid], b[valid]
            latest = np.array([generation(int(s), spec.half) for s in snap.seen])[region]
            slot = latest - gen
            keep = (slot == 0) | (slot == 1)
            np.add.at(snap.total, (region[keep], slot[keep], b[keep]), rows[keep, 3])
            np.add.at(snap.false, (region[keep], slot[keep], b[keep]), rows[keep, 4])
        snap.floors.update((str(e), float(f)) for e, f in floors)
        return snap

    def stored_centroids(self) -> NDArray[np.float32] | None:
        with self._lock, translated(self.path, "read the learned state"):
            rows = dict(self._conn.execute("SELECT key, value FROM learned_meta").fetchall())
        return decode_centroids(rows.get("settings"), rows.get("centroids"))

    def close(self) -> None:
        with self._lock, translated(self.path, "close the learned state"):
            self._conn.close()
