"""Opening an existing store for operations, with no embedder: a directory or a Redis URL."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from semcache.backends.embedded import EmbeddedBackend, LocalBackend
from semcache.errors import ConfigurationError

if TYPE_CHECKING:
    from semcache.backends.base import Backend
    from semcache.models import ModelFingerprint

__all__ = ["REDIS_SCHEMES", "open_store", "stored_fingerprint"]

REDIS_SCHEMES = ("redis://", "rediss://", "unix://")
#: Operator commands move many entries per command and wait for them: a request path's
#: half-second socket timeout would fail a bulk write or delete on a busy server.
BULK_TIMEOUT = 30.0


def stored_fingerprint(backend: Backend) -> ModelFingerprint | None:
    """The embedding model a store records, or ``None`` for a store never written to."""
    if isinstance(backend, LocalBackend):
        return backend.fingerprint
    read = getattr(backend, "stored_fingerprint", None)
    if read is None:
        raise ConfigurationError(f"cannot read the embedding model of a {type(backend).__name__}")
    found: ModelFingerprint | None = read()
    return found


def open_store(target: str, *, name: str = "default", create: bool = False) -> Backend:
    """The backend of ``target`` (a cache directory, or a Redis URL with cache ``name``),
    bound to the model it records.

    A directory that holds no store is refused unless ``create`` (an import makes one); a store
    never written to is returned unbound.
    """
    backend: Backend
    if target.startswith(REDIS_SCHEMES):
        from semcache.backends.redis import RedisBackend, RedisConnection

        bulk = RedisConnection(socket_timeout=BULK_TIMEOUT, connect_timeout=5.0)
        backend = RedisBackend(target, name=name, connection=bulk)
    else:
        path = Path(target)
        if not create and not (path / "entries.sqlite3").is_file():
            raise ConfigurationError(f"no semcache store in {target!r} (no entries.sqlite3 there)")
        backend = EmbeddedBackend(path)
    try:
        fingerprint = stored_fingerprint(backend)
        if fingerprint is not None:
            backend.bind(fingerprint)
    except BaseException:
        backend.close()
        raise
    return backend
