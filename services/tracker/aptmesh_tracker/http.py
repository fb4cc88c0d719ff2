"""The HTTP frontend: `/announce`, `/scrape`, `/metrics`, `/healthz`.

Every route is parse, call the logic, write. A request the client got wrong is
answered with HTTP 200 and a bencoded `failure reason` (what BitTorrent
clients expect), and so is one aiohttp's own parser refuses (`bad_request`,
e.g. a request line over the limit); each is one rate-limited warning line.
Any other failure is logged and answered with a generic reason, and the
tracker keeps serving. The announce path is hot: metrics children bound in
advance, one allocation-light parse, and logging only through the rate limit.
"""

from __future__ import annotations

from aiohttp import web
from prometheus_client import CollectorRegistry

from aptmesh import logs
from aptmesh.metrics import REGISTRY_KEY, metrics_handler
from aptmesh_tracker.metrics import TrackerMetrics
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
_refused = logs.RateLimitedWarning(log, "tracker_request_refused")

# Request bodies are never read; a client that sends one gets 413 past this.
MAX_BODY = 1024
_INTERNAL = encode_failure("internal tracker error")


class Frontend:
    def __init__(self, tracker: Tracker, metrics: TrackerMetrics) -> None:
        self._tracker = tracker
        self._metrics = metrics

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
        log.exception("tracker request failed", route=route)
        return web.Response(body=_INTERNAL, content_type="text/plain")

    async def announce(self, request: web.Request) -> web.Response:
        try:
            parsed = parse_announce(request.raw_path.partition("?")[2])
            ip = request.remote
            if ip is None:
                raise TrackerRequestError("internal", "cannot tell the client's address")
            response = self._tracker.announce(parsed, ip)
            body = encode_announce(response, parsed.compact)
        except TrackerRequestError as exc:
            return self._refuse(exc, request)
        except Exception:
            return self._crash("announce")
        return web.Response(body=body, content_type="text/plain")

    async def scrape(self, request: web.Request) -> web.Response:
        try:
            body = encode_scrape(
                self._tracker.scrape(parse_scrape(request.raw_path.partition("?")[2]))
            )
        except TrackerRequestError as exc:
            return self._refuse(exc, request)
        except Exception:
            return self._crash("scrape")
        return web.Response(body=body, content_type="text/plain")


async def healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok\n")


def build_app(frontend: Frontend, registry: CollectorRegistry) -> web.Application:
    app = web.Application(client_max_size=MAX_BODY)
    app[REGISTRY_KEY] = registry
    app.router.add_get("/announce", frontend.announce)
    app.router.add_get("/scrape", frontend.scrape)
    app.router.add_get("/metrics", metrics_handler)
    app.router.add_get("/healthz", healthz)
    return app
