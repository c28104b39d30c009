"""One writer per cache directory: an exclusive lock on ``<dir>/lock``, held while open.

POSIX ``flock`` (``msvcrt.locking`` on Windows). The kernel drops the lock when its holder
closes the file or dies, so a crashed process never leaves the directory locked; the pid written
into the file only names the holder in errors. Two opens in one process conflict too (each open
file holds its own lock). A process forked from the holder shares its lock, so the holder's pid
is kept to refuse use from a fork (:meth:`DirectoryLock.check_process`).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from semcache.errors import BackendError, ConfigurationError

__all__ = ["LOCK_NAME", "DirectoryLock", "holder_message"]

LOCK_NAME = "lock"
_PID_BYTES = 32  # the pid is written at the start; on Windows the byte after it is locked

if sys.platform == "win32":
    import msvcrt

    def _try_lock(fd: int) -> bool:
        os.lseek(fd, _PID_BYTES, os.SEEK_SET)
        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True

else:
    import fcntl

    def _try_lock(fd: int) -> bool:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True


def holder_message(directory: Path, holder: str) -> str:
    """Why ``directory`` cannot be opened, naming the holder's pid when it is known."""
    if holder.isdigit() and int(holder) == os.getpid():
        who = f"another backend in this process ({holder})"
    else:
        who = f"process {holder}" if holder.isdigit() else "another process"
    return (
        f"the cache directory {directory} is in use by {who}; one backend at a time may open "
        "it: close the other one, give each process its own directory, or share a RedisBackend"
    )


class DirectoryLock:
    """The held lock of one directory. :meth:`release` ends it (so does garbage collection)."""

    __slots__ = ("_fd", "path", "pid")

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self.pid = os.getpid()
        self._fd: int | None = fd

    @classmethod
    def acquire(cls, directory: Path) -> DirectoryLock:
        """Lock ``directory`` or raise :class:`ConfigurationError` naming who holds it."""
        path = directory / LOCK_NAME
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
        except OSError as e:
            raise BackendError(f"cannot create the lock file {path}: {e}") from e
        try:
            locked = _try_lock(fd)
            if locked:
                os.ftruncate(fd, 0)
                os.lseek(fd, 0, os.SEEK_SET)
                os.write(fd, f"{os.getpid()}\n".encode())
        except OSError as e:
            os.close(fd)
            raise BackendError(f"cannot lock {path}: {e}") from e
        if not locked:
            holder = _read_holder(fd)
            os.close(fd)
            raise ConfigurationError(holder_message(directory, holder))
        return cls(path, fd)

    @property
    def held(self) -> bool:
        return self._fd is not None

    def check_process(self) -> None:
        """Refuse use from a process forked from the holder (it shares the lock, not the right)."""
        if os.getpid() != self.pid:
            raise BackendError(
                f"the cache directory {self.path.parent} was opened by process {self.pid} and is "
                f"used by process {os.getpid()}, a fork of it: open the backend after forking, "
                "one directory per process"
            )

    def release(self) -> None:
        """Unlock and close; the file stays (removing it would race with a new holder)."""
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)  # closing the last descriptor drops the lock

    def __del__(self) -> None:
        self.release()


def _read_holder(fd: int) -> str:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        return os.read(fd, _PID_BYTES).decode("ascii", "replace").strip()
    except OSError:
        return ""
