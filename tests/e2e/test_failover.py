"""Two tracker replicas on PostgreSQL and Redis, and `kill -9` of one while apt runs.

A seeder and an edge are given both replicas and no load balancer: both gRPC
addresses in `--tracker-grpc` (round robin, calls retried on the other replica
when one is UNAVAILABLE) and both announce URLs in `--tracker-announce` (every
torrent tells both). Replica A is SIGKILLed just after `apt-get download` of
the swarmed packages starts, so the edge's index lookups, its swarm announces
and the registrations' renewals meet a dead replica. apt must not notice; the
packages must still come from the swarm; replica B must hold every publish and
every registration, renewed after A died.

Addresses: mirror 127.0.0.1, trackers 127.0.0.5, seeder 127.0.0.6, edge 127.0.0.7.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from aptmesh.debrepo import DebRepo
from aptmesh.torrent import make_torrent
from aptmesh_tracker.client import TrackerClient
from aptmesh_tracker.records import PackageRecord, Site
from tests.fixtures.mesh import (
    APTMESH,
    Proc,
    assert_clean_terminal,
    assert_downloaded,
    edge_process,
    mesh_apt,
    pool_requests,
    running,
    scrape,
    served,
    swarmed,
    wait_for,
)
from tests.tracker.conftest import make_file, record_of

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

TOKEN = "failover-publish-token"  # noqa: S105 - a throw-away token for loopback processes
TRACKERS, SEEDER, EDGE = "127.0.0.5", "127.0.0.6", "127.0.0.7"
LEASE = 6  # seconds: registrations are renewed every 2 s, so renewals must reach B


def started(proc: Proc, event_name: str) -> dict[str, Any] | None:
    """The JSON log event `event_name` from the process's stderr, once it is there."""
    for line in proc.stderr.read_text(errors="replace").splitlines():
        with contextlib.suppress(ValueError):
            event = json.loads(line)
            if isinstance(event, dict) and event.get("event") == event_name:
                return event
    return None


@contextlib.contextmanager
def tracker(name: str, tmp: Path, store: str, peer_store: str) -> Iterator[tuple[Proc, str, str]]:
    """`aptmesh tracker` on the shared stores: (process, gRPC target, announce URL)."""
    argv = [
        *(APTMESH, "tracker", "--grpc-bind", f"{TRACKERS}:0"),
        *("--http-host", TRACKERS, "--http-port", "0"),
        *("--store", store, "--peer-store", peer_store, "--publish-token", TOKEN),
        *("--edge-lease-seconds", str(LEASE), "--store-refresh-interval", "0.5"),
        *("--log-format", "json", "--log-level", "info"),
    ]
    with running(name, argv, tmp / name) as proc:
        event = wait_for(lambda: started(proc, "tracker_started"), f"{name}", procs=[proc])
        yield proc, str(event["grpc_target"]), str(event["announce_url"])


def seeder_argv(tmp: Path, repo: DebRepo, grpc: str, announce: str) -> list[str]:
    spec = (
        f"failover={repo.base_url};suites={repo.suite};components={' '.join(repo.components)}"
        f";architectures={' '.join(repo.architectures)}"
    )
    return [
        *(APTMESH, "seeder", "--repositories", spec, "--keyring", str(repo.keyring)),
        *("--data-dir", str(tmp / "seeder" / "data"), "--tracker-grpc", grpc),
        *("--tracker-announce", announce, "--publish-token", TOKEN),
        *("--seed-box-id", "seed-1", "--upload-capacity", "100MB"),
        *("--grpc-bind", f"{SEEDER}:0", "--http-host", SEEDER, "--http-port", "0"),
        *("--listen-host", SEEDER, "--listen-port", "0"),
        *("--log-format", "json", "--log-level", "info"),
    ]


def on(target: str, call: Any) -> Any:
    """Runs `call(client)` against `target` (one replica or several) and returns its result."""

    async def run() -> Any:
        async with TrackerClient(target, token=TOKEN, timeout=10) as client:
            return await call(client)

    return asyncio.run(run())


def site(target: str) -> Site:
    result: Site = on(target, lambda c: c.list_site("lab"))
    return result


