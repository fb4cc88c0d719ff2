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
import ssl
import time
import zlib
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

import aiohttp

from aptmesh import logs
from aptmesh.debian import FileClass, FileHash
from aptmesh_edge.checked import CheckedBytes, DownloadFailed
from aptmesh_edge.decisions import FaultAction, SourceKind, UpstreamFault
from aptmesh_edge.downloads import Download
from aptmesh_edge.metrics import EdgeMetrics
from aptmesh_edge.sources import Source
from aptmesh_edge.urls import Resource

log = logs.get(__name__)

READ_CHUNK = 256 * 1024


class UpstreamFailure(DownloadFailed):
    """No usable response from any backend; `fault` says what went wrong (None: the
    upstream's own 4xx answer, which asking again would not change)."""

    def __init__(self, status: int, text: str, *, fault: UpstreamFault | None = None) -> None:
        super().__init__(status, text)
        self.fault = fault


class NotModified(Exception):
    """The upstream answered 304 to a download's conditional request."""


def refused_status(status: int) -> UpstreamFailure:
    """The failure for a response that is neither the file nor a usable redirect."""
    return UpstreamFailure(
        status if 400 <= status < 500 else 502,
        f"fetching from upstream: it answered {status}",
        fault=None if 400 <= status < 500 else UpstreamFault.ERROR,
    )


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
    final_path: str = ""  # the path of the URL that answered, after any redirects
    url: str = ""  # the backend URL asked (before redirects): which backend answered

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
            raise UpstreamFailure(
                504, "fetching from upstream: it stopped sending", fault=UpstreamFault.STALLED
            ) from None
        except (aiohttp.ClientError, asyncio.IncompleteReadError) as exc:
            raise UpstreamFailure(
                502,
                f"fetching from upstream: transfer broke ({type(exc).__name__})",
                fault=UpstreamFault.BROKEN,
            ) from None
        if decoder is not None:
            if not decoder.eof:
                raise UpstreamFailure(502, "fetching from upstream: its gzip-coded body is cut")
            if tail := decoder.flush():
                yield tail


