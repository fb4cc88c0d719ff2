"""One download of one package file, shared by every client that asks for it meanwhile.

Theory of operation. A `Download` owns a temporary file under the cache's
`tmp/`. Its source (the upstream over HTTP, or the swarm) appends bytes in
order with `write`; readers that joined at any time read the same growing
file through their own descriptor (opened when they join, so the file can be
renamed into the cache or unlinked under them). Readers never slow the
source: they wait for the next `write` and read from the page cache.

Integrity: until the whole file has been checked against its expected SHA-256
and size, readers are held back one byte short of what was written, so no
client ever receives a complete response that has not been verified. If the
check fails, readers raise `DownloadFailed` and the HTTP layer cuts their
connection. Only after the check is the file committed to the cache (or, if it
is not to be kept, unlinked).
"""

from __future__ import annotations

import asyncio
import bisect
import enum
import errno
import hashlib
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

CHUNK = 256 * 1024


class DownloadFailed(Exception):
    """The download could not complete or did not verify; text is safe for clients."""

    def __init__(self, status: int, text: str, *, kind: str = "") -> None:
        super().__init__(text)
        self.status = status
        self.text = text
        self.kind = kind  # verification failure kind ("" for transport errors)


class DiskFull(DownloadFailed):
    """The cache's file system has no room left (ENOSPC, EDQUOT) for a file being stored."""


def is_disk_full(exc: OSError) -> bool:
    return exc.errno in (errno.ENOSPC, errno.EDQUOT)


DISK_FULL_TEXT = "the edge's cache disk is full"


@dataclass(frozen=True)
class Expected:
    """What the verified index says a file is."""

    sha256: str
    size: int


class State(enum.Enum):
    RUNNING = "running"
    OK = "ok"
    FAILED = "failed"


