"""The observations behind adaptive thresholds: local counts, optionally shared through a store.

A :class:`Ledger` holds counts per ``(region, bin)`` in two generations (the latest, and the one
before: :mod:`semcache.matching.learned_state`) and the per-entry floors. Every read and update
the decision path makes is in memory. With a :class:`LearnedState`:

- construction binds the store (a store of other settings or centroids raises
  :class:`ConfigurationError`) and loads it;
- each update is also added to a pending batch, written by one background worker thread soon
  after (at most one write every 50 ms, batching what arrives meanwhile; own updates are
  visible locally at once);
- the worker re-reads the store when the snapshot is older than ``refresh_every`` seconds (checked
  on every decision). Staleness bound: a verdict given on replica A reaches the store within
  50 ms plus one write (while the store is reachable), and replica B reads it at its first
  refresh after that, within ``refresh_every`` plus one read (``bench/bench_adaptive.py``
  measures both) provided B is making decisions (an idle replica refreshes at its next one);
- :meth:`Ledger.sync` / :meth:`Ledger.async_sync` write and read now (tests, shutdown).

Storage failures never reach the caller: a failed write keeps its batch pending (merged with
later ones: bounded by a few generations' counts per region plus the floors) and retries; a
failed read keeps the last snapshot (or, before any, no observations: the static
``initial_threshold``). Each failure is counted in :attr:`Ledger.errors` and logged (a warning
at most every 10 s).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from semcache.errors import ConfigurationError, SemcacheError
from semcache.matching.binned import BINS
from semcache.matching.learned_state import (
    Batch,
    LearnedState,
    RegionBatch,
    Snapshot,
    StateSpec,
)

if TYPE_CHECKING:
    from numpy.typing import NDArray

__all__ = ["Ledger"]

log = logging.getLogger("semcache")

_WARN_EVERY = 10.0
_WRITE_EVERY = 0.05  # seconds between two background writes (the batching window)
_CHUNKS = 3  # pending generations kept per region while the store cannot be written


class Ledger:
    """Counts and floors of adaptive thresholds (thread-safe); see the module docstring."""

    def __init__(
        self,
        spec: StateSpec,
        *,
        state: LearnedState | None = None,
        refresh_every: float = 1.0,
    ) -> None:
        k = spec.regions
        self._spec = spec
        self._state = state
        self._refresh_every = refresh_every
        self._lock = threading.RLock()
        self._seen = np.zeros(k, dtype=np.int64)
        self._total = np.zeros((k, 2, BINS), dtype=np.int64)  # [latest generation, previous]
        self._false = np.zeros((k, 2, BINS), dtype=np.int64)
        self._kept_total = np.zeros((k, BINS), dtype=np.int64)  # both generations summed
        self._kept_false = np.zeros((k, BINS), dtype=np.int64)
        self._floors: dict[str, float] = {}
        self._pending = _Pending(k)
        self.version = 0  # bumped on every change of the counts
        self.errors = 0
        self._bound = False
        self._refused: ConfigurationError | None = None
        self._loaded_at = -float("inf")
        self._queued = False
        self._written_at = -float("inf")
        self._hurry = threading.Event()  # set by sync(): a waiting background write goes now
        self._worker: ThreadPoolExecutor | None = None
        self._last_warning = -float("inf")
        if state is not None:
            self._connect(raise_mismatch=True)

    # -- reads (in memory) ----------------------------------------------------------------------

    def counts(self) -> tuple[NDArray[np.int64], NDArray[np.int64], int]:
        """Both generations summed: ``(regions, BINS)`` observations, false hits, and version
        (copies, so a solve can run outside the lock)."""
        with self._lock:
            return self._kept_total.copy(), self._kept_false.copy(), self.version

    def floor(self, entry_id: str) -> float | None:
        """The similarity ``entry_id`` must exceed (after a wrong serve), if any."""
        return self._floors.get(entry_id)

    @property
    def observations(self) -> int:
        """Observations currently kept (both generations, every region)."""
        with self._lock:
            return int(self._total.sum())

    # -- updates ----------------------------------------------------------------------------------

    def observe(self, region: int, bins: NDArray[np.int64], false: NDArray[np.bool_]) -> None:
        """Record observations of ``region`` at ``bins`` (``false``: served wrongly)."""
        half = self._spec.half
        with self._lock:
            start = 0
            while start < len(bins):
                seen = int(self._seen[region])
                gen = seen // half  # the generation of the next observation
                new = bool(seen) and gen > (seen - 1) // half
                if new:
                    self._rotate(region, gen, (seen - 1) // half)
                room = (gen + 1) * half - seen  # observations left in this generation
                chunk = slice(start, start + room)
                b, f = bins[chunk], false[chunk]
                for counts in (self._total[region, 0], self._kept_total[region]):
                    np.add.at(counts, b, 1)
                for counts in (self._false[region, 0], self._kept_false[region]):
                    np.add.at(counts, b[f], 1)
                self._seen[region] += len(b)
                if self._state is not None:
                    self._pending.add(region, b, f, new=new)
                start += len(b)
            self.version += 1
        self._schedule()

    def _rotate(self, region: int, new: int, old: int) -> None:
        """Start generation ``new`` of ``region`` (its latest was ``old``)."""
        if new == old:
            return
        self._kept_total[region] -= self._total[region, 1]  # the oldest generation goes
        self._kept_false[region] -= self._false[region, 1]
        if new == old + 1:
            self._total[region, 1] = self._total[region, 0]
            self._false[region, 1] = self._false[region, 0]
        else:
            self._total[region, 1] = 0
            self._false[region, 1] = 0
        self._total[region, 0] = 0
        self._false[region, 0] = 0
        if new != old + 1:
            self._kept_total[region] = 0
            self._kept_false[region] = 0

    def raise_floor(self, entry_id: str, floor: float) -> None:
        """``entry_id`` is not served again at ``floor`` or below (keeps the latest ``keep``)."""
        with self._lock:
            floors = self._floors
            floors[entry_id] = max(floor, floors.pop(entry_id, floor))
            while len(floors) > self._spec.keep_floors:
                del floors[next(iter(floors))]
            if self._state is not None:
                self._pending.floor(entry_id, floors[entry_id])
        self._schedule()

    # -- sharing ----------------------------------------------------------------------------------

    def poll(self) -> None:
        """On the decision path: schedule a read of the store if the snapshot is stale."""
        if self._state is not None and time.monotonic() - self._loaded_at >= self._refresh_every:
            self._schedule()

    def sync(self) -> None:
        """Write pending updates and read the store now (blocking); failures are counted."""
        if self._state is not None:
            self._submit(force=True).result()

    async def async_sync(self) -> None:
        """:meth:`sync`, awaited (the store's I/O stays on the worker thread)."""
        if self._state is not None:
            await asyncio.wrap_future(self._submit(force=True))

    def close(self) -> None:
        """Write pending updates, stop the worker, close the store."""
        if self._state is None:
            return
        self.sync()
        if self._worker is not None:
            self._worker.shutdown(wait=True)
            self._worker = None
        try:
            self._state.close()
        except SemcacheError as e:
            self._failed("close", e)

    def _schedule(self) -> None:
        if self._state is None:
            return
        with self._lock:
            if self._queued:
                return
            self._queued = True
        self._submit(force=False)

    def _submit(self, *, force: bool) -> Future[None]:
        if force:
            self._hurry.set()
        with self._lock:
            if self._worker is None:
                self._worker = ThreadPoolExecutor(1, thread_name_prefix="semcache-learned")
            job = self._worker.submit(self._run, force)
        job.add_done_callback(_report_bug)
        return job

    def _run(self, force: bool) -> None:
        """One worker job: bind if needed, write what is pending, read if due (or forced)."""
        if not force:  # batch what arrives meanwhile: one write per _WRITE_EVERY at most
            self._hurry.wait(max(0.0, self._written_at + _WRITE_EVERY - time.monotonic()))
            with self._lock:
                self._queued = False
        else:
            self._hurry.clear()
        if self._refused is not None or (not self._bound and not self._connect()):
            return
        with self._lock:
            batch = self._pending.take()
        if batch is not None:
            self._written_at = time.monotonic()
            if not self._write(batch):
                return
        if force or time.monotonic() - self._loaded_at >= self._refresh_every:
            self._read()

    def _connect(self, *, raise_mismatch: bool = False) -> bool:
        assert self._state is not None
        try:
            self._state.bind(self._spec)
        except ConfigurationError as e:
            if raise_mismatch:
                raise
            self._refused = e
            log.error("semcache: learned state not shared from now on: %s", e)
            return False
        except SemcacheError as e:
            self._failed("bind", e)
            return False
        self._bound = True
        self._read()
        return True

    def _write(self, batch: Batch) -> bool:
        assert self._state is not None
        try:
            self._state.add(batch)
        except SemcacheError as e:
            with self._lock:
                self._pending.give_back(batch)
            self._failed("write", e)
            return False
        return True

    def _read(self) -> None:
        assert self._state is not None
        try:
            snap = self._state.load()
        except SemcacheError as e:
            self._failed("read", e)
            return
        with self._lock:
            self._adopt(snap)

    def _adopt(self, snap: Snapshot) -> None:
        """The store's counts, plus what is still pending here (written by the next job)."""
        total, false = snap.total.copy(), snap.false.copy()
        seen = snap.seen.copy()
        self._pending.replay(seen, total, false)
        floors = dict(snap.floors)
        for entry_id, f in self._pending.floors.items():
            floors[entry_id] = max(f, floors.get(entry_id, f))
        self._seen, self._total, self._false, self._floors = seen, total, false, floors
        self._kept_total, self._kept_false = total.sum(axis=1), false.sum(axis=1)
        self._loaded_at = time.monotonic()
        self.version += 1

    def _failed(self, action: str, error: SemcacheError) -> None:
        with self._lock:
            self.errors += 1
            now = time.monotonic()
            loud = now - self._last_warning >= _WARN_EVERY
            if loud:
                self._last_warning = now
        where = self._state.where if self._state is not None else "memory"
        message = "semcache: learned state %s failed at %s (thresholds use the last snapshot): %s"
        if loud:
            log.warning(message, action, where, error)
        else:
            log.debug(message, action, where, error)


@dataclass(slots=True)
class _Chunk:
    """Pending observations of one region within one generation."""

    starts_generation: bool
    n: int = 0
    total: NDArray[np.int64] = field(default_factory=lambda: np.zeros(BINS, dtype=np.int64))
    false: NDArray[np.int64] = field(default_factory=lambda: np.zeros(BINS, dtype=np.int64))


class _Pending:
    """Updates not yet written: per region, counts per bin in one chunk per generation started
    locally (so each lands in its own generation in the store), and floors. Bounded: at most
    :data:`_CHUNKS` chunks per region (older ones would be forgotten anyway) and the floors."""

    def __init__(self, regions: int) -> None:
        self.chunks: list[list[_Chunk]] = [[] for _ in range(regions)]
        self.floors: dict[str, float] = {}

    def add(
        self, region: int, bins: NDArray[np.int64], false: NDArray[np.bool_], *, new: bool
    ) -> None:
        chunks = self.chunks[region]
        if new or not chunks:
            chunks.append(_Chunk(starts_generation=new))
            del chunks[:-_CHUNKS]
        chunk = chunks[-1]
        np.add.at(chunk.total, bins, 1)
        np.add.at(chunk.false, bins[false], 1)
        chunk.n += len(bins)

    def floor(self, entry_id: str, floor: float) -> None:
        self.floors[entry_id] = max(floor, self.floors.get(entry_id, floor))

    def take(self) -> Batch | None:
        """Everything pending, as one batch (``None`` if nothing), leaving this empty."""
        if not any(self.chunks) and not self.floors:
            return None
        regions = []
        for r, chunks in enumerate(self.chunks):
            for c in chunks:
                bins = np.flatnonzero(c.total)
                regions.append(RegionBatch(r, c.n, bins, c.total[bins], c.false[bins]))
        batch = Batch(regions, self.floors)
        self.chunks = [[] for _ in self.chunks]
        self.floors = {}
        return batch

    def give_back(self, batch: Batch) -> None:
        """A batch whose write failed: pending again, before what came since."""
        back: list[list[_Chunk]] = [[] for _ in self.chunks]
        for rb in batch.regions:
            chunk = _Chunk(starts_generation=bool(back[rb.region]))
            chunk.n = rb.n
            chunk.total[rb.bins] = rb.total
            chunk.false[rb.bins] = rb.false
            back[rb.region].append(chunk)
        self.chunks = [(b + c)[-_CHUNKS:] for b, c in zip(back, self.chunks, strict=True)]
        for entry_id, f in batch.floors.items():
            self.floor(entry_id, f)

    def replay(
        self, seen: NDArray[np.int64], total: NDArray[np.int64], false: NDArray[np.int64]
    ) -> None:
        """Apply the pending chunks to a store snapshot's arrays, as they were applied here."""
        for r, chunks in enumerate(self.chunks):
            for c in chunks:
                if c.starts_generation:
                    total[r, 1], false[r, 1] = total[r, 0], false[r, 0]
                    total[r, 0], false[r, 0] = 0, 0
                total[r, 0] += c.total
                false[r, 0] += c.false
                seen[r] += c.n


def _report_bug(job: Future[None]) -> None:
    """A worker job that raised something other than a storage error is a bug: log it."""
    if job.cancelled():
        return
    error = job.exception()
    if error is not None:
        log.error("semcache: learned-state worker failed", exc_info=error)
