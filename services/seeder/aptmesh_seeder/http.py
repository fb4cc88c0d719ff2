"""The seeder's small HTTP port: `/metrics`, `/healthz`, `/readyz`.

- `/healthz`: 200 while the last sync of every repository worked (or none has
  run yet), 503 naming the failing repositories otherwise. It is for
  monitoring and alerting; do not make it a liveness probe (restarting the
  seeder does not fix an upstream or a bad signature).
- `/readyz`: 200 once the held files are seeding again after a start and
  while the data directory is there and writable, 503 otherwise (the
  readiness probe; a seeder whose disk went away cannot store what it syncs).
"""

from __future__ import annotations

from aiohttp import web
from prometheus_client import CollectorRegistry

from aptmesh.files import writable_directory
from aptmesh.metrics import REGISTRY_KEY, metrics_handler
from aptmesh_seeder.seedbox import SeedBox

BOX_KEY = web.AppKey("aptmesh_seedbox", SeedBox)


async def healthz(request: web.Request) -> web.Response:
    box = request.app[BOX_KEY]
    failing = {}
    for name in box.syncs:
        state = box.ctx.state.repository(name)
        if state.last_sync_ok is False:
            failing[name] = state.last_error
    if failing:
        return web.json_response({"status": "failing", "repositories": failing}, status=503)
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    box = request.app[BOX_KEY]
    if not box.ready:
        return web.json_response({"status": "starting"}, status=503)
    problem = writable_directory(box.ctx.data_dir)
    if problem is not None:
        return web.json_response({"status": "data_dir_unusable", "error": problem}, status=503)
    return web.json_response({"status": "ready"})


def build_app(box: SeedBox, registry: CollectorRegistry) -> web.Application:
    app = web.Application(client_max_size=1024)
    app[BOX_KEY] = box
    app[REGISTRY_KEY] = registry
    app.router.add_get("/metrics", metrics_handler)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    return app
