"""Starting aiohttp applications on a host and port, and the health routes they share."""

from __future__ import annotations

import socket
from dataclasses import dataclass

from aiohttp import web


@dataclass
class Site:
    runner: web.BaseRunner
    host: str
    port: int

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def local_url(self) -> str:
        """The URL a client on this machine uses: wildcard binds are reached on loopback."""
        if self.host in ("", "0.0.0.0", "::"):
            return f"http://127.0.0.1:{self.port}"
        return self.url

    async def stop(self) -> None:
        await self.runner.cleanup()


async def start(
    app: web.Application | web.Server,
    host: str,
    port: int,
    *,
    shutdown_timeout: float = 5.0,
) -> Site:
    """Binds an application (or a low-level server) and returns where it listens.

    Port 0 picks a free port.
    """
    runner: web.BaseRunner
    if isinstance(app, web.Application):
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=shutdown_timeout)
    else:
        runner = web.ServerRunner(app, shutdown_timeout=shutdown_timeout)
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_address=True)
    await site.start()
    server = site._server  # noqa: SLF001 - aiohttp exposes the bound port only here
    sockets: list[socket.socket] = list(getattr(server, "sockets", []) or [])
    bound = sockets[0].getsockname()[1] if sockets else port
    return Site(runner, host, bound)
