"""Checksummed snapshot files: hnswlib only ever reads a file that is byte for byte what it wrote.

hnswlib trusts its files: a corrupt one can crash the process on load or on the first search.
So each snapshot ``x.bin`` gets a sidecar ``x.bin.sha256`` (its size and SHA-256, as JSON),
written after the snapshot is complete and fsynced. :func:`verified` compares the two before
anyone loads the snapshot; a snapshot that fails is rebuilt by the caller from SQLite, which
holds every vector. A crash between the two renames leaves a pair that does not match, which
is rebuilt too: never a pair that matches and is wrong. The persisted BM25 index
(:mod:`semcache.retrieval.bm25_file`) is checked the same way.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

__all__ = ["checksum", "load", "remove", "sidecar", "verified", "write"]

log = logging.getLogger("semcache")

T = TypeVar("T")


def sidecar(path: Path) -> Path:
    """Where the checksum of ``path`` is kept."""
    return path.with_name(path.name + ".sha256")


def checksum(path: Path) -> dict[str, object]:
    """The size and SHA-256 of the file at ``path``."""
    with open(path, "rb") as f:
        digest = hashlib.file_digest(f, "sha256").hexdigest()
    return {"size": path.stat().st_size, "sha256": digest}


def write(path: Path, save: Callable[[Path], None]) -> None:
    """Have ``save`` write the snapshot to a temporary file, then publish it with its checksum.

    Each file is fsynced before it is renamed into place, and the directory after.
    """
    tmp = path.with_name(path.name + ".partial")
    try:
        save(tmp)
        _fsync(tmp)
        _write_atomic(sidecar(path), json.dumps(checksum(tmp)).encode())
        # The sidecar now describes the new snapshot: until the rename below, the old one
        # fails the check and is rebuilt if we crash here.
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def verified(path: Path) -> bool:
    """Whether ``path`` exists and matches its checksum; a mismatch is logged as a warning.

    ``False`` without a warning when there is no snapshot at all (nothing was saved).
    """
    check = sidecar(path)
    if not path.exists() and not check.exists():
        return False
    problem = _problem(path, check)
    if problem is None:
        return True
    log.warning("semcache: snapshot %s %s; rebuilding it from SQLite", path, problem)
    return False


def load(path: Path, open_snapshot: Callable[[Path], T]) -> T | None:
    """``open_snapshot(path)`` if the snapshot passes :func:`verified`, else ``None``.

    A snapshot that fails the check, or that passes it and still does not load, is logged as
    a warning: the caller rebuilds it from SQLite.
    """
    if not verified(path):
        return None
    try:
        return open_snapshot(path)
    except (RuntimeError, ValueError, OSError, MemoryError) as e:
        log.warning("semcache: cannot load %s (%s); rebuilding it from SQLite", path, e)
        return None


def remove(path: Path) -> None:
    """Delete a snapshot and its checksum, if present."""
    path.unlink(missing_ok=True)
    sidecar(path).unlink(missing_ok=True)


def _problem(path: Path, check: Path) -> str | None:
    """What is wrong with the snapshot (``None``: nothing)."""
    if not path.exists():
        return "is missing"
    try:
        expected = json.loads(check.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return "has no checksum"
    except (OSError, ValueError) as e:
        return f"has an unreadable checksum ({e})"
    try:
        actual = checksum(path)
    except OSError as e:
        return f"cannot be read ({e})"
    if not isinstance(expected, dict) or expected != actual:
        return "does not match its checksum (a partial write or a corrupt file)"
    return None


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".partial")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _fsync(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    """Make the renames in ``path`` durable (POSIX; Windows cannot open a directory)."""
    if os.name == "nt":
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
