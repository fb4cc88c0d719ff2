"""Writing files so that a kill never leaves a partial file that looks whole.

The pattern DESIGN.md asks for: write under a temporary name, fsync, rename,
fsync the directory (so the rename itself survives a power cut).
"""

from __future__ import annotations

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
