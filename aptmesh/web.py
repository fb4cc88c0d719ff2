"""Starting aiohttp applications on a host and port, with the connection bounds they share.

Every server started here gets `ServerLimits`: a deadline for a connection to send a
complete request head, which is also the most it may sit idle between requests
(aiohttp's keep-alive timer covers both: it runs whenever the handler waits for a
head, and data arriving does not push it back, so a trickled head is cut too); a
deadline for reading and discarding a body its handler left unread; and sizes of the
request line and headers. Handlers that read a body bound their own reads.

What aiohttp's parser rejects (a bad request line, an over-long line, a bad header)
is answered by the server's `BadRequest` hook (default: a plain `400`) and logged as
one rate-limited warning line without a traceback: the client's fault, and a log
flood an attacker would otherwise control. A request pipelined after one that said
`Connection: close` is ignored (RFC 9112 section 9.6), so junk behind it cannot turn
the first answer into a 400.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from aptmesh import logs

log = logs.get(__name__)

# Builds the answer to a request aiohttp's parser refused: (status, client-safe reason).
BadRequest = Callable[[int, str], web.StreamResponse]


@dataclass(frozen=True)
class ServerLimits:
    """Per-connection bounds of an HTTP server (seconds and bytes)."""

    # Most seconds to send a complete request head, and to stay idle between requests.
    head_timeout: float = 15.0
    # Most seconds spent reading and discarding a request body the handler did not read.
    body_timeout: float = 5.0
    max_line_size: int = 8190  # the request line, and each header line
    max_field_size: int = 8190  # one header's value
    max_headers: int = 64

    def handler_kwargs(self) -> dict[str, Any]:
        return {
            "keepalive_timeout": self.head_timeout,
            "lingering_time": self.body_timeout,
            "max_line_size": self.max_line_size,
            "max_field_size": self.max_field_size,
            "max_headers": self.max_headers,
        }


_refused = logs.RateLimitedWarning(log, "http_request_refused")


def _plain(status: int, reason: str) -> web.StreamResponse:
    return web.Response(status=status, text=f"{status} {reason}\n")


class _BoundedHandler(RequestHandler):
    """aiohttp's connection handler with the rules in the module docstring."""

    def __init__(self, *args: Any, bad_request: BadRequest, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._bad_request = bad_request
        # The body of the request that said `Connection: close`, once one has.
        self._last_body: Any = None

    def data_received(self, data: bytes) -> None:
        # Feed the parser one request head at a time (any split of a byte stream is as
        # good as another to it): aiohttp drops every request of a chunk in which it
        # meets junk, the good one before the junk too. Once a request that asked to
        # close has all its body, what follows is ignored.
        while data:
            if self._last_body is not None and self._last_body.is_eof():
                return
            end = data.find(b"\r\n\r\n")
            cut = len(data) if end < 0 else end + 4
            before = len(self._messages)
            super().data_received(data[:cut])
            data = data[cut:]
            if len(self._messages) > before:
                message, body = self._messages[-1]
                if getattr(message, "should_close", False):
                    self._last_body = body

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if status >= 500:  # our fault: aiohttp logs it with its traceback
            return super().handle_error(request, status, exc, message)
        reason = (message or str(exc) or "bad request").splitlines()[0][:200]
        _refused(remote=request.remote, status=status, reason=reason)
        if request.writer.output_size > 0:
            raise ConnectionError("refusing a request whose answer has begun")
        response = self._bad_request(status, reason)
        response.force_close()
        return response


class _BoundedServer(web.Server):
    """A `web.Server` whose connections are `_BoundedHandler`s (see `start`)."""

    aptmesh_limits: ServerLimits
    aptmesh_bad_request: BadRequest

    def __call__(self) -> RequestHandler:
        # The server's own arguments (e.g. an edge's larger max_field_size) win.
        kwargs = {**self.aptmesh_limits.handler_kwargs(), **self._kwargs}
        return _BoundedHandler(
            self, loop=self._loop, bad_request=self.aptmesh_bad_request, **kwargs
        )


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
    limits: ServerLimits | None = None,
    bad_request: BadRequest = _plain,
) -> Site:
    """Binds an application (or a low-level server) and returns where it listens.

    Port 0 picks a free port. `limits` (default `ServerLimits()`) bounds every
    connection; `bad_request` answers what aiohttp's parser refuses.
    """
    runner: web.BaseRunner
    if isinstance(app, web.Application):
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=shutdown_timeout)
    else:
        runner = web.ServerRunner(app, shutdown_timeout=shutdown_timeout)
    await runner.setup()
    server = runner.server
    assert server is not None and type(server) is web.Server, "start() takes a plain web.Server"
    # aiohttp builds its handlers in Server.__call__ and has no hook for the handler
    # class; this one subclass adds none of its own state but the two attributes.
    server.__class__ = _BoundedServer
    assert isinstance(server, _BoundedServer)
    server.aptmesh_limits = limits or ServerLimits()
    server.aptmesh_bad_request = bad_request
    site = web.TCPSite(runner, host, port, reuse_address=True)
    await site.start()
    listener = site._server  # noqa: SLF001 - aiohttp exposes the bound port only here
    sockets: list[socket.socket] = list(getattr(listener, "sockets", []) or [])
    bound = sockets[0].getsockname()[1] if sockets else port
    return Site(runner, host, bound)
