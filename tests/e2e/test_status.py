"""`aptmesh status` against a running mesh of real processes: one tracker, one seeder (a
registered seed box) and two edges in two zones, on their own loopback addresses.

The screen and `--json` must show each registration with its zone and health, the
index, and the seeder's torrents as swarms counted per torrent (a hybrid torrent's
v1 and v2 swarms once), agreeing with the tracker's own metrics.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from aptmesh.debrepo import ARCHITECTURE, COMPONENT, SUITE, DebRepo
from aptmesh_cli.status import CLEAR
from tests.fixtures.mesh import (
    APTMESH,
    DEADLINE,
    Proc,
    child_env,
    edge_process,
    proxy_apt,
    running,
    scrape,
    swarmed,
    wait_for,
)

TOKEN = "status-test-token"
TRACKER_HOST = "127.0.0.2"


def started(proc: Proc, event_name: str) -> dict[str, Any] | None:
    for line in proc.stderr.read_text(errors="replace").splitlines():
        with contextlib.suppress(ValueError):
            event = json.loads(line)
            if isinstance(event, dict) and event.get("event") == event_name:
                return event
    return None


def status(tracker: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [APTMESH, "status", "--tracker", tracker, *args],
        capture_output=True,
        text=True,
        timeout=DEADLINE,
        env=child_env(),
        check=False,
    )


def status_json(tracker: str) -> dict[str, Any]:
    done = status(tracker, "--json")
    assert done.returncode == 0, done.stderr
    document: dict[str, Any] = json.loads(done.stdout)
    return document


def watch_two_screens(tracker: str) -> str:
    """What `aptmesh status --watch` drew until its second screen began, then it is stopped."""
    argv = [APTMESH, "status", "--tracker", tracker, "--watch", "--interval", "0.2"]
    with subprocess.Popen(argv, stdout=subprocess.PIPE, env=child_env()) as proc:
        stdout = proc.stdout
        assert stdout is not None
        os.set_blocking(stdout.fileno(), False)
        seen = b""

        def two_screens() -> bool:
            nonlocal seen
            seen += stdout.read() or b""
            return seen.count(CLEAR.encode()) >= 3

        try:
            wait_for(two_screens, "two screens of aptmesh status --watch")
        finally:
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=DEADLINE)
    assert proc.returncode == 130, proc.returncode  # Ctrl-C ends it quietly
    return seen.decode()


@contextlib.contextmanager
def mesh(repo: DebRepo, tmp: Path) -> Iterator[tuple[str, str, str]]:
    """The four processes; yields the tracker's gRPC target, its metrics URL and edge-a's
    HTTP URL."""
    tracker_argv = [
        *(APTMESH, "tracker", "--grpc-bind", f"{TRACKER_HOST}:0", "--http-host", TRACKER_HOST),
        *("--http-port", "0", "--db-path", str(tmp / "tracker.sqlite3"), "--publish-token", TOKEN),
        *("--log-format", "json", "--log-level", "info"),
    ]
    with running("tracker", tracker_argv, tmp / "tracker") as tracker:
        event = wait_for(
            lambda: started(tracker, "tracker_started"), "the tracker", procs=[tracker]
        )
        grpc, announce = event["grpc_target"], event["announce_url"]
        metrics = announce.removesuffix("/announce") + "/metrics"
        swarm = ("--tracker-grpc", grpc, "--tracker-announce", announce, "--publish-token", TOKEN)
        spec = (
            f"test={repo.base_url};suites={SUITE};components={COMPONENT}"
            f";architectures={ARCHITECTURE} all"
        )
        seeder_argv = [
            *(APTMESH, "seeder", "--repositories", spec, "--keyring", str(repo.keyring)),
            *("--data-dir", str(tmp / "seeder" / "data"), *swarm),
            *("--grpc-bind", "127.0.0.5:0", "--http-host", "127.0.0.5", "--http-port", "0"),
            *("--listen-host", "127.0.0.5", "--listen-port", "0"),
            *("--upload-capacity", "10MiB", "--seed-box-id", "seed-1"),
            *("--log-format", "json", "--log-level", "info"),
        ]
        origin = repo.base_url.removesuffix("/debian")
        with (
            running("seeder", seeder_argv, tmp / "seeder") as seeder,
            edge_process(
                "edge-a",
                "127.0.0.3",
                tmp,
                origin,
                repo.keyring,
                *swarm,
                *("--zone", "zone-a", "--edge-id", "edge-a"),
            ) as (_, edge_a),
            edge_process(
                "edge-b",
                "127.0.0.4",
                tmp,
                origin,
                repo.keyring,
                *swarm,
                *("--zone", "zone-b", "--edge-id", "edge-b", "--upload-capacity", "1MiB"),
            ),
        ):
            wanted = len(swarmed(repo))
            wait_for(
                lambda: scrape(metrics).value("aptmesh_tracker_swarms") >= wanted,
                f"the seeder's {wanted} torrents to have swarms",
                procs=[tracker, seeder],
                timeout=2 * DEADLINE,
            )
            yield grpc, metrics, edge_a


def test_status_shows_every_part_of_the_mesh(e2e_repo: DebRepo, tmp_path: Path) -> None:
    with mesh(e2e_repo, tmp_path) as (tracker, metrics, edge_a):
        # Real apt traffic through edge-a: it verifies the suite's InRelease and reports it.
        proxy_apt(tmp_path / "apt", e2e_repo, edge_a).run("apt-get", "update")
        doc = wait_for(
            lambda: (
                (d := status_json(tracker))
                and len(d["edges"]) == 2
                and d["seed_boxes"]
                and d["generations"]
                and d
            ),
            "both edges, the seed box and edge-a's generation in the status",
        )
        figures = scrape(metrics)
        screen = status(tracker)
        watched = watch_two_screens(tracker)

    assert [(z["zone"], z["edges"]) for z in doc["zones"]] == [
        ("zone-a", ["edge-a"]),
        ("zone-b", ["edge-b"]),
    ]
    by_id = {e["id"]: e for e in doc["edges"]}
    assert by_id["edge-a"]["url"].startswith("http://127.0.0.3:")
    assert by_id["edge-b"]["upload_capacity"] == 1 << 20
    assert all(e["health"] == "healthy" for e in doc["edges"] + doc["seed_boxes"])
    [box] = doc["seed_boxes"]
    assert box["id"] == "seed-1" and box["upload_capacity"] == 10 << 20
    assert box["last_renewal"] < box["lease_end"]

    packages = {p.sha256: p for p in swarmed(e2e_repo)}
    assert doc["index_records"] == figures.value("aptmesh_tracker_index_records") == len(packages)
    # Per torrent: each of the seeder's hybrid torrents is one swarm, seeded by the seeder.
    assert doc["torrents_with_peers"] == figures.value("aptmesh_tracker_swarms") == len(packages)
    assert {s["sha256"] for s in doc["swarms"]} == set(packages)
    for swarm in doc["swarms"]:
        assert swarm["name"] == Path(packages[swarm["sha256"]].filename).name
        assert swarm["seeders"] >= 1 and len(swarm["info_hashes"]) == 2
    # edge-a serves the suite's one generation; edge-b served nothing, so it is not counted.
    [suite] = doc["generations"]
    assert suite["suite"].endswith(f"/debian/dists/{SUITE}") and suite["edges"] == 1
    assert suite["lag_seconds"] == 0
    [generation] = suite["generations"]
    release = e2e_repo.release()
    assert generation["edges"] == 1 and len(generation["hash"]) == 16
    assert release.date is not None
    assert generation["date"] == release.date.isoformat().replace("+00:00", "Z")

    assert screen.returncode == 0, screen.stderr
    text = screen.stdout
    for expected in ("zone zone-a:", "zone zone-b:", "edge-a", "edge-b", "seed-1", "healthy"):
        assert expected in text, text
    assert f"index: {len(packages)} package records" in text
    assert f"swarms: {len(packages)} torrents with peers" in text
    assert "repository generations:" in text and "1/1 edges" in text
    # --watch redraws the same screen: clear, home, then the figures again.
    first, second = watched.split(CLEAR)[1:3]
    assert "zone zone-a:" in first and "zone zone-b:" in second


def test_an_unreachable_tracker_is_a_one_line_error() -> None:
    done = status("127.0.0.1:9", "--timeout", "2")
    assert done.returncode == 1
    assert done.stderr.startswith("aptmesh status: reading the mesh status:"), done.stderr
    assert "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
