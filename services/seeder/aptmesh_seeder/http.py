"""The seeder's small HTTP port: `/metrics`, `/healthz`, `/readyz`, and `/files/SHA256/NAME`
(the plain files of `files_dir`, `plainfiles.py`).

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
from aptmesh_seeder.plainfiles import PlainFiles
from aptmesh_seeder.seedbox import SeedBox

BOX_KEY = web.AppKey("aptmesh_seedbox", SeedBox)
FILES_KEY = web.AppKey("aptmesh_plain_files", PlainFiles)


async def plain_file(request: web.Request) -> web.StreamResponse:
    """A plain file of `files_dir`, only under the SHA-256 its last scan gave it."""
    files = request.app.get(FILES_KEY)
    path = files.lookup(request.match_info["sha256"], request.match_info["name"]) if files else None
    if path is None:
        raise web.HTTPNotFound(text="no such plain file on this seeder\n")
    return web.FileResponse(path, headers={"Content-Type": "application/octet-stream"})


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


def build_app(
    box: SeedBox, registry: CollectorRegistry, files: PlainFiles | None = None
) -> web.Application:
    app = web.Application(client_max_size=1024)
    app[BOX_KEY] = box
    if files is not None:
        app[FILES_KEY] = files
        app.router.add_get("/files/{sha256}/{name}", plain_file)
    app[REGISTRY_KEY] = registry
    app.router.add_get("/metrics", metrics_handler)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    return app
