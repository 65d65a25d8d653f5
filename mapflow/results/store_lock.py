"""One writer per result store: a lock file next to the store (``<store>.lock``) that names its holder.

Next to, not inside: zarr warns about every file in a store it does not know. The exclusion itself is an ``flock``
on that file: the kernel drops it when the holding process dies (SIGKILL included), so a lock never outlives its
writer. The file's content (pid, host, start time, command) is what a refused writer is told; the holder deletes
the file on release, so a file found under a free flock was left by a writer that died: that stale lock is taken
over, with a warning. Where the file system cannot ``flock``, the content alone decides: a live pid on this host
holds the store.
"""

from __future__ import annotations

import atexit
import errno
import json
import logging
import os
import socket
import sys
import weakref
from datetime import UTC, datetime
from pathlib import Path

from ..errors import MapflowError

try:
    import fcntl
except ImportError:  # not POSIX: the content check below is all there is
    fcntl = None

log = logging.getLogger(__name__)

LOCK_SUFFIX = ".lock"
_HELD: weakref.WeakSet = weakref.WeakSet()  # released at interpreter exit, so an unclosed writer leaves no stale lock


def lock_path(store: Path) -> Path:
    store = Path(os.path.abspath(store))  # `--out .` has no name of its own
    return store.with_name(store.name + LOCK_SUFFIX)


class StoreLocked(MapflowError):
    """Another live process is writing the store."""


def describe_holder(holder: dict) -> str:
    return (
        f"pid {holder.get('pid')} on host {holder.get('host')}, started {holder.get('started')}, "
        f"command: {holder.get('command')}"
    )


class StoreLock:
    """Held while a writer has a store open; `release` (or process death) frees it."""

    def __init__(self, fd: int, path: Path) -> None:
        self._fd: int | None = fd
        self.path = path

    @classmethod
    def acquire(cls, store: Path) -> StoreLock:
        """Lock `store` for writing or raise `StoreLocked` naming the holder."""
        store = Path(store)
        path = lock_path(store)
        path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            locked = _flock(fd)
            if locked is False or _same_file(fd, path):
                break
            os.close(fd)  # the holder released (deleted) this file between our open and flock: lock the new one
        try:
            previous = _read(fd)
            if locked is False or (locked is None and previous and _alive_here(previous)):
                holder = describe_holder(previous) if previous else "a process that is just starting"
                raise StoreLocked(
                    f"{store} is being written by another run ({holder}; lock file {path}); wait for "
                    "it to end, stop it, or choose another --out"
                )
            if previous:
                log.warning("%s: taking over a stale lock (%s): that process is gone", store, describe_holder(previous))
            _write(
                fd,
                {
                    "pid": os.getpid(),
                    "host": socket.gethostname(),
                    "started": datetime.now(UTC).isoformat(timespec="seconds"),
                    "command": " ".join(sys.argv),
                },
            )
        except BaseException:
            os.close(fd)
            raise
        lock = cls(fd, path)
        _HELD.add(lock)
        return lock

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        """Delete the file (a clean release) while still locked, then drop the flock. Safe to call twice."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            if _same_file(fd, self.path):
                self.path.unlink()
        except OSError:
            pass
        finally:
            os.close(fd)

    def __del__(self) -> None:
        try:
            self.release()
        except Exception:
            pass


@atexit.register
def _release_all() -> None:
    for lock in list(_HELD):
        lock.release()


def _flock(fd: int) -> bool | None:
    """True: this process now holds the lock; False: another one does; None: the file system cannot lock."""
    if fcntl is None:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    except OSError as err:
        if err.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
            return None  # no flock here: `acquire` falls back to the content check
        raise
    return True


def _same_file(fd: int, path: Path) -> bool:
    try:
        return os.stat(path).st_ino == os.fstat(fd).st_ino
    except FileNotFoundError:
        return False


def _read(fd: int) -> dict:
    raw = os.pread(fd, 1 << 16, 0)
    if not raw.strip():
        return {}  # a clean lock file, or one its holder has created but not yet written
    try:
        holder = json.loads(raw)
    except ValueError:
        return {"pid": "?", "host": "?", "started": "?", "command": "(unreadable lock file)"}
    return holder if isinstance(holder, dict) else {}


def _write(fd: int, holder: dict) -> None:
    data = json.dumps(holder).encode()
    os.ftruncate(fd, 0)
    os.pwrite(fd, data, 0)
    os.fsync(fd)


def read_holder(store: Path) -> dict | None:
    """Who holds ``store``'s lock, as its lock file says, without taking the lock (taking it, even for a moment,
    could turn a writer starting at that moment away): None when there is no lock file (a writer deletes it when it
    ends), {} when its writer has not written it yet."""
    try:
        fd = os.open(lock_path(store), os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        return _read(fd)
    finally:
        os.close(fd)


def alive_here(holder: dict) -> bool:
    """The holder is a live process on this host (False for another host: it cannot be checked from here)."""
    return _alive_here(holder)


def _alive_here(holder: dict) -> bool:
    if holder.get("host") != socket.gethostname() or not isinstance(holder.get("pid"), int):
        return False
    try:
        os.kill(holder["pid"], 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
