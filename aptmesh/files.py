"""Writing files so that a kill never leaves a partial file that looks whole.

The pattern DESIGN.md asks for: write under a temporary name, fsync, rename,
fsync the directory (so the rename itself survives a power cut).

And the two checks every service with a directory of its own makes: a lock
that keeps a second process off it (`lock_directory`), and whether it is
still there and writable (`writable_directory`, for readiness).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import uuid
from pathlib import Path


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes, tmp_dir: Path | None = None) -> None:
    """Writes `data` to `path` under a temporary name in `tmp_dir` (default: beside it),
    fsyncs, renames. `tmp_dir` must be on the same file system as `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = (tmp_dir or path.parent) / f".{uuid.uuid4().hex}.part"
    try:
        with tmp.open("wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


class DirectoryInUse(OSError):
    """Another process holds the lock of a data or cache directory."""


class DirectoryLock:
    """An exclusive lock on a directory for the life of a process (`lock_directory`).

    The lock is `flock` on `DIR/.lock`: the kernel drops it when the holder exits, however it
    exits (kill -9 included), so a stale lock file never keeps a restarted service out. The
    file holds the holder's pid, for the message the second process prints.
    """

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd: int | None = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor releases the flock
            self._fd = None


LOCK_FILE = ".lock"


def lock_directory(directory: Path, what: str) -> DirectoryLock:
    """Takes `directory`'s lock (creating the directory) or raises DirectoryInUse naming
    `what` (e.g. "seeder data directory") and the holder's pid."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise DirectoryInUse(
            f"{what} {directory} is in use by another process (pid {holder}); "
            "give each process its own directory"
        ) from None
    except BaseException:
        os.close(fd)
        raise
    with contextlib.suppress(OSError):  # the pid is for messages only; a full disk refuses it
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return DirectoryLock(path, fd)


def writable_directory(directory: Path) -> str | None:
    """None when `directory` exists and a file can be made in it; else what is wrong (for a
    readiness probe: a data directory removed or made read-only under a running service)."""
    if not directory.is_dir():
        return f"{directory} is gone"
    probe = directory / f".probe-{uuid.uuid4().hex}"
    try:
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        return f"{directory} is not writable: {exc.strerror}"
    return None
