"""The edge's HTTP front end (aiohttp): parse the target, ask FileService, write the answer.

Every request goes through one handler, because a forward-proxy request for
`http://HOST/metrics` must reach the upstream, not this edge's `/metrics`:
edge-local routes are matched only for origin-form targets.

Answers: 200/206/416 with `Content-Range` only on 206 and 416, 304 for
`If-Modified-Since`, HEAD without a body. Small bodies are sent from memory
(one write), large cached files with sendfile, running downloads as they
grow. TCP_NODELAY is set on every accepted connection by aiohttp's protocol
(base_protocol.connection_made), which avoids the 40 ms Nagle stall the
reference notes measured when headers and a small body go out separately.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web
from prometheus_client import Counter
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from aptmesh import logs
from aptmesh_edge import tunnel
from aptmesh_edge.body import Body
from aptmesh_edge.checked import DownloadFailed
from aptmesh_edge.decisions import Outcome, SourceKind
from aptmesh_edge.downloads import BodyReader
from aptmesh_edge.files import FileService
from aptmesh_edge.metrics import EdgeMetrics
from aptmesh_edge.site import VIA_HEADER, EdgeInfo, parse_via
from aptmesh_edge.urls import Resource, Upstreams, UrlError, parse_target

log = logs.get(__name__)

USAGE_PAGE = """<!DOCTYPE html>
<html><head><title>406 Usage Information</title></head>
<body><h1>406 Usage Information</h1>
<p>This is an aptmesh edge, an apt package cache compatible with apt-cacher-ng.
Point apt at it with <code>Acquire::http::Proxy "http://THIS-HOST:PORT/";</code>
or use <code>http://THIS-HOST:PORT/MIRROR-HOST/debian</code> in a source line.</p>
<p>Configured upstreams: {hosts}</p>
</body></html>
"""


RESOLVED_MAX = 100_000


@dataclass(frozen=True)
class HotEntry:
    """The fast path's answer for a raw target whose file is in the memory tier."""

    resource: Resource
    sha256: str
    data: bytes
    headers: dict[str, str]
    requests: Counter
    served: Counter


EdgesProvider = Callable[[], Awaitable[list[EdgeInfo]]]


@dataclass(frozen=True)
class ByteRange:
    start: int
    end: int  # exclusive


class RangeNotSatisfiable(Exception):
    """A `Range` that no byte of the file satisfies: answered 416."""


def parse_range(header: str, size: int) -> ByteRange | None:
    """One `bytes=` range against `size`: a ByteRange, or None (ignore it: serve the whole
    file, as for multiple ranges); raises RangeNotSatisfiable (416)."""
    unit, _, spec = header.partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    first, dash, last = spec.strip().partition("-")
    if not dash:
        return None
    try:
        if first == "":
            if not last.isdigit():
                return None
            if int(last) == 0 or not size:
                raise RangeNotSatisfiable
            count = min(int(last), size)
            return ByteRange(size - count, size)
        if not first.isdigit() or (last and not last.isdigit()):
            return None
        start = int(first)
        end = int(last) + 1 if last else size
    except ValueError:
        return None
    if last and end <= start:
        return None
    if start >= size:
        raise RangeNotSatisfiable
    return ByteRange(start, min(end, size))


def _timestamp(value: str) -> float | None:
    try:
        parsed = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return parsed.timestamp() if parsed is not None else None


def not_modified(if_modified_since: str, last_modified: str) -> bool:
    since, modified = _timestamp(if_modified_since), _timestamp(last_modified)
    return since is not None and modified is not None and int(modified) <= int(since)


