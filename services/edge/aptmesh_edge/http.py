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

Bounds (each counted in `aptmesh_edge_http_refused_total{limit}`; README, Security): open
connections (`http_max_connections`: one more is closed at once), requests in flight over
all connections (`http_max_in_flight`: 503), the bytes of a request head
(`http_max_head_bytes`: 431 and closed; the edge takes no request bodies, so a body counts
as head bytes too), the phases of a connection (`aptmesh.web.ServerLimits`: head and
keep-alive, unread body), and what the hot path remembers (`target_cache_bytes`, a
byte-bounded LRU keyed by the target without its query string, so junk cannot mint entries).
What a parser refuses is a 400 and a closed connection, logged once as a rate-limited
warning without a traceback.

Pipelining (apt keeps up to 10 requests in flight on one connection): aiohttp answers a
connection's requests one after another; `EdgeConnection` starts the file logic of every
queued request (up to `http_max_pipelined`) as soon as its head is parsed, and the handler of
each then takes its started work, so the answers go out in order but their fetches overlap.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import os
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import unquote

from aiohttp import web
from aiohttp.http_exceptions import InvalidURLError
from aiohttp.http_parser import RawRequestMessage
from aiohttp.streams import EMPTY_PAYLOAD
from aiohttp.web_protocol import _ErrInfo
from prometheus_client import Counter
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from aptmesh import logs
from aptmesh import web as aptweb
from aptmesh_edge import tunnel
from aptmesh_edge.body import Body
from aptmesh_edge.checked import DownloadFailed
from aptmesh_edge.decisions import Outcome, Refusal, SourceKind
from aptmesh_edge.downloads import BodyReader
from aptmesh_edge.files import FileService
from aptmesh_edge.lru import ByteLru
from aptmesh_edge.metrics import EdgeMetrics
from aptmesh_edge.site import VIA_HEADER, EdgeInfo, parse_via
from aptmesh_edge.urls import Resource, Upstreams, UrlError, parse_target

if TYPE_CHECKING:
    from aptmesh_edge.config import EdgeConfig

log = logs.get(__name__)
_refused = logs.RateLimitedWarning(log, "http_request_refused")

USAGE_PAGE = """<!DOCTYPE html>
<html><head><title>406 Usage Information</title></head>
<body><h1>406 Usage Information</h1>
<p>This is an aptmesh edge, an apt package cache compatible with apt-cacher-ng.
Point apt at it with <code>Acquire::http::Proxy "http://THIS-HOST:PORT/";</code>
or use <code>http://THIS-HOST:PORT/MIRROR-HOST/debian</code> in a source line.</p>
<p>Configured upstreams: {hosts}</p>
</body></html>
"""


@dataclass(frozen=True)
class HttpBounds:
    """The front end's bounds (EdgeConfig's `http_*` and `target_cache_bytes`)."""

    max_connections: int
    max_in_flight: int
    max_pipelined: int
    max_head_bytes: int
    head_timeout: float
    body_timeout: float
    send_timeout: float
    target_cache_bytes: int

    @classmethod
    def from_config(cls, config: EdgeConfig) -> HttpBounds:
        return cls(
            max_connections=config.http_max_connections,
            max_in_flight=config.http_max_in_flight,
            max_pipelined=config.http_max_pipelined,
            max_head_bytes=config.http_max_head_bytes,
            head_timeout=config.http_head_timeout,
            body_timeout=config.http_body_timeout,
            send_timeout=config.http_send_timeout,
            target_cache_bytes=config.target_cache_bytes,
        )

    def server_limits(self) -> aptweb.ServerLimits:
        return aptweb.ServerLimits(
            head_timeout=self.head_timeout,
            body_timeout=self.body_timeout,
            max_line_size=self.max_head_bytes,
            max_field_size=self.max_head_bytes,
        )


def target_key(raw: str) -> str:
    """What the hot path remembers a target by: without its query string or fragment, which
    are no part of what is fetched or cached (urls.py), so junk there mints no entries."""
    cuts = [i for i in (raw.find("?"), raw.find("#")) if i >= 0]
    return raw[: min(cuts)] if cuts else raw


