"""`aptmesh tracker`: read the configuration, set up logging, run until SIGTERM.

`aptmesh tracker migrate [options]` only brings the store's schema to this
version and exits (the tracker does it at every start too; this is for a
deployment that migrates before it rolls replicas out).
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Sequence

from aptmesh import lifecycle, logs
from aptmesh.config import ConfigError, load
from aptmesh_tracker import app
from aptmesh_tracker.config import SERVICE, TrackerConfig
from aptmesh_tracker.index_store import StoreError
from aptmesh_tracker.stores import migrate

DESCRIPTION = (
    "The aptmesh tracker: package index (gRPC), BitTorrent tracker and edge registry. "
    "`aptmesh tracker migrate [options]` only brings the store's schema up to date and exits."
)


def main(argv: Sequence[str]) -> int:
    argv = list(argv)
    migrating = argv[:1] == ["migrate"]
    if migrating:
        argv = argv[1:]
    try:
        config = load(TrackerConfig, SERVICE, argv, os.environ, description=DESCRIPTION)
    except ConfigError as exc:
        print(f"aptmesh tracker: {exc}", file=sys.stderr)
        return 2
    logs.configure(SERVICE, config.log_level, config.log_format)
    log = logs.get("aptmesh_tracker")
    if migrating:
        try:
            version = migrate(config.store, config.db_path)
        except StoreError as exc:
            log.error("migration_failed", error=str(exc))
            return 1
        log.info("store_migrated", schema_version=version)
        return 0
    if config.store and not config.peer_store:
        log.warning(
            "peers_not_shared",
            reason="the index is shared (store) but swarms are in memory (no peer_store): "
            "replicas will not see each other's peers",
        )
    if not config.publish_token:
        log.warning("publish_token_missing", effect="publishing and edge registration are refused")

    async def run(stop: asyncio.Event) -> None:
        running = await app.start(config)
        log.info(
            "tracker_started",
            announce_url=running.announce_url,
            http_port=running.site.port,
            grpc_target=running.grpc_target,
            grpc_port=running.grpc.port,
            store=running.stores.backend.value,
            index_records=running.stores.index.record_count(),
            open_tracker=config.open_tracker,
        )
        await stop.wait()
        log.info("tracker_stopping")
        await running.stop()
        log.info("tracker_stopped")

    try:
        return lifecycle.run(run)
    except (OSError, StoreError) as exc:
        log.error("tracker_start_failed", error=str(exc))
        return 1
