"""Helpers for tests and benchmarks: a clock moved by hand, free ports, polling with a deadline.

They live in the core (one place for every suite, the benchmarks and `make run`); nothing in a
service imports them. Polling is how tests wait: for a condition, with a deadline and a message
that says what did not happen, never a bare sleep.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")

POLL_INTERVAL = 0.02  # seconds between two looks at a condition


class FakeClock:
    """Wall-clock seconds (`time.time()` shaped) that tests move by hand; starts now by default,
    which signed indexes with a `Valid-Until` need."""

    def __init__(self, now: float | None = None) -> None:
        self.now = time.time() if now is None else now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on at `host` (bound, then released)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def poll_until(
    condition: Callable[[], T | None],
    what: str,
    *,
    within: float = 10.0,
    check: Callable[[], None] | None = None,
) -> T:
    """Calls `condition` until it returns something truthy, and returns that; raises
    AssertionError naming `what` after `within` seconds. `check` runs between looks and may
    raise early (a process that died while we waited)."""
    deadline = time.monotonic() + within
    while True:
        result = condition()
        if result:
            return result
        if check is not None:
            check()
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within} s waiting for {what}")
        time.sleep(POLL_INTERVAL)


async def wait_until(
    predicate: Callable[[], bool | Awaitable[bool]], within: float = 10.0, what: str = ""
) -> None:
    """Awaits until `predicate` (plain or async) holds; raises AssertionError naming `what`
    after `within` seconds."""
    deadline = time.monotonic() + within
    while True:
        result = predicate()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within} s waiting for {what or predicate}")
        await asyncio.sleep(POLL_INTERVAL)
