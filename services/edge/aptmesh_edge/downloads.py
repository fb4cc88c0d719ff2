"""One download of one package file, shared by every client that asks for it meanwhile.

Theory of operation. A `Download` owns a temporary file under the cache's
`tmp/`. Its source (the upstream over HTTP, or the swarm) appends bytes in
order with `write`; readers that joined at any time read the same growing
file through their own descriptor (opened when they join, so the file can be
renamed into the cache or unlinked under them). Readers never slow the
source: they wait for the next `write` and read from the page cache.

Integrity: every byte written goes through the download's `CheckedBytes`
(checked.py, the rule stated once), which alone says how far a reader may
read: a small file nothing before it verified whole, a larger one all but its
tail. If the check fails, readers raise `DownloadFailed` and the HTTP layer
cuts their connection. Only a file whose `finish` passed is committed to the
cache (or, if it is not to be kept, unlinked) and seeded.
"""

from __future__ import annotations

import asyncio
import bisect
import enum
import errno
import os
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Protocol

from aptmesh.debian import FileHash
from aptmesh_edge.checked import CheckedBytes, DownloadFailed, Verdict
from aptmesh_edge.decisions import SourceKind

CHUNK = 256 * 1024


class DiskFull(DownloadFailed):
    """The cache's file system has no room left (ENOSPC, EDQUOT) for a file being stored;
    `reason` is the system's text."""

    def __init__(self, reason: str, doing: str = "") -> None:
        super().__init__(503, f"{DISK_FULL_TEXT}: {doing}{reason}")
        self.reason = reason


def is_disk_full(exc: OSError) -> bool:
    return exc.errno in (errno.ENOSPC, errno.EDQUOT)


DISK_FULL_TEXT = "the edge's cache disk is full"


class State(enum.Enum):
    RUNNING = "running"
    OK = "ok"
    FAILED = "failed"


