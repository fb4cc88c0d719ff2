"""`CONNECT` pass-through: HTTPS sources of clients whose only setting is a proxy line.

apt's https method sends `CONNECT host:443` to the proxy it is given (apt-cacher-ng's
PassThroughPattern, squid-deb-proxy's allowlist). The edge tunnels it only to hosts its
`allowed_hosts` patterns allow (`Upstreams.tunnel` decides), on 443 or the port a pattern
names, and never looks into or caches the bytes: TLS is end to end between apt and the
host. Anything else gets 403 naming the setting. A tunnel ends when either side closes, or
after `IDLE_SECONDS` without a byte either way.
"""

from __future__ import annotations

import asyncio
import contextlib

from aiohttp import web

from aptmesh import logs
from aptmesh_edge.metrics import EdgeMetrics
from aptmesh_edge.urls import Upstreams, UrlError

log = logs.get(__name__)

CONNECT_TIMEOUT = 10.0
IDLE_SECONDS = 300.0
CHUNK = 64 * 1024


async def connect(
    request: web.BaseRequest, upstreams: Upstreams, metrics: EdgeMetrics
) -> web.StreamResponse:
    """Answers a CONNECT request: 403 for a host not allowed, 502/504 if it cannot be
    reached, else 200 and the tunnel until it ends."""
    try:
        host, port = upstreams.tunnel(request.raw_path)
    except UrlError as exc:
        metrics.tunnels.labels(result="refused").inc()
        return web.Response(status=exc.status, text=exc.text + "\n")
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(host, port), CONNECT_TIMEOUT
        )
    except TimeoutError:
        metrics.tunnels.labels(result="failed").inc()
        return web.Response(status=504, text=f"CONNECT {host}:{port}: no answer in time\n")
    except OSError as exc:
        metrics.tunnels.labels(result="failed").inc()
        return web.Response(status=502, text=f"CONNECT {host}:{port}: {exc.strerror or exc}\n")
    metrics.tunnels.labels(result="opened").inc()
    log.info("tunnel_opened", host=host, port=port)
    response = web.StreamResponse(status=200, reason="Connection established")
    # A tunnel's body is the raw byte stream: no Content-Length and no chunked coding
    # (aiohttp would add one or the other; its WebSocketResponse turns this off likewise).
    response._length_check = False
    try:
        await response.prepare(request)
        # The client's bytes after the CONNECT head: aiohttp hands an upgraded connection's
        # data to a payload parser one sets (as its WebSocketResponse does).
        from_client = asyncio.StreamReader(limit=CHUNK)
        request.protocol.set_parser(_Feed(from_client))  # type: ignore[arg-type]
        await _pump(from_client, response, reader, writer)
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()
        if request.transport is not None:
            request.transport.close()
    return response


class _Feed:
    """The payload parser of a tunnel: every byte from the client, as it arrives."""

    def __init__(self, stream: asyncio.StreamReader) -> None:
        self._stream = stream

    def feed_data(self, data: bytes) -> tuple[bool, bytes]:
        self._stream.feed_data(data)
        return False, b""

    def feed_eof(self) -> None:
        self._stream.feed_eof()


async def _pump(
    from_client: asyncio.StreamReader,
    response: web.StreamResponse,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
) -> None:
    async def client_to_host() -> None:
        while data := await asyncio.wait_for(from_client.read(CHUNK), IDLE_SECONDS):
            writer.write(data)
            await writer.drain()
        with contextlib.suppress(OSError):
            writer.write_eof()

    async def host_to_client() -> None:
        while data := await asyncio.wait_for(reader.read(CHUNK), IDLE_SECONDS):
            await response.write(data)

    upward, downward = asyncio.create_task(client_to_host()), asyncio.create_task(host_to_client())
    tasks = [upward, downward]
    try:
        # The tunnel ends when the host is done, or when the client's side breaks; a client
        # that only half-closes still gets the host's last bytes.
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        if downward not in done and upward.exception() is None:
            await asyncio.wait([downward])
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task
