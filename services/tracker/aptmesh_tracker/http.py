"""The HTTP frontend: `/announce`, `/scrape`, `/metrics`, `/healthz`, `/readyz`.

Every route is parse, call the logic, write. A request the client got wrong is
answered with HTTP 200 and a bencoded `failure reason` (what BitTorrent
clients expect), and so is one aiohttp's own parser refuses (`bad_request`,
e.g. a request line over the limit); each is one rate-limited warning line.
Any other failure is logged and answered with a generic reason, and the
tracker keeps serving. The announce path is hot: metrics children bound in
advance, one allocation-light parse, and logging only through the rate limit.

`/healthz` is liveness (the process serves HTTP). `/readyz` is readiness: 503
naming the stores that are unreachable (the cause is in the log, as
`store_unreachable`, never on this public port), so a load balancer prefers
the replicas that can publish and register; announces are answered either way.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from concurrent.futures import Executor
from typing import TypeVar

from aiohttp import web
from prometheus_client import CollectorRegistry

from aptmesh import logs
from aptmesh.metrics import REGISTRY_KEY, metrics_handler
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

# Request bodies are never read; a client that sends one gets 413 past this.
MAX_BODY = 1024
_INTERNAL = encode_failure("internal tracker error")
_refused = logs.RateLimitedWarning(log, "tracker_request_refused")
A = TypeVar("A")
R = TypeVar("R")


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

    def _refuse(self, exc: TrackerRequestError, request: web.Request) -> web.Response:
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

    async def announce(self, request: web.Request) -> web.Response:
        try:
            parsed = parse_announce(request.raw_path.partition("?")[2])
            ip = request.remote
            if ip is None:
                raise TrackerRequestError("internal", "cannot tell the client's address")
            response = await self._logic(functools.partial(self._tracker.announce, ip=ip), parsed)
            body = encode_announce(response, parsed.compact)
        except TrackerRequestError as exc:
            return self._refuse(exc, request)
        except Exception:
            return self._crash("announce")
        return web.Response(body=body, content_type="text/plain")

    async def scrape(self, request: web.Request) -> web.Response:
        try:
            parsed = parse_scrape(request.raw_path.partition("?")[2])
            body = encode_scrape(await self._logic(self._tracker.scrape, parsed))
        except TrackerRequestError as exc:
            return self._refuse(exc, request)
        except Exception:
            return self._crash("scrape")
        return web.Response(body=body, content_type="text/plain")


async def healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok\n")


def readiness(health: StoreHealth) -> web.Response:
    problems = health.problems()
    if not problems:
        return web.Response(text="ready\n")
    text = "".join(f"{c.value} store unreachable\n" for c in problems)
    return web.Response(status=503, text=text)


def build_app(
    frontend: Frontend, registry: CollectorRegistry, health: StoreHealth
) -> web.Application:
    app = web.Application(client_max_size=MAX_BODY)
    app[REGISTRY_KEY] = registry
    app.router.add_get("/announce", frontend.announce)
    app.router.add_get("/scrape", frontend.scrape)
    app.router.add_get("/metrics", metrics_handler)
    app.router.add_get("/healthz", healthz)

    async def readyz(request: web.Request) -> web.Response:
        return readiness(health)

    app.router.add_get("/readyz", readyz)
    return app