async def _records(client: TrackerClient, sha256s: list[str]) -> dict[str, PackageRecord]:
    return (await client.get_many(sha256s)).records


def test_kill_9_of_a_replica_while_apt_runs_loses_nothing(
    e2e_repo: DebRepo, postgres_url: str, redis_url: str, tmp_path: Path
) -> None:
    repo = e2e_repo
    with (
        tracker("tracker-a", tmp_path, postgres_url, redis_url) as (a, a_grpc, a_announce),
        tracker("tracker-b", tmp_path, postgres_url, redis_url) as (b, b_grpc, b_announce),
    ):
        both_grpc, both_announce = f"{a_grpc},{b_grpc}", f"{a_announce},{b_announce}"
        seeder_argv_ = seeder_argv(tmp_path, repo, both_grpc, both_announce)
        with running("seeder", seeder_argv_, tmp_path / "seeder") as seeder:
            event = wait_for(
                lambda: started(seeder, "seeder_started"), "the seeder", procs=[seeder]
            )
            seeder_metrics = str(event["http"]) + "/metrics"
            large = swarmed(repo)
            wait_for(
                lambda: (
                    scrape(seeder_metrics).value("aptmesh_seeder_published_total") >= len(large)
                ),
                f"the seeder to publish {len(large)} torrents",
                procs=[seeder, a, b],
            )
            with edge_process(
                "edge",
                EDGE,
                tmp_path,
                f"{repo.host}=http://{repo.host}",
                repo.keyring,
                *("--tracker-grpc", both_grpc, "--tracker-announce", both_announce),
                *("--publish-token", TOKEN, "--zone", "lab"),
            ) as (edge, edge_url):
                procs = [seeder, edge, b]
                wait_for(
                    lambda: any(e.url == edge_url for e in site(b_grpc).edges),
                    "the edge registered",
                    procs=procs,
                )
                env = mesh_apt(tmp_path / "apt", repo, edge_url)
                assert_clean_terminal(env.run("apt-get", "update"))

                names = [p.name for p in large]
                before = pool_requests(repo)
                swarm_before = served(scrape(edge_url + "/metrics"), "swarm")
                apt = subprocess.Popen(
                    ["apt-get", *env.options, "download", *names],
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                    env=env.env,
                    cwd=env.root,
                    start_new_session=True,
                )
                try:
                    a.kill()  # kill -9, while apt runs
                    killed_at = time.monotonic()
                    stdout, stderr = apt.communicate(timeout=120)
                finally:
                    if apt.poll() is None:
                        apt.kill()
                        apt.wait()
                result = subprocess.CompletedProcess(apt.args, apt.returncode, stdout, stderr)
                assert result.returncode == 0, f"{stdout}\n{stderr}\n{edge.output()}"
                assert_clean_terminal(result)
                assert_downloaded(env, repo, names)

                # the swarm still carried the large packages: the mirror was not asked for them
                after = pool_requests(repo)
                assert all(after[p.filename] == before[p.filename] for p in large), after
                swarm_bytes = served(scrape(edge_url + "/metrics"), "swarm") - swarm_before
                assert swarm_bytes >= sum(p.size for p in large)

                # every publish is on the survivor
                wanted = [p.sha256 for p in large]
                held = on(b_grpc, lambda c: _records(c, wanted))
                assert sorted(held) == sorted(wanted)
                # a publish made now, through both addresses, lands on the survivor
                extra = record_of(
                    make_torrent(make_file(tmp_path / "x", "extra_1.0_all.deb", 200_000))
                )
                assert on(both_grpc, lambda c: c.publish(extra)) is True
                assert on(b_grpc, lambda c: c.get(extra.sha256)) == extra

                # registrations were renewed on B after A died (a lease outlived)
                def renewed() -> bool:
                    now = site(b_grpc)
                    return (
                        time.monotonic() > killed_at + LEASE + 1
                        and any(e.url == edge_url for e in now.edges)
                        and now.seed_upload_capacity > 0
                    )

                wait_for(renewed, "registrations renewed on replica B", procs=procs)