@dataclass(frozen=True)
class HotEntry:
    """The fast path's answer for a target whose file is in the memory tier. It holds the
    bytes the memory tier holds (one object, not a copy); `hit_hot` fails once the tier let
    them go, and the entry is dropped then."""

    resource: Resource
    sha256: str
    data: bytes
    headers: dict[str, str]
    requests: Counter
    served: Counter


# Bytes a HotEntry's value costs beyond its key, besides `data` (the memory tier's).
HOT_ENTRY_BYTES = 1024
# A memory hit larger than this is written in pieces of it, each after the last drained:
# one write copies its bytes into the socket's buffer, and a client that stops reading
# must not hold a whole 2 MiB file there per connection (config.SEND_BUFFER_BYTES).
MEMORY_WRITE_CHUNK = 256 * 1024


EdgesProvider = Callable[[], Awaitable[list[EdgeInfo]]]
COLLECTIONS_PATH = "/_aptmesh/collections"
STATUS_PATH = "/_aptmesh/status"
FILES_PREFIX = "/_aptmesh/files/"


class CollectionFiles(Protocol):
    """What the front end asks of the collections on this edge (`preheat.Preheater`)."""

    def status_json(self) -> dict[str, Any]: ...

    async def body(self, path: str) -> Body:
        """`COLLECTION/NAME` or `sha256/HASH`; raises DownloadFailed."""
        ...


@dataclass(frozen=True)
class ByteRange:
    start: int
    end: int  # exclusive


class RangeNotSatisfiable(Exception):
    """A `Range` that no byte of the file satisfies: answered 416."""


_DIGITS = re.compile(r"[0-9]+")