class EdgeHttp:
    """The HTTP front end: parses a target, asks `FileService`, writes the `Body`. Owns only
    what makes the hot path cheap: remembered target resolutions, the memory hits' answers
    and the metric children."""

    def __init__(
        self,
        *,
        upstreams: Upstreams,
        files: FileService,
        metrics: EdgeMetrics,
        edges: EdgesProvider,
        ready: Callable[[], bool] = lambda: True,
    ) -> None:
        self._upstreams = upstreams
        self._files = files
        self._metrics = metrics
        self._edges = edges
        self._ready = ready
        # Parsing is pure: the resolution of a raw target is remembered (bounded).
        self._resolved: dict[str, Resource] = {}
        self._hot: dict[str, HotEntry] = {}
        self._request_counters: dict[tuple[str, str], Counter] = {}
        self._served = {
            source: metrics.served_bytes.labels(source=source.value) for source in SourceKind
        }
        self._local: dict[str, Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]] = {
            "/": self._usage,
            "/acng-report.html": self._usage,
            "/healthz": self._healthz,
            "/readyz": self._readyz,
            "/metrics": self._metrics_page,
            "/_aptmesh/edges": self._edge_list,
        }

    def server(self) -> web.Server:
        """The low-level aiohttp server: one handler, no router or middleware on the hot path
        (a cache hit of a 60 KB file is dominated by per-request overhead)."""
        # Keyword arguments of web.Server go to each connection's RequestHandler as they are.
        return web.Server(self.handle, max_field_size=16384)

    async def _metrics_page(self, request: web.BaseRequest) -> web.StreamResponse:
        body = generate_latest(self._metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        raw = request.raw_path
        hot = self._hot.get(raw)
        if (
            hot is not None
            and request.method == "GET"
            and "Range" not in request.headers
            and "If-Modified-Since" not in request.headers
            and self._files.hit_hot(hot.resource, hot.sha256)
        ):
            hot.requests.inc()
            hot.served.inc(len(hot.data))
            return web.Response(body=hot.data, headers=hot.headers)
        if raw.startswith("/"):
            local = self._local.get(raw.split("?", 1)[0])
            if local is not None:
                if request.method not in ("GET", "HEAD"):
                    return _text(405, "only GET and HEAD are served\n", {"Allow": "GET, HEAD"})
                return await local(request)
        if request.method == "CONNECT":
            return await tunnel.connect(request, self._upstreams, self._metrics)
        if request.method not in ("GET", "HEAD"):
            return _text(405, "only GET and HEAD are served\n", {"Allow": "GET, HEAD"})
        resource = self._resolved.get(raw)
        if resource is None:
            try:
                target = parse_target(raw)
                if target is None:
                    return _text(
                        404, "not found: this edge serves /HOST/path, /HTTPS///HOST/path\n"
                    )
                resource = self._upstreams.resolve(target)
            except UrlError as exc:
                return _text(exc.status, exc.text + "\n")
            if len(self._resolved) >= RESOLVED_MAX:
                self._resolved.clear()
            self._resolved[raw] = resource
        file_class = resource.file_class.value
        try:
            body = await self._files.get(resource, via=parse_via(request.headers.get(VIA_HEADER)))
        except DownloadFailed as exc:
            self._count(file_class, Outcome.ERROR)
            return _text(exc.status, exc.text + "\n")
        self._count(file_class, body.outcome)
        if body.outcome is Outcome.HIT and isinstance(body.payload, bytes) and body.sha256:
            self._remember_hot(raw, resource, body, body.payload)
        return await self.send(request, body)

    def _remember_hot(self, raw: str, resource: Resource, body: Body, data: bytes) -> None:
        """A small file served from memory: keep everything its next answer needs ready."""
        if len(self._hot) >= RESOLVED_MAX:
            self._hot.clear()
        headers = {"Content-Type": body.content_type, "Accept-Ranges": "bytes"}
        if body.last_modified:
            headers["Last-Modified"] = body.last_modified
        self._hot[raw] = HotEntry(
            resource,
            body.sha256,
            data,
            headers,
            self._metrics.requests.labels(
                file_class=resource.file_class.value, cache=Outcome.HIT.value
            ),
            self._served[SourceKind.CACHE],
        )

    def _count(self, file_class: str, outcome: Outcome) -> None:
        child = self._request_counters.get((file_class, outcome.value))
        if child is None:
            child = self._metrics.requests.labels(file_class=file_class, cache=outcome.value)
            self._request_counters[(file_class, outcome.value)] = child
        child.inc()

    async def send(self, request: web.BaseRequest, body: Body) -> web.StreamResponse:
        headers = {"Content-Type": body.content_type, "Accept-Ranges": "bytes"}
        if body.last_modified:
            headers["Last-Modified"] = body.last_modified
        ims = request.headers.get("If-Modified-Since")
        if ims and body.last_modified and not_modified(ims, body.last_modified):
            _close_reader(body)
            return web.Response(status=304, headers={"Last-Modified": body.last_modified})
        status, start, end = 200, 0, body.size
        range_header = request.headers.get("Range")
        if_range = request.headers.get("If-Range")
        if (
            range_header
            and body.size is not None
            and (not if_range or if_range == body.last_modified)
        ):
            try:
                wanted = parse_range(range_header, body.size)
            except RangeNotSatisfiable:
                _close_reader(body)
                return _text(
                    416, "range not satisfiable\n", {"Content-Range": f"bytes */{body.size}"}
                )
            if wanted is not None:
                status, start, end = 206, wanted.start, wanted.end
                headers["Content-Range"] = f"bytes {start}-{end - 1}/{body.size}"
        if request.method == "HEAD":
            _close_reader(body)
            if end is not None:
                headers["Content-Length"] = str(end - start)
            return web.Response(status=status, headers=headers)
        payload = body.payload
        if isinstance(payload, bytes):
            chunk = payload if status == 200 else payload[start:end]
            self._served[body.source].inc(len(chunk))
            return web.Response(status=status, body=chunk, headers=headers)
        resp = web.StreamResponse(status=status, headers=headers)
        if end is not None:
            resp.content_length = end - start
        if isinstance(payload, Path):
            if end is None:
                raise ValueError("a cached file's body has a known size")
            await resp.prepare(request)
            await _sendfile(request, resp, payload, start, end - start)
            self._served[body.source].inc(end - start)
            await resp.write_eof()
            return resp
        return await self._stream(request, resp, payload, start, end)

    async def _stream(
        self,
        request: web.BaseRequest,
        resp: web.StreamResponse,
        reader: BodyReader,
        start: int,
        end: int | None,
    ) -> web.StreamResponse:
        await resp.prepare(request)
        pos = start
        try:
            async for chunk in reader.chunks(start, end):
                await resp.write(chunk)
                for source, count in reader.sources(pos, pos + len(chunk)):
                    self._served[source].inc(count)
                pos += len(chunk)
        except DownloadFailed as exc:
            # Bytes already went out: the only honest signal left is a cut connection.
            log.warning("response_cut", path=request.raw_path, reason=exc.text)
            if request.transport is not None:
                request.transport.abort()
            return resp
        finally:
            reader.close()  # also when the client went away mid-file
        await resp.write_eof()
        return resp

    async def _usage(self, request: web.BaseRequest) -> web.StreamResponse:
        page = USAGE_PAGE.format(hosts=", ".join(self._upstreams.hosts()) or "none")
        # auto-apt-proxy (and squid-deb-proxy's clients) detect a cache by this status line.
        return web.Response(
            status=406, reason="Usage Information", text=page, content_type="text/html"
        )

    async def _healthz(self, request: web.BaseRequest) -> web.StreamResponse:
        return _text(200, "ok\n")

    async def _readyz(self, request: web.BaseRequest) -> web.StreamResponse:
        if self._ready():
            return _text(200, "ready\n")
        return _text(503, "not ready\n")

    async def _edge_list(self, request: web.BaseRequest) -> web.StreamResponse:
        edges = await self._edges()
        payload = {"edges": [{"id": e.id, "url": e.url, "zone": e.zone} for e in edges]}
        return web.Response(
            text=json.dumps(payload),
            content_type="application/json",
            headers={"Cache-Control": "max-age=10"},
        )


SENDFILE_FALLBACK_CHUNK = 1024 * 1024


async def _sendfile(
    request: web.BaseRequest, resp: web.StreamResponse, path: Path, offset: int, count: int
) -> None:
    """sendfile(2) through the event loop; on uvloop, which has no `loop.sendfile`, the file
    is read from the page cache in large chunks and written through the response."""
    transport = request.transport
    if transport is None:
        raise ConnectionResetError("client went away")
    with path.open("rb") as stream:
        try:
            await asyncio.get_running_loop().sendfile(transport, stream, offset, count)
            return
        except NotImplementedError:
            pass
        end = offset + count
        while offset < end:
            data = os.pread(stream.fileno(), min(SENDFILE_FALLBACK_CHUNK, end - offset), offset)
            if not data:
                raise ConnectionResetError("cached file is shorter than announced")
            await resp.write(data)
            offset += len(data)


def _close_reader(body: Body) -> None:
    if not isinstance(body.payload, bytes | Path):
        body.payload.close()


def _text(status: int, text: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(status=status, text=text, headers=headers)
