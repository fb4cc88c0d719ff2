"""Talking to upstream mirrors over HTTP; aiohttp's errors are translated here.

A resource may have several backends (apt-cacher-ng's Remap): they are tried
in order while they fail before sending a response (connection refused,
timeout, 5xx). `UpstreamFailure` carries the status the edge answers with:
502 when no backend could be reached or all failed, 504 when the last one
timed out, or the upstream's own 4xx (404 stays 404).

Content codings: the edge asks for `Accept-Encoding: identity`, because it
stores, hashes and serves the file's own bytes (aiohttp's default would
invite `gzip`, which aiohttp's static handler and some CDNs then apply to
`Packages`). A backend that codes the body anyway is handled by
`coding_action`: gzip is decoded, except for a `.gz` file (a server that
labels a gzip file with its own coding, as Apache's `AddEncoding` does,
sends the file's bytes); any other coding, or a coded range, is refused
like a failed backend.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import zlib
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit

import aiohttp

from aptmesh import logs
from aptmesh_edge.downloads import Download, DownloadFailed, Expected
from aptmesh_edge.metrics import EdgeMetrics

log = logs.get(__name__)

READ_CHUNK = 256 * 1024


class UpstreamFailure(DownloadFailed):
    """No usable response from any backend."""


CodingAction = Literal["raw", "gunzip", "refuse"]


def coding_action(content_encoding: str, path: str, status: int) -> CodingAction:
    """What to do with a body sent with `Content-Encoding: content_encoding` for `path`."""
    codings = [c.strip().lower() for c in content_encoding.split(",") if c.strip()]
    codings = [c for c in codings if c != "identity"]
    if not codings:
        return "raw"
    if codings in (["gzip"], ["x-gzip"]):
        if path.endswith(".gz"):
            return "raw"
        if status == 200:
            return "gunzip"
    return "refuse"


@dataclass(frozen=True)
class Response:
    status: int
    headers: Mapping[str, str]
    body: aiohttp.StreamReader
    gunzip: bool = False  # the body is gzip-coded; chunks() yields it decoded

    @property
    def length(self) -> int | None:
        """Bytes chunks() will yield, if the upstream said (unknown for a decoded body)."""
        value = self.headers.get("Content-Length")
        if self.gunzip or value is None or not value.isdigit():
            return None
        return int(value)

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body, with aiohttp's errors translated into UpstreamFailure."""
        decoder = zlib.decompressobj(16 + zlib.MAX_WBITS) if self.gunzip else None
        try:
            while data := await self.body.read(READ_CHUNK):
                if decoder is None:
                    yield data
                    continue
                try:
                    data = decoder.decompress(data)
                except zlib.error:
                    raise UpstreamFailure(
                        502, "fetching from upstream: its gzip-coded body does not decode"
                    ) from None
                if data:
                    yield data
        except TimeoutError:
            raise UpstreamFailure(504, "fetching from upstream: it stopped sending") from None
        except (aiohttp.ClientError, asyncio.IncompleteReadError) as exc:
            raise UpstreamFailure(
                502, f"fetching from upstream: transfer broke ({type(exc).__name__})"
            ) from None
        if decoder is not None:
            if not decoder.eof:
                raise UpstreamFailure(502, "fetching from upstream: its gzip-coded body is cut")
            if tail := decoder.flush():
                yield tail