def _digits(text: str) -> bool:
    """ASCII digits only: str.isdigit() also takes '٠' and '²', which HTTP does not."""
    return _DIGITS.fullmatch(text) is not None


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
            if not _digits(last):
                return None
            if int(last) == 0 or not size:
                raise RangeNotSatisfiable
            count = min(int(last), size)
            return ByteRange(size - count, size)
        if not _digits(first) or (last and not _digits(last)):
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
        bounds: HttpBounds,
        ready: Callable[[], bool] = lambda: True,
        collections: CollectionFiles | None = None,
        status_page: Callable[[], str] | None = None,
    ) -> None:
        self._upstreams = upstreams
        self._status_page = status_page
        self._collections = collections
        self._files = files
        self._metrics = metrics
        self._edges = edges
        self._ready = ready
        self.bounds = bounds
        # Parsing is pure: the resolution of a target is remembered; both maps share one
        # byte bound (half each).
        self._resolved: ByteLru[Resource] = ByteLru(bounds.target_cache_bytes // 2)
        self._hot: ByteLru[HotEntry] = ByteLru(bounds.target_cache_bytes // 2)
        self.connections = 0
        self.in_flight = 0
        self._refusals = {r: metrics.http_refused.labels(limit=r.value) for r in Refusal}
        self._request_counters: dict[tuple[str, str], Counter] = {}
        self._served = {
            source: metrics.served_bytes.labels(source=source.value) for source in SourceKind
        }
        self._local: dict[str, Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]] = {
            "/": self._root,
            STATUS_PATH: self._status,
            "/acng-report.html": self._usage,
            "/healthz": self._healthz,
            "/readyz": self._readyz,
            "/metrics": self._metrics_page,
            "/_aptmesh/edges": self._edge_list,
        }

    def server(self) -> web.Server:
        """The low-level aiohttp server: one handler, no router or middleware on the hot path
        (a cache hit of a 60 KB file is dominated by per-request overhead)."""
        return web.Server(self.handle)

    def connection_class(self) -> type[EdgeConnection]:
        """The connection handler class `aptmesh.web.start` builds for this front end."""
        return type("BoundEdgeConnection", (EdgeConnection,), {"front": self})

    def bad_request(self, status: int, reason: str) -> web.StreamResponse:
        """The answer to what aiohttp's parser refused (aptmesh.web logs it)."""
        self.refuse(Refusal.BAD_REQUEST)
        return _text(status, f"bad request: {reason}\n")

    def refuse(self, limit: Refusal) -> None:
        self._refusals[limit].inc()

    # -- what EdgeConnection calls ----------------------------------------------------------

    def opened(self) -> bool:
        """A connection is being made: False (and counted) when it is one too many."""
        if self.connections >= self.bounds.max_connections:
            self.refuse(Refusal.CONNECTIONS)
            return False
        self.connections += 1
        self._metrics.http_connections.set(self.connections)
        return True

    def closed(self) -> None:
        self.connections -= 1
        self._metrics.http_connections.set(self.connections)

    def _enter(self) -> bool:
        if self.in_flight >= self.bounds.max_in_flight:
            return False
        self.in_flight += 1
        self._metrics.http_in_flight.set(self.in_flight)
        return True

    def _leave(self) -> None:
        self.in_flight -= 1
        self._metrics.http_in_flight.set(self.in_flight)

    def start_early(self, message: RawRequestMessage) -> asyncio.Task[Body] | None:
        """Starts the file logic for a queued (pipelined) request, or None when it is not a
        file request or the edge is at its in-flight bound (its handler will decide then).
        The task holds one in-flight slot until its handler is done with it, or, if its
        connection goes first, until it ends (its body is released then)."""
        if message.method not in ("GET", "HEAD"):
            return None
        key = target_key(message.path)
        if self._hot.get(key) is not None:
            return None  # answered from memory at once anyway
        try:
            resource = self._resolve(key)
        except UrlError:
            return None
        if resource is None or not self._enter():
            return None
        via = parse_via(message.headers.get(VIA_HEADER))
        return asyncio.ensure_future(self._files.get(resource, via=via))

    def abandon(self, task: asyncio.Task[Body]) -> None:
        """Work started for a request whose connection closed before it was answered."""

        def release(done: asyncio.Task[Body]) -> None:
            self._leave()
            if not done.cancelled() and done.exception() is None:
                _close_reader(done.result())

        task.add_done_callback(release)

    def _resolve(self, key: str) -> Resource | None:
        """The resource a target names (None: an edge-local path); raises UrlError."""
        resource = self._resolved.get(key)
        if resource is None:
            target = parse_target(key)
            if target is None:
                return None
            resource = self._upstreams.resolve(target)
            self._resolved.put(key, resource, len(resource.path))
            self._show_target_cache()
        return resource

    def _show_target_cache(self) -> None:
        self._metrics.target_cache_bytes.set(self._resolved.bytes + self._hot.bytes)

    async def _metrics_page(self, request: web.BaseRequest) -> web.StreamResponse:
        body = generate_latest(self._metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        raw = request.raw_path
        key = target_key(raw)
        connection = request.protocol
        # Taken first: work started for a request must end with its answer (it holds an
        # in-flight slot), also when the file turned hot meanwhile.
        started = (
            connection.take_started(request) if isinstance(connection, EdgeConnection) else None
        )
        if started is not None:
            try:
                return await self._answer(request, key, started)
            finally:
                self._leave()
        hot = self._hot.get(key)
        if (
            hot is not None
            and request.method == "GET"
            and "Range" not in request.headers
            and "If-Modified-Since" not in request.headers
        ):
            if self._files.hit_hot(hot.resource, hot.sha256):
                hot.requests.inc()
                hot.served.inc(len(hot.data))
                return web.Response(body=hot.data, headers=hot.headers)
            self._hot.pop(key)  # its bytes left the memory tier: do not keep them alive
        if raw.startswith((COLLECTIONS_PATH, FILES_PREFIX)):
            return await self._collection_route(request)
        if raw.startswith("/"):
            local = self._local.get(key)
            if local is not None:
                if request.method not in ("GET", "HEAD"):
                    return _text(405, "only GET and HEAD are served\n", {"Allow": "GET, HEAD"})
                return await local(request)
        if request.method == "CONNECT":
            return await tunnel.connect(request, self._upstreams, self._metrics)
        if request.method not in ("GET", "HEAD"):
            return _text(405, "only GET and HEAD are served\n", {"Allow": "GET, HEAD"})
        if not self._enter():
            self.refuse(Refusal.IN_FLIGHT)
            return _text(503, "busy: too many requests in flight, retry\n", {"Retry-After": "1"})
        try:
            return await self._answer(request, key, None)
        finally:
            self._leave()

    async def _answer(
        self, request: web.BaseRequest, key: str, started: asyncio.Task[Body] | None
    ) -> web.StreamResponse:
        try:
            resource = self._resolve(key)
        except UrlError as exc:
            if started is not None:
                self.abandon(started)
            if exc.status == 400:
                return self._refused_target(request, exc)
            return _text(exc.status, exc.text + "\n")
        if resource is None:
            return _text(404, "not found: this edge serves /HOST/path, /HTTPS///HOST/path\n")
        file_class = resource.file_class.value
        try:
            if started is not None:
                body = await started
            else:
                via = parse_via(request.headers.get(VIA_HEADER))
                body = await self._files.get(resource, via=via)
        except DownloadFailed as exc:
            self._count(file_class, Outcome.ERROR)
            return _text(exc.status, exc.text + "\n")
        self._count(file_class, body.outcome)
        payload = body.payload
        if (
            body.outcome is Outcome.HIT
            and isinstance(payload, bytes)
            and body.sha256
            and len(payload) <= MEMORY_WRITE_CHUNK
        ):
            self._remember_hot(key, resource, body, payload)
        return await self.send(request, body)

    def _refused_target(self, request: web.BaseRequest, exc: UrlError) -> web.StreamResponse:
        """A target a parser refused: the client's fault, a 400 and the connection closed
        (what follows on it cannot be trusted to be framed as the client meant)."""
        self.refuse(Refusal.BAD_REQUEST)
        _refused(remote=request.remote, status=exc.status, reason=exc.text)
        response = _text(exc.status, exc.text + "\n")
        response.force_close()
        return response

    def _remember_hot(self, key: str, resource: Resource, body: Body, data: bytes) -> None:
        """A small file served from memory: keep everything its next answer needs ready."""
        headers = {"Content-Type": body.content_type, "Accept-Ranges": "bytes"}
        if body.last_modified:
            headers["Last-Modified"] = body.last_modified
        entry = HotEntry(
            resource,
            body.sha256,
            data,
            headers,
            self._metrics.requests.labels(
                file_class=resource.file_class.value, cache=Outcome.HIT.value
            ),
            self._served[SourceKind.CACHE],
        )
        self._hot.put(key, entry, HOT_ENTRY_BYTES + len(resource.path))
        self._show_target_cache()

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
            # A range of a memory hit is a view of the tier's bytes, not a copy.
            chunk = payload if status == 200 else memoryview(payload)[start:end]
            self._served[body.source].inc(len(chunk))
            if len(chunk) <= MEMORY_WRITE_CHUNK:
                return web.Response(status=status, body=chunk, headers=headers)
        resp = web.StreamResponse(status=status, headers=headers)
        if end is not None:
            resp.content_length = end - start
        if isinstance(payload, bytes):
            await resp.prepare(request)
            view = memoryview(payload)
            for pos in range(start, end or 0, MEMORY_WRITE_CHUNK):
                await resp.write(view[pos : min(pos + MEMORY_WRITE_CHUNK, end or 0)])
            await resp.write_eof()
            return resp
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

    async def _collection_route(self, request: web.BaseRequest) -> web.StreamResponse:
        """The collections' status as JSON, and their files by name or by hash."""
        if request.method not in ("GET", "HEAD"):
            return _text(405, "only GET and HEAD are served\n", {"Allow": "GET, HEAD"})
        if self._collections is None:
            return _text(404, "this edge holds no collections (it has no tracker)\n")
        path = request.raw_path.split("?", 1)[0]
        if path == COLLECTIONS_PATH:
            return web.json_response(self._collections.status_json())
        if not path.startswith(FILES_PREFIX):
            return _text(404, "not found\n")
        try:
            body = await self._collections.body(unquote(path[len(FILES_PREFIX) :]))
        except DownloadFailed as exc:
            self._count("collection", Outcome.ERROR)
            return _text(exc.status, exc.text + "\n")
        self._count("collection", body.outcome)
        return await self.send(request, body)

    async def _root(self, request: web.BaseRequest) -> web.StreamResponse:
        """The status page for a browser (it asks for text/html); the 406 usage page for
        everything else: auto-apt-proxy and apt-cacher-ng-style probes (curl, wget, nc send
        `*/*` or nothing) detect a cache by that status line."""
        if "text/html" in request.headers.get("Accept", ""):
            return await self._status(request)
        return await self._usage(request)

    async def _status(self, request: web.BaseRequest) -> web.StreamResponse:
        if self._status_page is None:
            return await self._usage(request)
        return web.Response(
            text=self._status_page(),
            content_type="text/html",
            headers={"Cache-Control": "no-store"},
        )

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


_HEAD_TOO_LARGE = (
    b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
    b"Content-Length: 0\r\nConnection: close\r\n\r\n"
)


class EdgeConnection(aptweb.BoundedHandler):
    """One client connection: counted against `max_connections`, its request heads bounded
    in bytes, and the work of its pipelined requests started as soon as each head is parsed
    (see the module docstring). `front` is set on the subclass `EdgeHttp` makes."""

    front: EdgeHttp

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Queued requests whose work started, by the identity of their parsed message.
        self._started: dict[int, tuple[RawRequestMessage, asyncio.Task[Body] | None]] = {}
        self._head_bytes = 0  # bytes since the end of the last complete head
        self._tail = b""  # the last 3 bytes seen (a head's end may straddle two reads)
        self._admitted = False
        self._send_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._admitted = self.front.opened()
        if not self._admitted:
            transport.close()

    def pause_writing(self) -> None:
        # The client stopped reading while an answer waits in the socket's buffer: it gets
        # `send_timeout` to resume (asyncio calls resume_writing) before it is cut.
        super().pause_writing()
        transport = self.transport
        if transport is not None:
            self._send_timer = asyncio.get_running_loop().call_later(
                self.front.bounds.send_timeout, transport.abort
            )

    def resume_writing(self) -> None:
        if self._send_timer is not None:
            self._send_timer.cancel()
            self._send_timer = None
        super().resume_writing()

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._send_timer is not None:
            self._send_timer.cancel()
            self._send_timer = None
        if self._admitted:
            self._admitted = False
            self.front.closed()
        for _, task in self._started.values():
            if task is not None:
                self.front.abandon(task)
        self._started.clear()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if not self._admitted:
            return
        window = self._tail + data
        end = window.rfind(b"\r\n\r\n")
        self._head_bytes = len(window) - end - 4 if end >= 0 else self._head_bytes + len(data)
        self._tail = window[-3:]
        if self._head_bytes > self.front.bounds.max_head_bytes:
            self.front.refuse(Refusal.HEAD_SIZE)
            _refused(remote=self._peer(), status=431, reason="request head too large")
            transport = self.transport
            if transport is not None:
                if not self._request_in_progress and not self._messages:
                    transport.write(_HEAD_TOO_LARGE)
                transport.close()
            self.force_close()
            return
        super().data_received(data)
        self._refuse_bad_hosts()
        self._start_queued()

    def _refuse_bad_hosts(self) -> None:
        """An absolute-form target whose host is not valid IDNA makes aiohttp's request
        factory raise, which kills the connection's task and leaves the socket open; such a
        message is replaced here by a parser error (a 400, then the connection closes)."""
        for i, (message, _) in enumerate(self._messages):
            if not isinstance(message, RawRequestMessage) or message.path.startswith("/"):
                continue
            try:
                message.url.host  # noqa: B018 - what BaseRequest() evaluates
            except (UnicodeError, ValueError):
                error = InvalidURLError("bad host: not a valid IDNA host name")
                self._messages[i] = (_ErrInfo(400, error, error.message), EMPTY_PAYLOAD)

    def _peer(self) -> str:
        transport = self.transport
        peer = transport.get_extra_info("peername") if transport is not None else None
        return str(peer[0]) if peer else ""

    def _start_queued(self) -> None:
        # With no request in progress, the first queued one is handled next anyway: starting
        # it early gains nothing, and skipping it keeps a plain keep-alive request's cost
        # (the hot path) free of this.
        queued = self._messages
        first = 0 if self._request_in_progress else 1
        if len(queued) <= first:
            return
        for message, _ in list(queued)[first : first + self.front.bounds.max_pipelined]:
            if id(message) in self._started or not isinstance(message, RawRequestMessage):
                continue
            self._started[id(message)] = (message, self.front.start_early(message))

    def take_started(self, request: web.BaseRequest) -> asyncio.Task[Body] | None:
        """The work started for this request while it was queued, if any."""
        if not self._started:
            return None
        message = request._message  # noqa: SLF001 - Request.message warns (deprecated)
        item = self._started.pop(id(message), None)
        return item[1] if item is not None else None


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
