"""Progress of a sync: a bar on a terminal, plain log lines otherwise.

`main --once` picks `TerminalProgress` when stderr is a terminal and
`LogProgress` when it is not (cron, systemd, a pipe); the service uses
`LogProgress`. Time here only paces output; it never changes what a sync does.
"""

from __future__ import annotations

import time
from typing import Protocol, TextIO

from aptmesh import logs

log = logs.get(__name__)


def _mib(n: int) -> str:
    return f"{n / 1024**2:.1f} MiB"


class Progress(Protocol):
    def start(self, repository: str, files: int, total_bytes: int) -> None: ...

    def advance(self, n: int) -> None: ...

    def file_done(self) -> None: ...

    def finish(self) -> None: ...


class NullProgress:
    def start(self, repository: str, files: int, total_bytes: int) -> None:
        return None

    def advance(self, n: int) -> None:
        return None

    def file_done(self) -> None:
        return None

    def finish(self) -> None:
        return None


class _Counts:
    def __init__(self) -> None:
        self.repository = ""
        self.files = self.total = self.done_files = self.done_bytes = 0

    def start(self, repository: str, files: int, total_bytes: int) -> None:
        self.repository, self.files, self.total = repository, files, total_bytes
        self.done_files = self.done_bytes = 0


class TerminalProgress(_Counts):
    """A one-line bar redrawn in place: `debian [#####.....] 3/8 files 12.0/40.0 MiB`."""

    WIDTH = 30

    def __init__(self, stream: TextIO, *, every: float = 0.1) -> None:
        super().__init__()
        self.stream = stream
        self.every = every
        self._last = 0.0

    def _draw(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last < self.every:
            return
        self._last = now
        fraction = self.done_bytes / self.total if self.total else 1.0
        filled = int(self.WIDTH * min(1.0, fraction))
        bar = "#" * filled + "." * (self.WIDTH - filled)
        self.stream.write(
            f"\r{self.repository} [{bar}] {self.done_files}/{self.files} files "
            f"{_mib(self.done_bytes)}/{_mib(self.total)}\x1b[K"
        )
        self.stream.flush()

    def start(self, repository: str, files: int, total_bytes: int) -> None:
        super().start(repository, files, total_bytes)
        self._draw(force=True)

    def advance(self, n: int) -> None:
        self.done_bytes += n
        self._draw()

    def file_done(self) -> None:
        self.done_files += 1
        self._draw(force=self.done_files == self.files)

    def finish(self) -> None:
        self._draw(force=True)
        self.stream.write("\n")
        self.stream.flush()


class LogProgress(_Counts):
    """A log line at most every `every` seconds while files are fetched, and one at the end."""

    def __init__(self, *, every: float = 10.0) -> None:
        super().__init__()
        self.every = every
        self._last = 0.0

    def _line(self, event: str) -> None:
        log.info(
            event,
            repository=self.repository,
            files_done=self.done_files,
            files=self.files,
            bytes_done=self.done_bytes,
            bytes=self.total,
        )

    def start(self, repository: str, files: int, total_bytes: int) -> None:
        super().start(repository, files, total_bytes)
        self._last = time.monotonic()
        if files:
            self._line("fetch_started")

    def advance(self, n: int) -> None:
        self.done_bytes += n

    def file_done(self) -> None:
        self.done_files += 1
        now = time.monotonic()
        if now - self._last >= self.every:
            self._last = now
            self._line("fetch_progressed")

    def finish(self) -> None:
        if self.files:
            self._line("fetch_finished")