class Download:
    """Owns one file being fetched: its temporary file and write descriptor, the check of its
    bytes (`check`, which alone decides what readers may read), where each byte came from, and
    the wake-ups of the readers waiting for more. Sources write; readers read; the caller
    commits or drops the file after `finish`."""

    def __init__(
        self, key: str, tmp: Path, expected: FileHash | None, *, memory_max: int = 0
    ) -> None:
        self.key = key
        self.tmp = tmp
        self.check = CheckedBytes(key.split("/", 1)[-1], expected, memory_max)
        # Validators of the copy the caller holds (an index's conditional request).
        self.conditional: Mapping[str, str] = {}
        self.last_modified = ""
        self.etag = ""
        self.source = SourceKind.UPSTREAM
        self.written = 0
        self.rewinds = 0  # a reader that read bytes before a rewind is cut (they are gone)
        self.sha256 = ""
        self.state = State.RUNNING
        self.error: DownloadFailed | None = None
        # Where the bytes came from, in order: (end offset, source), for the served-bytes
        # metric (a swarm download holds web-seed bytes, a fallback resumes from upstream).
        self._ends: list[int] = []
        self._sources: list[SourceKind] = []
        self._fd: int | None = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        self._changed = asyncio.Event()
        self.started: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    @property
    def expected(self) -> FileHash | None:
        return self.check.expected

    @property
    def size(self) -> int | None:
        return self.check.size

    # -- the source's side --------------------------------------------------------

    def begin(self, size: int | None, last_modified: str, source: SourceKind) -> None:
        """The source knows what it is sending; clients waiting for headers may go on."""
        self.check.announce(size)
        self.last_modified = last_modified or self.last_modified
        self.source = source
        if not self.started.done():
            self.started.set_result(None)
        self._notify()

    def write(
        self, data: bytes, source: SourceKind | None = None, *, verified_piece: bool = False
    ) -> None:
        """Appends bytes that came from `source` (default: the download's source);
        `verified_piece` as `CheckedBytes.update` has it (one whole piece libtorrent checked)."""
        assert self._fd is not None
        self.check.update(data, verified_piece=verified_piece)
        view = memoryview(data)
        try:
            while view:
                done = os.write(self._fd, view)
                view = view[done:]
        except OSError as exc:
            if is_disk_full(exc):
                raise DiskFull(exc.strerror or "no space") from None
            raise
        self.written += len(data)
        label = source or self.source
        if self._sources and self._sources[-1] == label:
            self._ends[-1] = self.written
        else:
            self._ends.append(self.written)
            self._sources.append(label)
        self._notify()

    def sources(self, start: int, end: int) -> list[tuple[SourceKind, int]]:
        """How many of the bytes [start, end) came from each source, in order."""
        out: list[tuple[SourceKind, int]] = []
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
        self.check.reset()
        self.rewinds += 1
        self.written = 0
        self._ends.clear()
        self._sources.clear()
        self._notify()

    def verify(self) -> None:
        """Checks the bytes written as the whole file (`CheckedBytes.finish`); raises
        DownloadFailed if they are not it."""
        self.sha256 = self.check.finish()
        self._notify()

    async def finish(self) -> None:
        """Flushes and checks the file; raises DownloadFailed if it does not verify."""
        assert self._fd is not None
        fd, self._fd = self._fd, None
        try:
            await asyncio.to_thread(os.fsync, fd)
        except OSError as exc:
            if is_disk_full(exc):  # delayed allocation: the blocks were wanted only now
                raise DiskFull(exc.strerror or "no space") from None
            raise
        finally:
            os.close(fd)
        if self.check.verdict is not Verdict.VERIFIED:
            self.verify()

    def succeed(self) -> None:
        self.state = State.OK
        if not self.started.done():
            self.started.set_result(None)
        self._notify()

    def fail(self, error: DownloadFailed) -> None:
        self.state = State.FAILED
        self.error = error
        self.close()
        if not self.started.done():
            self.started.set_exception(error)
            self.started.exception()  # retrieved: joiners see it through `started` or `error`
        self._notify()

    def close(self) -> None:
        """Closes the write descriptor (the file stays for readers and the caller)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    # -- the readers' side --------------------------------------------------------

    def open_reader(self, *, relay: bool = False) -> DownloadReader:
        """Call when a client joins, before any await, so the file cannot vanish first;
        `relay`: the reader is another edge, which checks the bytes itself."""
        return DownloadReader(self, os.open(self.tmp, os.O_RDONLY), relay)

    def readable(self, *, relay: bool = False) -> int:
        """How far a reader may read: what the check releases, and the last byte only once the
        download succeeded (its file committed or dropped), so a finished response means the
        edge is done with the file."""
        if self.state is State.OK:
            return self.written
        return max(0, min(self.check.releasable(self.written, relay=relay), self.written - 1))

    async def changed(self) -> None:
        await self._changed.wait()


class BodyReader(Protocol):
    """What the HTTP layer streams a body from (a DownloadReader, or a pass-through)."""

    def chunks(self, start: int, end: int | None) -> AsyncIterator[bytes]: ...

    def sources(self, start: int, end: int) -> list[tuple[SourceKind, int]]: ...

    def close(self) -> None: ...


class DownloadReader:
    """Owns one reader's descriptor of a download's file."""

    def __init__(self, download: Download, fd: int, relay: bool) -> None:
        self._download = download
        self._fd = fd
        self._relay = relay

    async def chunks(self, start: int, end: int | None) -> AsyncIterator[bytes]:
        """Bytes [start, end) (end None: to the end) as the download's check releases them."""
        download = self._download
        pos = start
        rewinds = download.rewinds
        try:
            while end is None or pos < end:
                if download.rewinds != rewinds:
                    if pos > start:  # what this reader sent is not what the file will be
                        raise DownloadFailed(502, "the bytes sent were refused; fetching again")
                    rewinds = download.rewinds
                readable = download.readable(relay=self._relay)
                limit = readable if end is None else min(readable, end)
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

    def sources(self, start: int, end: int) -> list[tuple[SourceKind, int]]:
        return self._download.sources(start, end)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