class Download:
    def __init__(self, key: str, tmp: Path, expected: Expected | None) -> None:
        self.key = key
        self.tmp = tmp
        self.expected = expected
        self.size: int | None = expected.size if expected else None
        self.last_modified = ""
        self.source = ""
        self.written = 0
        self.sha256 = ""
        self.state = State.RUNNING
        self.error: DownloadFailed | None = None
        self._hash = hashlib.sha256()
        # Where the bytes came from, in order: (end offset, source), for the served-bytes
        # metric (a swarm download holds web-seed bytes, a fallback resumes from upstream).
        self._ends: list[int] = []
        self._sources: list[str] = []
        self._fd: int | None = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        self._changed = asyncio.Event()
        self.started: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    # -- the source's side --------------------------------------------------------

    def begin(self, size: int | None, last_modified: str, source: str) -> None:
        """The source knows what it is sending; clients waiting for headers may go on."""
        if self.expected is not None and size is not None and size != self.expected.size:
            raise DownloadFailed(
                502,
                f"upstream announced {size} bytes for a file the index says has "
                f"{self.expected.size}",
                kind="size",
            )
        if self.size is None:
            self.size = size
        self.last_modified = last_modified or self.last_modified
        self.source = source
        if not self.started.done():
            self.started.set_result(None)
        self._notify()

    def write(self, data: bytes, source: str = "") -> None:
        """Appends bytes that came from `source` (default: the download's source)."""
        assert self._fd is not None
        if self.size is not None and self.written + len(data) > self.size:
            raise DownloadFailed(502, "upstream sent more bytes than the file has", kind="size")
        view = memoryview(data)
        try:
            while view:
                done = os.write(self._fd, view)
                view = view[done:]
        except OSError as exc:
            if is_disk_full(exc):
                raise DiskFull(503, f"{DISK_FULL_TEXT}: {exc.strerror}") from None
            raise
        self._hash.update(data)
        self.written += len(data)
        label = source or self.source
        if self._sources and self._sources[-1] == label:
            self._ends[-1] = self.written
        else:
            self._ends.append(self.written)
            self._sources.append(label)
        self._notify()

    def sources(self, start: int, end: int) -> list[tuple[str, int]]:
        """How many of the bytes [start, end) came from each source, in order."""
        out: list[tuple[str, int]] = []
        i = bisect.bisect_right(self._ends, start)
        pos = start
        while pos < end and i < len(self._ends):
            upto = min(end, self._ends[i])
            out.append((self._sources[i], upto - pos))
            pos = upto
            i += 1
        if pos < end:
            out.append((self.source, end - pos))
        return out

    def rewind(self, offset: int) -> None:
        """Drops bytes after `offset` (a new source resumes there); only before verification."""
        assert self._fd is not None
        if offset == self.written:
            return
        if offset != 0:
            raise ValueError("a download can only restart from its current end or from zero")
        os.ftruncate(self._fd, 0)
        os.lseek(self._fd, 0, os.SEEK_SET)
        self._hash = hashlib.sha256()
        self.written = 0
        self._ends.clear()
        self._sources.clear()

    async def finish(self) -> None:
        """Flushes and checks the file; raises DownloadFailed if it does not verify."""
        assert self._fd is not None
        fd, self._fd = self._fd, None
        try:
            await asyncio.to_thread(os.fsync, fd)
        except OSError as exc:
            if is_disk_full(exc):  # delayed allocation: the blocks were wanted only now
                raise DiskFull(503, f"{DISK_FULL_TEXT}: {exc.strerror}") from None
            raise
        finally:
            os.close(fd)
        self.sha256 = self._hash.hexdigest()
        if self.size is not None and self.written != self.size:
            raise DownloadFailed(
                502, f"upstream sent {self.written} of {self.size} bytes", kind="size"
            )
        if self.expected is not None and self.sha256 != self.expected.sha256:
            raise DownloadFailed(
                502, "the file's SHA-256 differs from the signed index's", kind="sha256"
            )
        self.size = self.written

    def succeed(self) -> None:
        self.state = State.OK
        if not self.started.done():
            self.started.set_result(None)
        self._notify()

    def fail(self, error: DownloadFailed) -> None:
        self.state = State.FAILED
        self.error = error
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if not self.started.done():
            self.started.set_exception(error)
            self.started.exception()  # retrieved: joiners see it through `started` or `error`
        self._notify()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    # -- the readers' side --------------------------------------------------------

    def open_reader(self) -> DownloadReader:
        """Call when a client joins, before any await, so the file cannot vanish first."""
        return DownloadReader(self, os.open(self.tmp, os.O_RDONLY))

    def readable(self) -> int:
        if self.state is State.OK:
            return self.written
        return max(0, self.written - 1)

    async def changed(self) -> None:
        await self._changed.wait()


class BodyReader(Protocol):
    """What the HTTP layer streams a body from (a DownloadReader, or a pass-through)."""

    def chunks(self, start: int, end: int | None) -> AsyncIterator[bytes]: ...

    def sources(self, start: int, end: int) -> list[tuple[str, int]]: ...

    def close(self) -> None: ...


class DownloadReader:
    def __init__(self, download: Download, fd: int) -> None:
        self._download = download
        self._fd = fd

    async def chunks(self, start: int, end: int | None) -> AsyncIterator[bytes]:
        """Bytes [start, end) (end None: to the end) as they become readable and verified."""
        download = self._download
        pos = start
        try:
            while end is None or pos < end:
                limit = download.readable() if end is None else min(download.readable(), end)
                if pos < limit:
                    data = os.pread(self._fd, min(CHUNK, limit - pos), pos)
                    if not data:
                        raise DownloadFailed(502, "cached file is shorter than announced")
                    pos += len(data)
                    yield data
                    continue
                if download.state is State.OK:
                    if end is not None and pos < end:
                        raise DownloadFailed(502, "file is shorter than the requested range")
                    return
                if download.state is State.FAILED:
                    assert download.error is not None
                    raise download.error
                # No await since the checks above: no write can have been missed.
                await download.changed()
        finally:
            self.close()

    def sources(self, start: int, end: int) -> list[tuple[str, int]]:
        return self._download.sources(start, end)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