class UpstreamClient:
    def __init__(self, metrics: EdgeMetrics, timeout: float) -> None:
        self._metrics = metrics
        self._timeout = aiohttp.ClientTimeout(
            total=None, connect=timeout, sock_connect=timeout, sock_read=timeout
        )
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(
            timeout=self._timeout,
            auto_decompress=False,
            connector=aiohttp.TCPConnector(limit=64, limit_per_host=16),
            headers={"User-Agent": "aptmesh-edge", "Accept-Encoding": "identity"},
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    @contextlib.asynccontextmanager
    async def get(self, urls: list[str], headers: Mapping[str, str]) -> AsyncIterator[Response]:
        """The first backend's usable response (2xx, 304 or 4xx); raises UpstreamFailure."""
        assert self._session is not None, "UpstreamClient.start() was not called"
        failure = UpstreamFailure(502, "no upstream backend configured")
        for url in urls:
            try:
                resp = await self._session.get(url, headers=dict(headers))
            except TimeoutError:
                self._metrics.upstream_fetches.labels(outcome="timeout").inc()
                failure = UpstreamFailure(504, "fetching from upstream: it did not answer in time")
                log.warning("upstream_timeout", url=url)
                continue
            except aiohttp.ClientConnectorError as exc:
                self._metrics.upstream_fetches.labels(outcome="unreachable").inc()
                failure = UpstreamFailure(
                    502, f"fetching from upstream: cannot connect ({exc.os_error.strerror})"
                )
                log.warning("upstream_unreachable", url=url, error=str(exc))
                continue
            except aiohttp.ClientError as exc:
                self._metrics.upstream_fetches.labels(outcome="error").inc()
                failure = UpstreamFailure(502, f"fetching from upstream: {type(exc).__name__}")
                log.warning("upstream_failed", url=url, error=repr(exc))
                continue
            if resp.status >= 500:
                resp.release()
                self._metrics.upstream_fetches.labels(outcome="server_error").inc()
                failure = UpstreamFailure(
                    502, f"fetching from upstream: it answered {resp.status} {resp.reason}"
                )
                log.warning("upstream_error", url=url, status=resp.status)
                continue
            coding = resp.headers.get("Content-Encoding", "")
            action = coding_action(coding, urlsplit(url).path, resp.status)
            if action == "refuse":
                resp.release()
                self._metrics.upstream_fetches.labels(outcome="bad_encoding").inc()
                failure = UpstreamFailure(
                    502,
                    f"fetching from upstream: it answered {resp.status} with Content-Encoding "
                    f"{coding!r}, which the edge did not ask for and does not decode",
                )
                log.warning("upstream_content_coding", url=url, coding=coding, status=resp.status)
                continue
            self._metrics.upstream_fetches.labels(outcome=f"{resp.status // 100}xx").inc()
            try:
                yield Response(resp.status, resp.headers, resp.content, action == "gunzip")
            finally:
                resp.release()
            return
        raise failure


class HttpSource:
    """Fills a Download from the upstream over HTTP, resuming at the download's end."""

    name = "upstream"

    def __init__(self, client: UpstreamClient) -> None:
        self._client = client

    async def fetch(self, urls: list[str], download: Download) -> None:
        offset = download.written
        headers = {"Range": f"bytes={offset}-"} if offset else {}
        async with self._client.get(urls, headers) as resp:
            if resp.status == 206 and offset:
                skip = 0
            elif resp.status == 200:
                skip = offset
            else:
                raise UpstreamFailure(
                    resp.status if 400 <= resp.status < 500 else 502,
                    f"fetching from upstream: it answered {resp.status}",
                )
            length = resp.length
            size = None if length is None else length + (offset if resp.status == 206 else 0)
            download.begin(size, resp.headers.get("Last-Modified", ""), self.name)
            async for data in resp.chunks():
                if skip:
                    cut = min(skip, len(data))
                    data, skip = data[cut:], skip - cut
                    if not data:
                        continue
                download.write(data)


_CLOSING: set[asyncio.Task[None]] = set()


class PassThrough:
    """A file streamed from the upstream to one client without touching the disk: what the
    edge does when its cache has no room for the file (as apt-cacher-ng users expect).

    Like a DownloadReader it holds back the last byte of the response until the whole
    file has arrived with the expected size and SHA-256, so a client never receives a
    complete response that did not verify; a failure raises DownloadFailed (the HTTP layer
    cuts the connection). A range is served from the same single pass over the file."""

    def __init__(
        self,
        stack: contextlib.AsyncExitStack,
        resp: Response,
        size: int | None,
        expected: Expected | None,
    ) -> None:
        self._stack = stack
        self._resp = resp
        self.size = size
        self.expected = expected
        self.last_modified = resp.headers.get("Last-Modified", "")
        self._closed = False

    @classmethod
    async def open(
        cls, client: UpstreamClient, urls: list[str], expected: Expected | None
    ) -> PassThrough:
        stack = contextlib.AsyncExitStack()
        try:
            resp = await stack.enter_async_context(client.get(urls, {}))
            if resp.status != 200:
                raise UpstreamFailure(
                    resp.status if 400 <= resp.status < 500 else 502,
                    f"fetching from upstream: it answered {resp.status}",
                )
            size = resp.length
            if expected is not None:
                if size is not None and size != expected.size:
                    raise DownloadFailed(
                        502,
                        f"upstream announced {size} bytes for a file the index says has "
                        f"{expected.size}",
                        kind="size",
                    )
                size = expected.size
        except BaseException:
            await stack.aclose()
            raise
        return cls(stack, resp, size, expected)

    async def chunks(self, start: int, end: int | None) -> AsyncIterator[bytes]:
        digest = hashlib.sha256()
        pos = 0
        held = b""
        try:
            async for data in self._resp.chunks():
                if self.size is not None and pos + len(data) > self.size:
                    raise DownloadFailed(
                        502, "upstream sent more bytes than the file has", kind="size"
                    )
                digest.update(data)
                lo = max(0, start - pos)
                hi = len(data) if end is None else max(0, min(len(data), end - pos))
                pos += len(data)
                if lo < hi:
                    out = held + data[lo:hi]
                    held = out[-1:]
                    if len(out) > 1:
                        yield out[:-1]
            if self.size is not None and pos != self.size:
                raise DownloadFailed(502, f"upstream sent {pos} of {self.size} bytes", kind="size")
            if self.expected is not None and digest.hexdigest() != self.expected.sha256:
                raise DownloadFailed(
                    502, "the file's SHA-256 differs from the signed index's", kind="sha256"
                )
            if end is not None and pos < end:
                raise DownloadFailed(502, "file is shorter than the requested range")
            if held:
                yield held
        finally:
            self._closed = True
            await self._stack.aclose()

    def sources(self, start: int, end: int) -> list[tuple[str, int]]:
        return [("upstream", end - start)]

    def close(self) -> None:
        """Releases the upstream response (also when the body was never read: HEAD, 304)."""
        if self._closed:
            return
        self._closed = True
        task = asyncio.get_running_loop().create_task(self._stack.aclose())
        _CLOSING.add(task)
        task.add_done_callback(_CLOSING.discard)
