"""Drives the method as apt does: a subprocess, messages on stdin and stdout."""

from __future__ import annotations

import queue
import signal
import subprocess
import threading
import time
from collections.abc import Sequence
from types import TracebackType

from aptmesh_apt_method.message import Message, Parser

DEADLINE = 10.0


class MethodProcess:
    def __init__(self, argv: Sequence[str]) -> None:
        self.proc = subprocess.Popen(
            list(argv), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        self._lines: queue.Queue[bytes] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self._parser = Parser()
        self.raw = b""

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line)
        self._lines.put(b"")

    def send(self, data: bytes | Message) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(data.encode() if isinstance(data, Message) else data)
        self.proc.stdin.flush()

    def receive(self, timeout: float = DEADLINE) -> Message:
        deadline = time.monotonic() + timeout
        while True:
            line = self._lines.get(timeout=max(0.0, deadline - time.monotonic()))
            if not line:
                raise EOFError("the method closed stdout")
            self.raw += line
            message = self._parser.feed(line)
            if message is not None:
                return message

    def close_stdin(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()

    def interrupt(self) -> None:
        self.proc.send_signal(signal.SIGINT)

    def finish(self, timeout: float = DEADLINE) -> tuple[int, bytes, bytes]:
        """Exit status, the rest of stdout, and all of stderr."""
        code = self.proc.wait(timeout)
        self._reader.join(timeout)
        rest = b""
        while True:
            try:
                rest += self._lines.get_nowait()
            except queue.Empty:
                break
        assert self.proc.stderr is not None
        return code, rest, self.proc.stderr.read()

    def __enter__(self) -> MethodProcess:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()
