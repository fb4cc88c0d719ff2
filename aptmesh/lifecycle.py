"""Running a service until SIGTERM or SIGINT, then shutting down gracefully."""

from __future__ import annotations

import asyncio
import importlib
import signal
from collections.abc import Awaitable, Callable

Stop = asyncio.Event

LoopFactory = Callable[[], asyncio.AbstractEventLoop]


def install_signal_handlers(stop: asyncio.Event) -> None:
    """SIGTERM (Kubernetes, systemd) and SIGINT (Ctrl-C) both ask for a clean stop."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)


def loop_factory() -> LoopFactory | None:
    """uvloop's event loop when it is installed, else None (asyncio's own loop).

    uvloop roughly doubles the edge's small-file request rate (bench/edge_vs_nginx.py);
    nothing depends on it, so a platform without it runs on the standard loop.
    """
    try:
        uvloop = importlib.import_module("uvloop")
    except ImportError:
        return None
    factory: LoopFactory = uvloop.new_event_loop
    return factory


def run(main: Callable[[asyncio.Event], Awaitable[None]]) -> int:
    """Runs `main(stop)` on a fresh event loop; `stop` is set by SIGTERM or SIGINT."""

    async def runner() -> None:
        stop = asyncio.Event()
        install_signal_handlers(stop)
        await main(stop)

    with asyncio.Runner(loop_factory=loop_factory()) as loop_runner:
        loop_runner.run(runner())
    return 0
