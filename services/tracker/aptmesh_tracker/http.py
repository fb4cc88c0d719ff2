"""The HTTP frontend: `/announce`, `/scrape`, `/metrics`, `/healthz`, `/readyz`.

Every route is parse, call the logic, write. A request the client got wrong is
answered with HTTP 200 and a bencoded `failure reason` (what BitTorrent
clients expect), and so is one aiohttp's own parser refuses (`bad_request`,
e.g. a request line over the limit); each is one rate-limited warning line.
Any other failure is logged and answered with a generic reason, and the
tracker keeps serving. The announce path is hot: it runs on aiohttp's low-level
server (no router, no middleware, no `web.Request`: one dictionary lookup of the
raw path), its logic is called directly when it runs on the loop, metrics
children are bound in advance, the parse is allocation-light, and logging goes
only through the rate limit. Where the rest of an announce's time goes is in
the README ("Measured").

`/healthz` is liveness (the process serves HTTP). `/readyz` is readiness: 503
naming the stores that are unreachable (the cause is in the log, as
`store_unreachable`, never on this public port), so a load balancer prefers
the replicas that can publish and register; announces are answered either way.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from typing import TypeVar

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from aptmesh import logs
from aptmesh_tracker.metrics import TrackerMetrics
from aptmesh_tracker.stores import StoreHealth
from aptmesh_tracker.tracker import Tracker
from aptmesh_tracker.wire import (
    TrackerRequestError,
    encode_announce,
    encode_failure,
    encode_scrape,
    parse_announce,
    parse_scrape,
)

log = logs.get(__name__)

_INTERNAL = encode_failure("internal tracker error")
_refused = logs.RateLimitedWarning(log, "tracker_request_refused")
A = TypeVar("A")
R = TypeVar("R")
# A route: the request and its raw query string (after the `?`) in, the answer out.
Route = Callable[[web.BaseRequest, str], Awaitable[web.StreamResponse]]
_READ_METHODS = frozenset(("GET", "HEAD"))


class Frontend:
    def __init__(
        self, tracker: Tracker, metrics: TrackerMetrics, offload: Executor | None = None
    ) -> None:
        """`offload` runs the logic off the event loop, for a peer store whose calls wait on
        the network (Redis): its threads overlap those waits. None runs it on the loop."""
        self._tracker = tracker
        self._metrics = metrics
        self._offload = offload

    async def _logic(self, fn: Callable[[A], R], arg: A) -> R:
        if self._offload is None:
            return fn(arg)
        return await asyncio.get_running_loop().run_in_executor(self._offload, fn, arg)

    def _refuse(self, exc: TrackerRequestError, request: web.BaseRequest) -> web.Response:
        self._metrics.bad_requests[exc.reason].inc()
        _refused(reason=exc.reason, remote=request.remote, detail=str(exc))
        return web.Response(body=encode_failure(str(exc)), content_type="text/plain")

    def bad_request(self, status: int, reason: str) -> web.StreamResponse:
        """What aiohttp's parser refused (aptmesh.web logs it): a failure reason too."""
        self._metrics.bad_requests["http"].inc()
        return web.Response(
            body=encode_failure(f"bad HTTP request: {reason}"), content_type="text/plain"
        )

    def _crash(self, route: str) -> web.Response:
        self._metrics.bad_requests["internal"].inc()
        log.exception("request_failed", route=route)
        return web.Response(body=_INTERNAL, content_type="text/plain")

    async def announce(self, request: web.BaseRequest, query: str) -> web.Response:
        try:
            parsed = parse_announce(query)
            ip = request.remote
            if ip is None:
                raise TrackerRequestError("internal", "cannot tell the client's address")
            if self._offload is None:
                response = self._tracker.announce(parsed, ip)
            else:
                loop = asyncio.get_running_loop()
                response = await loop.run_in_executor(
                    self._offload, self._tracker.announce, parsed, ip
                )
            body = encode_announce(response, parsed.compact)
        except TrackerRequestError as exc:
            return self._refuse(exc, request)
        except Exception:
            return self._crash("announce")
        return web.Response(body=body, content_type="text/plain")

    async def scrape(self, request: web.BaseRequest, query: str) -> web.Response:
        try:
            parsed = parse_scrape(query)
            body = encode_scrape(await self._logic(self._tracker.scrape, parsed))
        except TrackerRequestError as exc:
            return self._refuse(exc, request)
        except Exception:
            return self._crash("scrape")
        return web.Response(body=body, content_type="text/plain")


def readiness(health: StoreHealth) -> web.Response:
    problems = health.problems()
    if not problems:
        return web.Response(text="ready\n")
    text = "".join(f"{c.value} store unreachable\n" for c in problems)
    return web.Response(status=503, text=text)


def build_server(
    frontend: Frontend, registry: CollectorRegistry, health: StoreHealth
) -> web.Server:
    """aiohttp's low-level server over the routes: a path is matched as sent (raw, without
    its query), as the tracker's clients send it; GET and HEAD only. Request bodies are
    never read (aiohttp discards them, within `ServerLimits.body_timeout`)."""

    async def metrics(request: web.BaseRequest, query: str) -> web.Response:
        body = generate_latest(registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(request: web.BaseRequest, query: str) -> web.Response:
        return web.Response(text="ok\n")

    async def readyz(request: web.BaseRequest, query: str) -> web.Response:
        return readiness(health)

    routes: dict[str, Route] = {
        "/announce": frontend.announce,
        "/scrape": frontend.scrape,
        "/metrics": metrics,
        "/healthz": healthz,
        "/readyz": readyz,
    }

    async def handle(request: web.BaseRequest) -> web.StreamResponse:
        path, _, query = request.raw_path.partition("?")
        route = routes.get(path)
        if route is None:
            return web.Response(status=404, text="404: Not Found")
        if request.method not in _READ_METHODS:
            return web.Response(
                status=405, text="405: Method Not Allowed", headers={"Allow": "GET, HEAD"}
            )
        return await route(request, query)

    return web.Server(handle)
