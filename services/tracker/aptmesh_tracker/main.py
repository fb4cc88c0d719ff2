"""`aptmesh tracker`: read the configuration, set up logging, run until SIGTERM."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Sequence

from aptmesh import lifecycle, logs
from aptmesh.config import ConfigError, load
from aptmesh_tracker import app
from aptmesh_tracker.config import SERVICE, TrackerConfig
from aptmesh_tracker.store import StoreError

DESCRIPTION = "The aptmesh tracker: package index (gRPC), BitTorrent tracker and edge registry."


def main(argv: Sequence[str]) -> int:
    try:
        config = load(TrackerConfig, SERVICE, argv, os.environ, description=DESCRIPTION)
    except ConfigError as exc:
        print(f"aptmesh tracker: {exc}", file=sys.stderr)
        return 2
    logs.configure(SERVICE, config.log_level, config.log_format)
    log = logs.get("aptmesh_tracker")
    if not config.publish_token:
        log.warning("no publish token configured: publishing and edge registration are refused")

    async def run(stop: asyncio.Event) -> None:
        running = await app.start(config)
        log.info(
            "tracker started",
            announce_url=running.announce_url,
            http_port=running.site.port,
            grpc_target=running.grpc_target,
            grpc_port=running.grpc.port,
            db_path=str(config.db_path),
            index_records=running.store.record_count(),
            open_tracker=config.open_tracker,
        )
        await stop.wait()
        log.info("tracker stopping")
        await running.stop()
        log.info("tracker stopped")

    try:
        return lifecycle.run(run)
    except (OSError, StoreError) as exc:
        log.error("tracker failed to start", error=str(exc))
        return 1