class Session:
    """Owns one aiohttp client session of the edge's (started by `start`): the file's own bytes
    (`Accept-Encoding: identity`, nothing decoded behind the edge's back), pooled connections."""

    def __init__(
        self,
        timeout: aiohttp.ClientTimeout,
        *,
        limit: int,
        per_host: int,
        ca_file: Path | None = None,
    ) -> None:
        self._timeout = timeout
        self._limit = limit
        self._per_host = per_host
        self._ca_file = ca_file
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        # https:// backends are always verified (certificate and host name): with the
        # configured CA bundle, else the system's. There is no switch to turn that off.
        tls = ssl.create_default_context(cafile=str(self._ca_file) if self._ca_file else None)
        self._session = aiohttp.ClientSession(
            timeout=self._timeout,
            auto_decompress=False,
            connector=aiohttp.TCPConnector(
                limit=self._limit, limit_per_host=self._per_host, ssl=tls
            ),
            headers={"User-Agent": "aptmesh-edge", "Accept-Encoding": "identity"},
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


class UpstreamClient(Session):
    """The upstreams' backends, tried in order (see the module's docstring)."""

    def __init__(
        self, metrics: EdgeMetrics, timeout: float, *, ca_file: Path | None = None
    ) -> None:
        super().__init__(
            aiohttp.ClientTimeout(
                total=None, connect=timeout, sock_connect=timeout, sock_read=timeout
            ),
            limit=64,
            per_host=16,
            ca_file=ca_file,
        )
        self._metrics = metrics

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
                failure = UpstreamFailure(
                    504,
                    "fetching from upstream: it did not answer in time",
                    fault=UpstreamFault.TIMEOUT,
                )
                log.warning("upstream_timeout", url=url)
                continue
            except aiohttp.ClientConnectorError as exc:
                self._metrics.upstream_fetches.labels(outcome="unreachable").inc()
                failure = UpstreamFailure(
                    502,
                    f"fetching from upstream: cannot connect ({exc.os_error.strerror})",
                    fault=UpstreamFault.UNREACHABLE,
                )
                log.warning("upstream_unreachable", url=url, error=str(exc))
                continue
            except aiohttp.ClientError as exc:
                self._metrics.upstream_fetches.labels(outcome="error").inc()
                failure = UpstreamFailure(
                    502, f"fetching from upstream: {type(exc).__name__}", fault=UpstreamFault.ERROR
                )
                log.warning("upstream_failed", url=url, error=repr(exc))
                continue
            if resp.status >= 500:
                resp.release()
                self._metrics.upstream_fetches.labels(outcome="server_error").inc()
                failure = UpstreamFailure(
                    502,
                    f"fetching from upstream: it answered {resp.status} {resp.reason}",
                    fault=UpstreamFault.SERVER_ERROR,
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
                    fault=UpstreamFault.BAD_ENCODING,
                )
                log.warning("upstream_content_coding", url=url, coding=coding, status=resp.status)
                continue
            self._metrics.upstream_fetches.labels(outcome=f"{resp.status // 100}xx").inc()
            try:
                yield Response(
                    resp.status,
                    resp.headers,
                    resp.content,
                    action == "gunzip",
                    resp.url.path,
                    url,
                )
            finally:
                resp.release()
            return
        raise failure


class HttpSource:
    """The upstream over HTTP as a `Source`: resumes at the download's end (a Range request),
    and asks conditionally when the download carries validators (an index's revalidation:
    raises NotModified on 304)."""

    kind = SourceKind.UPSTREAM

    def __init__(self, client: UpstreamClient, edge_backends: Sequence[str] = ()) -> None:
        self._client = client
        # Backends that are other aptmesh edges (a peer's site edges): their bytes are counted
        # as source=edge, apart from the mirror's.
        self._edge_backends = tuple(base.rstrip("/") + "/" for base in edge_backends)

    def kind_of(self, url: str) -> SourceKind:
        """Where the bytes of the backend `url` come from: another edge, or the upstream."""
        if any(url.startswith(base) for base in self._edge_backends):
            return SourceKind.EDGE
        return SourceKind.UPSTREAM

    async def fetch(self, resource: Resource, download: Download) -> None:
        offset = download.written
        headers = dict(download.conditional)
        if offset:
            headers["Range"] = f"bytes={offset}-"
            # Resume only the same version: a changed file comes whole (200), not spliced.
            if validator := _if_range(download.etag, download.last_modified):
                headers["If-Range"] = validator
        async with self._client.get(resource.upstream_urls(), headers) as resp:
            if resp.status == 304 and download.conditional:
                raise NotModified
            if is_html_page(resource, resp):
                raise UpstreamFailure(
                    502,
                    f"fetching from upstream: it answered an HTML page for {resource.path} "
                    f"(at {resp.final_path or 'the same URL'}; a captive portal or a login page?)",
                    fault=UpstreamFault.HTML_PAGE,
                )
            if resp.status == 206 and offset:
                skip = 0
            elif resp.status == 200:
                skip = offset
            else:
                raise refused_status(resp.status)
            length = resp.length
            size = None if length is None else length + (offset if resp.status == 206 else 0)
            download.etag = resp.headers.get("ETag", "")
            download.begin(size, resp.headers.get("Last-Modified", ""), self.kind_of(resp.url))
            async for data in resp.chunks():
                if skip:
                    cut = min(skip, len(data))
                    data, skip = data[cut:], skip - cut
                    if not data:
                        continue
                download.write(data)


def _if_range(etag: str, last_modified: str) -> str:
    """The If-Range validator of a resumed download: a strong ETag, else the date."""
    if etag and not etag.startswith("W/"):
        return etag
    return last_modified


def is_html_page(resource: Resource, resp: Response) -> bool:
    """An HTML page where an archive file (package or index) was asked for is never that
    file: what a captive portal or a login redirect answers. Refused, never stored."""
    if resource.file_class is FileClass.OTHER or resp.status not in (200, 206):
        return False
    kind = resp.headers.get("Content-Type", "").split(";", 1)[0].strip().lower()
    return kind in ("text/html", "application/xhtml+xml")


# Upstream attempts for a file of known hash, and the time after which none is started (apt's
# own http method waits 120 s for data, so the client is still there).
UPSTREAM_ATTEMPTS = 3
UPSTREAM_RETRY_SECONDS = 30.0
RETRY_PAUSE = 0.2  # seconds before the second attempt, doubling


async def fetch_retrying(
    source: Source, resource: Resource, download: Download, metrics: EdgeMetrics, *, known: bool
) -> None:
    """The one retry rule for upstream faults: a file whose hash is `known` (its bytes are
    checked whole anyway) is asked again on a retryable `UpstreamFault`, resuming where its
    bytes broke off (`HttpSource` sends Range + If-Range), at most UPSTREAM_ATTEMPTS times
    within UPSTREAM_RETRY_SECONDS; any other fault is the caller's clean error at once.
    Every fault is counted with what was done about it."""
    started = time.monotonic()
    for attempt in range(1, UPSTREAM_ATTEMPTS + 1):
        try:
            await source.fetch(resource, download)
            return
        except UpstreamFailure as exc:
            fault = exc.fault
            if fault is None:
                raise
            retry = (
                known
                and fault.retryable
                and attempt < UPSTREAM_ATTEMPTS
                and time.monotonic() - started < UPSTREAM_RETRY_SECONDS
            )
            action = FaultAction.RETRIED if retry else FaultAction.FAILED
            metrics.upstream_faults.labels(reason=fault.value, action=action.value).inc()
            log.warning(
                "upstream_fault",
                key=resource.key,
                reason=fault.value,
                action=action.value,
                attempt=attempt,
                resume_at=download.written,
            )
            if not retry:
                raise
        await asyncio.sleep(RETRY_PAUSE * 2 ** (attempt - 1))


_CLOSING: set[asyncio.Task[None]] = set()


class PassThrough:
    """A file streamed from the upstream to one client without touching the disk: what the
    edge does when its cache has no room for the file (as apt-cacher-ng users expect).

    Owns the upstream response and the file's `CheckedBytes`, which decides what may be sent
    (checked.py: a small file only once whole and verified, a larger one with its tail held
    back); a failure raises DownloadFailed (the HTTP layer cuts the connection). A range is
    served from the same single pass over the file."""

    def __init__(
        self, stack: contextlib.AsyncExitStack, resp: Response, check: CheckedBytes
    ) -> None:
        self._stack = stack
        self._resp = resp
        self._check = check
        self.size = check.size
        self.last_modified = resp.headers.get("Last-Modified", "")
        self._closed = False

    @classmethod
    async def open(
        cls, client: UpstreamClient, resource: Resource, expected: FileHash | None, memory_max: int
    ) -> PassThrough:
        stack = contextlib.AsyncExitStack()
        try:
            resp = await stack.enter_async_context(client.get(resource.upstream_urls(), {}))
            if resp.status != 200:
                raise refused_status(resp.status)
            check = CheckedBytes(resource.path, expected, memory_max)
            check.announce(resp.length)
        except BaseException:
            await stack.aclose()
            raise
        return cls(stack, resp, check)

    async def chunks(self, start: int, end: int | None) -> AsyncIterator[bytes]:
        check = self._check
        held = bytearray()  # the file's bytes [sent, received) not yet released
        sent = 0
        try:
            async for data in self._resp.chunks():
                check.update(data)
                held += data
                released = check.releasable(check.received)
                if released > sent:
                    if out := from_range(held[: released - sent], sent, start, end):
                        yield out
                    del held[: released - sent]
                    sent = released
            check.finish()
            if end is not None and check.received < end:
                raise DownloadFailed(502, "file is shorter than the requested range")
            if out := from_range(held, sent, start, end):
                yield out
        finally:
            self._closed = True
            await self._stack.aclose()

    def sources(self, start: int, end: int) -> list[tuple[SourceKind, int]]:
        return [(SourceKind.UPSTREAM, end - start)]

    def close(self) -> None:
        """Releases the upstream response (also when the body was never read: HEAD, 304)."""
        if self._closed:
            return
        self._closed = True
        task = asyncio.get_running_loop().create_task(self._stack.aclose())
        _CLOSING.add(task)
        task.add_done_callback(_CLOSING.discard)


def from_range(data: bytes | bytearray, offset: int, start: int, end: int | None) -> bytes:
    """The part of `data` (the file's bytes from `offset`) inside [start, end)."""
    lo = max(0, start - offset)
    hi = len(data) if end is None else max(0, min(len(data), end - offset))
    return bytes(data[lo:hi]) if lo < hi else b""
