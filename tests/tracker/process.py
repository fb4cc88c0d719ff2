"""A real `aptmesh tracker` process on loopback, and its memory as the kernel counts it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

APTMESH = str(Path(sys.executable).with_name("aptmesh"))


@dataclass
class TrackerProcess:
    process: asyncio.subprocess.Process
    grpc_target: str
    http_url: str
    log: list[dict[str, object]]  # every JSON line it has written to stderr since it started

    def memory(self) -> tuple[int, int]:
        """(resident bytes now, peak resident bytes) from /proc (VmRSS, VmHWM)."""
        return rss(self.process.pid)


def rss(pid: int) -> tuple[int, int]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0]) * 1024
    return fields["VmRSS"], fields["VmHWM"]


async def _drain(stream: asyncio.StreamReader, into: list[dict[str, object]]) -> None:
    while line := await stream.readline():
        try:
            into.append(json.loads(line))
        except ValueError:
            into.append({"event": "not json", "line": line.decode(errors="replace")})


@contextlib.asynccontextmanager
async def tracker_process(
    db: Path, *args: str, env: dict[str, str] | None = None
) -> AsyncIterator[TrackerProcess]:
    """Starts the tracker with `args` and stops it (SIGTERM) afterwards."""
    process = await asyncio.create_subprocess_exec(
        APTMESH,
        "tracker",
        "--grpc-bind=127.0.0.1:0",
        "--http-host=127.0.0.1",
        "--http-port=0",
        f"--db-path={db}",
        *args,
        env={**os.environ, **(env or {})},
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stderr is not None
    drain = None
    try:
        while True:
            line = await asyncio.wait_for(process.stderr.readline(), timeout=30)
            assert line, "the tracker exited before it started"
            event = json.loads(line)
            if event["event"] == "tracker_started":
                break
        log: list[dict[str, object]] = []
        drain = asyncio.create_task(_drain(process.stderr, log))
        announce = str(event["announce_url"])
        yield TrackerProcess(process, str(event["grpc_target"]), announce.rsplit("/", 1)[0], log)
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), timeout=20)
            except TimeoutError:
                process.kill()
                await process.wait()
        if drain is not None:
            drain.cancel()
