"""The run lock: flock on a file that is never deleted; the kernel frees it when we die."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path


class Locked(Exception):
    pass


class LockError(Exception):
    """The lock file cannot be opened (a state folder that is a file, a lock that is a
    folder, a read-only disk): nothing was done."""


class RunLock:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd: int | None = None

    def __enter__(self) -> RunLock:
        folder = self.path.parent
        try:
            folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            why = ("it is a file, not a folder" if isinstance(exc, FileExistsError)
                   or folder.is_file() else exc.strerror or str(exc))
            raise LockError(f"cannot use the state folder {folder}: {why}; fix the `state` "
                            "setting or the path") from exc
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC,
                         0o600)
        except OSError as exc:
            why = ("it is a folder: remove it (vigo creates the file)"
                   if isinstance(exc, IsADirectoryError) else
                   "it is a symlink: remove it (vigo creates the file)"
                   if self.path.is_symlink() else exc.strerror or str(exc))
            raise LockError(f"cannot open the run lock {self.path}: {why}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            os.close(fd)
            raise Locked(f"another vigo run holds {self.path}") from exc
        try:  # the pid is for `vigo status` only: a full state folder must not stop the run
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
        except OSError:
            pass
        self.fd = fd
        return self

    def __exit__(self, *exc: object) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def holder(path: Path, proc_locks: Path = Path("/proc/locks")) -> int | None:
    """The pid of the process that holds the run lock now, or None. Reads the pid the holder
    wrote into the file and checks /proc/locks: never takes the lock, so `vigo status` cannot
    delay or refuse a run."""
    try:
        pid = int(path.read_text().split()[0])
        inode = path.stat().st_ino
        table = proc_locks.read_text()
    except (OSError, ValueError, IndexError):
        return None
    for line in table.splitlines():
        # "1: FLOCK  ADVISORY  WRITE 4242 fd:01:131090 0 EOF" (a "->" line is a waiter)
        parts = line.split()
        if "->" in parts or len(parts) < 6 or parts[1] != "FLOCK":
            continue
        try:
            if int(parts[4]) == pid and int(parts[5].rsplit(":", 1)[1]) == inode:
                return pid
        except (ValueError, IndexError):
            continue
    return None
