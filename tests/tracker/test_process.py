"""The real `aptmesh tracker` process: configuration errors, the index surviving kill -9, and
a replica's kill -9 losing nothing that the other replicas of a shared store serve."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
import urllib.request
from pathlib import Path

from aptmesh.testing import wait_until
from aptmesh.torrent import make_torrent
from aptmesh_tracker import sqlite_store, wire
from aptmesh_tracker.client import TrackerClient
from aptmesh_tracker.records import Edge
from tests.tracker.conftest import TOKEN, make_file, record_of

APTMESH = str(Path(sys.executable).with_name("aptmesh"))


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [APTMESH, "tracker", *args],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, **(env or {})},
    )


def test_print_config_shows_defaults_and_masks_the_token() -> None:
    done = run_cli("--print-config", env={"APTMESH_TRACKER_PUBLISH_TOKEN": "hush"})
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    for expected in (
        "APTMESH_TRACKER_GRPC_BIND=[::]:50051",
        "APTMESH_TRACKER_HTTP_PORT=6969",
        "APTMESH_TRACKER_ANNOUNCE_INTERVAL=1800",
        "APTMESH_TRACKER_OPEN_TRACKER=false",
        "APTMESH_TRACKER_PUBLISH_TOKEN=***",
    ):
        assert expected in lines
    assert "hush" not in done.stdout


def test_bad_values_are_one_line_errors_naming_the_option() -> None:
    for env, names in (
        ({"APTMESH_TRACKER_HTTP_PORT": "web"}, "APTMESH_TRACKER_HTTP_PORT"),
        ({"APTMESH_TRACKER_PEER_TTL": "10"}, "APTMESH_TRACKER_PEER_TTL"),
        ({"APTMESH_TRACKER_NUMWANT": "5"}, "unknown environment variable APTMESH_TRACKER_NUMWANT"),
    ):
        done = run_cli(env=env)
        assert done.returncode == 2
        assert names in done.stderr
        assert "Traceback" not in done.stderr
        assert len(done.stderr.strip().splitlines()) == 1


async def start_process(
    db: Path, *options: str
) -> tuple[asyncio.subprocess.Process, dict[str, object]]:
    process = await asyncio.create_subprocess_exec(
        APTMESH,
        "tracker",
        "--grpc-bind=127.0.0.1:0",
        "--http-host=127.0.0.1",
        "--http-port=0",
        f"--db-path={db}",
        *options,
        env={**os.environ, "APTMESH_TRACKER_PUBLISH_TOKEN": TOKEN},
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stderr is not None
    while True:
        line = await asyncio.wait_for(process.stderr.readline(), timeout=20)
        assert line, "the tracker exited before it started"
        event = json.loads(line)
        if event["event"] == "tracker_started":
            return process, event


async def test_the_index_survives_kill_9(tmp_path: Path) -> None:
    record = record_of(make_torrent(make_file(tmp_path, "k_1_all.deb", 90_000)))
    db = tmp_path / "data" / "tracker.sqlite3"
    process, started = await start_process(db)
    try:
        async with TrackerClient(str(started["grpc_target"]), token=TOKEN) as client:
            assert await client.publish(record) is True
    finally:
        process.send_signal(signal.SIGKILL)
        await process.wait()
    assert process.returncode == -signal.SIGKILL
    process, started = await start_process(db)
    try:
        assert started["index_records"] == 1
        async with TrackerClient(str(started["grpc_target"])) as client:
            assert await client.get(record.sha256) == record
    finally:
        process.send_signal(signal.SIGTERM)  # and a clean stop on SIGTERM
        assert await asyncio.wait_for(process.wait(), timeout=20) == 0


async def test_a_replica_killed_loses_no_publish_registration_or_peer(
    tmp_path: Path, postgres_url: str, redis_url: str
) -> None:
    record = record_of(make_torrent(make_file(tmp_path, "r_1_all.deb", 90_000)))
    shared = (
        f"--store={postgres_url}",
        f"--peer-store={redis_url}",
        "--store-refresh-interval=0.5",
    )
    (one, first), (two, second) = await asyncio.gather(
        start_process(tmp_path / "unused.db", *shared),
        start_process(tmp_path / "unused.db", *shared),
    )
    try:
        async with TrackerClient(str(first["grpc_target"]), token=TOKEN) as client:
            assert await client.publish(record) is True
            await client.register_edge(Edge("edge-k", "http://192.0.2.9:3142", "lab"))
        # the seed announces to replica one; its HTTP port is in the started event
        v1 = record.tracker_hashes()[0]
        seed = wire.AnnounceRequest(v1, b"S" * 20, 7001, left=0, event="started")
        leech = wire.AnnounceRequest(v1, b"L" * 20, 7002, left=9, event="started")

        async def announce(started: dict[str, object], request: wire.AnnounceRequest) -> bytes:
            url = f"{started['announce_url']}?{wire.encode_announce_request(request)}"
            return await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=10).read())

        async def tracked(started: dict[str, object], request: wire.AnnounceRequest) -> bool:
            return b"failure reason" not in await announce(started, request)

        await wait_until(lambda: tracked(first, seed), what="replica one tracks it")
    finally:
        one.send_signal(signal.SIGKILL)
        await one.wait()
    try:
        async with TrackerClient(str(second["grpc_target"])) as client:
            assert await client.get(record.sha256) == record
            assert [e.id for e in await client.list_edges("lab")] == ["edge-k"]
        await wait_until(lambda: tracked(second, leech), what="replica two tracks it")
        peers = wire.decode_announce_response(await announce(second, leech)).peers
        assert [wire.split_address(p.address) for p in peers] == [("127.0.0.1", 7001)]
    finally:
        two.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(two.wait(), timeout=20) == 0


def test_migrate_brings_a_sqlite_file_to_the_schema_and_exits(tmp_path: Path) -> None:
    db = tmp_path / "data" / "tracker.sqlite3"
    for _ in range(2):  # and again: nothing left to do
        done = run_cli("migrate", f"--db-path={db}")
        assert done.returncode == 0, done.stderr
        assert "store_migrated" in done.stderr
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == len(sqlite_store.MIGRATIONS)
    finally:
        conn.close()
