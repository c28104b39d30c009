"""Adaptive thresholds' learned state in Redis keys, shared by every replica on the server.

Keys under ``prefix`` (see :mod:`semcache.matching.learned_state` for what they hold)::

    {prefix}:meta              hash: settings, centroids (set once, then checked)
    {prefix}:seen              hash: region -> observations ever recorded (HINCRBY)
    {prefix}:t:{region}:{gen}  hash: bin -> observations in that generation (HINCRBY)
    {prefix}:f:{region}:{gen}  hash: bin -> false hits in that generation (HINCRBY)
    {prefix}:floors            sorted set: entry id -> floor (ZADD GT: only ever raised)
    {prefix}:floor_order       sorted set: entry id -> last update (trims to keep_floors)

A write is two round trips: the ``seen`` increments (whose replies name each batch's
generation), then every count increment in one pipeline. Works with a client built with or
without ``decode_responses``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import numpy as np

from semcache.errors import BackendError, BackendUnavailableError, ConfigurationError
from semcache.matching.binned import BINS
from semcache.matching.learned_state import (
    Batch,
    Snapshot,
    StateSpec,
    decode_centroids,
    generation,
)

if TYPE_CHECKING:
    from numpy.typing import NDArray

__all__ = ["RedisLearnedState"]


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class RedisLearnedState:
    """Learned state in Redis.

    Args:
        client: a ready-built synchronous ``redis.Redis`` client (not closed by :meth:`close`).
        prefix: the keys' prefix; one per set of adaptive settings and centroids.
    """

    def __init__(self, client: Any, prefix: str = "semcache:learned") -> None:
        if not prefix or any(c.isspace() for c in prefix):
            raise ConfigurationError(f"prefix must be a non-empty word, got {prefix!r}")
        self._client = client
        self.prefix = prefix
        self.where = f"Redis keys {prefix}:*"
        self._spec: StateSpec | None = None
        self._lock = threading.Lock()

    @contextmanager
    def _io(self, action: str) -> Iterator[None]:
        import redis.exceptions as rex

        try:
            yield
        except (rex.ConnectionError, rex.TimeoutError, OSError) as e:
            raise BackendUnavailableError(f"cannot {action} in {self.where}: {e}") from e
        except rex.RedisError as e:
            raise BackendError(f"cannot {action} in {self.where}: {e}") from e

    def _bound(self) -> StateSpec:
        if self._spec is None:
            raise ConfigurationError(f"the learned state at {self.where} is used before bind()")
        return self._spec

    def bind(self, spec: StateSpec) -> None:
        meta = f"{self.prefix}:meta"
        with self._lock, self._io("bind the learned state"):
            pipe = self._client.pipeline(transaction=True)
            pipe.hsetnx(meta, "settings", spec.settings_text)
            pipe.hsetnx(meta, "centroids", spec.centroids_text)
            pipe.hmget(meta, ["settings", "centroids"])
            *_, (settings, centroids) = pipe.execute()
        spec.check(self.where, _text(settings), _text(centroids or ""))
        self._spec = spec

    def add(self, batch: Batch) -> None:
        spec = self._bound()
        p = self.prefix
        with self._lock, self._io("add learned counts"):
            pipe = self._client.pipeline(transaction=False)
            for rb in batch.regions:
                pipe.hincrby(f"{p}:seen", str(rb.region), rb.n)
            seen = pipe.execute() if batch.regions else []
            pipe = self._client.pipeline(transaction=False)
            for rb, n in zip(batch.regions, seen, strict=True):
                gen = generation(int(n), spec.half)
                for kind, counts in (("t", rb.total), ("f", rb.false)):
                    key = f"{p}:{kind}:{rb.region}:{gen}"
                    for b, c in zip(rb.bins, counts, strict=True):
                        if c:
                            pipe.hincrby(key, str(int(b)), int(c))
                    for old in (gen - 2, gen - 3):  # older generations are forgotten
                        if old >= 0:
                            pipe.delete(f"{p}:{kind}:{rb.region}:{old}")
            if batch.floors:
                now = time.time()
                pipe.zadd(f"{p}:floors", batch.floors, gt=True)
                pipe.zadd(f"{p}:floor_order", dict.fromkeys(batch.floors, now))
                pipe.zcard(f"{p}:floor_order")
            replies = pipe.execute()
            extra = int(replies[-1]) - spec.keep_floors if batch.floors else 0
            if extra > 0:
                oldest = self._client.zrange(f"{p}:floor_order", 0, extra - 1)
                if oldest:
                    pipe = self._client.pipeline(transaction=False)
                    pipe.zrem(f"{p}:floors", *oldest)
                    pipe.zrem(f"{p}:floor_order", *oldest)
                    pipe.execute()

    def load(self) -> Snapshot:
        spec = self._bound()
        p = self.prefix
        snap = Snapshot.empty(spec.regions)
        with self._lock, self._io("read the learned state"):
            pipe = self._client.pipeline(transaction=False)
            pipe.hgetall(f"{p}:seen")
            pipe.zrange(f"{p}:floors", 0, -1, withscores=True)
            seen, floors = pipe.execute()
            for region, n in seen.items():
                r = int(_text(region))
                if 0 <= r < spec.regions:
                    snap.seen[r] = int(n)
            pipe = self._client.pipeline(transaction=False)
            for r in range(spec.regions):
                latest = generation(int(snap.seen[r]), spec.half)
                for slot in (0, 1):
                    gen = latest - slot
                    pipe.hgetall(f"{p}:t:{r}:{gen}")
                    pipe.hgetall(f"{p}:f:{r}:{gen}")
            hashes = pipe.execute()
        for i, counts in enumerate(hashes):
            r, rest = divmod(i, 4)
            slot, kind = divmod(rest, 2)
            target = snap.false if kind else snap.total
            _fill(target[r, slot], counts)
        snap.floors.update((_text(e), float(f)) for e, f in floors)
        return snap

    def stored_centroids(self) -> NDArray[np.float32] | None:
        with self._lock, self._io("read the learned state"):
            settings, centroids = self._client.hmget(
                f"{self.prefix}:meta", ["settings", "centroids"]
            )
        return decode_centroids(
            None if settings is None else _text(settings),
            None if centroids is None else _text(centroids),
        )

    def close(self) -> None:
        """Nothing to release: the client belongs to the caller."""


def _fill(row: NDArray[np.int64], counts: dict[Any, Any]) -> None:
    for b, c in counts.items():
        i = int(_text(b))
        if 0 <= i < BINS:
            row[i] = int(c)
