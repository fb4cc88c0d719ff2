"""Running a service until SIGTERM or SIGINT, then shutting down gracefully."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Callable

Stop = asyncio.Event


def install_signal_handlers(stop: asyncio.Event) -> None:
    """SIGTERM (Kubernetes, systemd) and SIGINT (Ctrl-C) both ask for a clean stop."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)


def run(main: Callable[[asyncio.Event], Awaitable[None]]) -> int:
    """Runs `main(stop)` on a fresh event loop; `stop` is set by SIGTERM or SIGINT."""

    async def runner() -> None:
        stop = asyncio.Event()
        install_signal_handlers(stop)
        await main(stop)

    asyncio.run(runner())
    return 0
