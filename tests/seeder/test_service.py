"""The seeder's gRPC service, HTTP health and metrics, on loopback."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from aptmesh.debrepo import DebRepo
from aptmesh.grpcserver import bearer_metadata
from aptmesh.metrics import new_registry
from aptmesh.swarm import QUEUE_MAX, Swarm, SwarmSettings
from aptmesh.v1 import seeder_pb2, seeder_pb2_grpc
from aptmesh_seeder import app
from aptmesh_seeder.metrics import SeederMetrics
from aptmesh_seeder.publish import MemoryPublisher
from aptmesh_seeder.service import SERVICE_NAME
from aptmesh_seeder.sync import SyncResult
from aptmesh_tracker import app as tracker_app
from aptmesh_tracker.client import TrackerClient
from aptmesh_tracker.records import Edge
from tests.fixtures.tracker import TOKEN

from .conftest import StartSeeder, seeder_config


async def test_status_and_sync_now_over_grpc(
    tmp_path: Path, debrepo: DebRepo, start_seeder: StartSeeder
) -> None:
    config = seeder_config(tmp_path, debrepo, None, admin_token="test-admin")
    seeder = await start_seeder(config, publisher=MemoryPublisher())
    auth = bearer_metadata("test-admin")
    async with grpc.aio.insecure_channel(seeder.grpc_target) as channel:
        stub = seeder_pb2_grpc.SeederServiceStub(channel)
        for metadata in ((), bearer_metadata("wrong")):  # control needs the admin token
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.SyncNow(seeder_pb2.SyncNowRequest(), metadata=metadata, timeout=5)
            assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
        before = await stub.GetStatus(seeder_pb2.GetStatusRequest(), timeout=5)
        assert [r.name for r in before.repositories] == ["test"]
        assert not before.repositories[0].HasField("last_sync_time")
        assert before.torrents == 0

        synced = await stub.SyncNow(
            seeder_pb2.SyncNowRequest(repository="test"), metadata=auth, timeout=30
        )
        [repo] = synced.repositories
        large = [p for p in debrepo.packages if p.swarmed]
        assert repo.last_sync_ok and repo.last_sync_error == ""
        assert repo.packages == len(large) and repo.bytes == sum(p.size for p in large)
        assert repo.source == debrepo.base_url
        assert repo.last_good_sync_time.seconds > 0

        status = await stub.GetStatus(seeder_pb2.GetStatusRequest(), timeout=5)
        assert status.torrents == len(large)
        assert status.seeded_bytes == sum(p.size for p in large)

        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.SyncNow(
                seeder_pb2.SyncNowRequest(repository="nope"), metadata=auth, timeout=5
            )
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND
        assert "test" in (caught.value.details() or "")


async def test_health_reflects_the_last_sync(
    tmp_path: Path, debrepo: DebRepo, start_seeder: StartSeeder
) -> None:
    seeder = await start_seeder(seeder_config(tmp_path, debrepo, None), publisher=MemoryPublisher())
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{seeder.http_url}/readyz") as response:
            assert response.status == 200
        async with http.get(f"{seeder.http_url}/healthz") as response:
            assert response.status == 200
        [result] = await seeder.box.sync()
        assert result.ok
        async with http.get(f"{seeder.http_url}/healthz") as response:
            assert response.status == 200

        debrepo.sign_with_unknown_key()
        [result] = await seeder.box.sync()
        assert result.kind == "signature"
        async with http.get(f"{seeder.http_url}/healthz") as response:
            assert response.status == 503
            body = await response.json()
        assert "signature" in body["repositories"]["test"]
    async with grpc.aio.insecure_channel(seeder.grpc_target) as channel:
        check = health_pb2_grpc.HealthStub(channel).Check
        reply = await check(health_pb2.HealthCheckRequest(service=SERVICE_NAME), timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.NOT_SERVING
    # The packages of the last good sync are still seeded.
    assert seeder.seeder.seeding.seeding() == {p.sha256 for p in debrepo.packages if p.swarmed}


async def test_metrics_pass_promtool(
    tmp_path: Path, debrepo: DebRepo, start_seeder: StartSeeder
) -> None:
    seeder = await start_seeder(seeder_config(tmp_path, debrepo, None), publisher=MemoryPublisher())
    [result] = await seeder.box.sync()
    assert result.ok
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{seeder.http_url}/metrics") as response,
    ):
        assert response.status == 200
        text = await response.text()
    promtool = await asyncio.create_subprocess_exec(
        "/usr/bin/promtool",
        "check",
        "metrics",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    async with asyncio.timeout(30):
        said, _ = await promtool.communicate(text.encode())
    assert promtool.returncode == 0, said.decode()
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }
    large = [p for p in debrepo.packages if p.swarmed]
    assert samples[("aptmesh_seeder_torrents", ())] == len(large)
    assert samples[("aptmesh_seeder_hashed_bytes_total", ())] == sum(p.size for p in large)
    assert samples[("aptmesh_seeder_upstream_bytes_total", (("kind", "package"),))] == sum(
        p.size for p in large
    )
    up = (("direction", "upload"), ("service", "seeder"))
    assert samples[("aptmesh_torrent_payload_bytes_total", up)] == 0
    signature = (("kind", "signature"), ("service", "seeder"))
    assert samples[("aptmesh_verification_failures_total", signature)] == 0
    repo = (("repository", "test"),)
    assert samples[("aptmesh_seeder_last_good_sync_timestamp_seconds", repo)] > 0
    assert samples[("aptmesh_seeder_sync_duration_seconds_count", repo)] == 1
    assert samples[("aptmesh_seeder_syncs_total", (*repo, ("result", "ok")))] == 1


async def _samples(url: str) -> dict[str, float]:
    async with aiohttp.ClientSession() as http, http.get(f"{url}/metrics") as response:
        text = await response.text()
    return {
        sample.name: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if not sample.labels
    }


async def test_the_seeder_reads_the_site_from_the_registry(
    tmp_path: Path,
    debrepo: DebRepo,
    tracker: tracker_app.RunningTracker,
    start_seeder: StartSeeder,
) -> None:
    """Edges as fast as the seeder (seed-bound): a shallow request queue, told to peers at
    handshake. Edges registered with slow uplinks (peer-bound): deep. A seeder that does not
    know its own uplink is left alone."""
    capacity = 10_000_000
    async with TrackerClient(tracker.grpc_target, token=TOKEN) as client:
        for number in range(6):
            await client.register_edge(
                Edge(f"e{number}", f"http://127.0.0.1:{9000 + number}", upload_capacity=capacity)
            )
        seeder = await start_seeder(
            seeder_config(tmp_path, debrepo, tracker, upload_capacity=capacity)
        )
        async with asyncio.timeout(10):
            while (samples := await _samples(seeder.http_url))["aptmesh_seeder_site_edges"] < 6:
                await asyncio.sleep(0.05)
        shallow = 6  # 10 MB/s / 6 edges over a loaded round trip of 50 ms: 5.1 blocks
        assert samples["aptmesh_seeder_request_queue_depth"] == shallow
        assert seeder.seeder.swarm is not None
        settings = seeder.seeder.swarm._session.get_settings()
        assert settings["max_allowed_in_request_queue"] == shallow

        for number in range(6):
            await client.register_edge(
                Edge(f"e{number}", f"http://127.0.0.1:{9000 + number}", upload_capacity=10**6)
            )
        uplinks = await seeder.seeder.publisher.edge_uplinks()
        assert uplinks == [10**6] * 6
        seeder.seeder.swarm.know_site(uplinks)  # what the next look does (the loop: below)
        assert (await _samples(seeder.http_url))["aptmesh_seeder_request_queue_depth"] == QUEUE_MAX

    unknown = await start_seeder(
        seeder_config(tmp_path / "other", debrepo, tracker), publisher=MemoryPublisher()
    )
    # It still watches the registry (for the tracker's peers_epoch), but knows no site.
    assert unknown.site_watch is not None
    assert (await _samples(unknown.http_url))["aptmesh_seeder_site_edges"] == -1


async def test_an_unreachable_registry_keeps_the_last_site(tmp_path: Path) -> None:
    swarm = Swarm(
        SwarmSettings(listen_host="127.0.0.1", listen_port=0, role="seeder", upload_capacity=10**7)
    )
    publisher = MemoryPublisher()
    publisher.uplinks = [10**6] * 6
    registry = new_registry("seeder")
    metrics = SeederMetrics(registry, ["test"], swarm.stats)
    watch = asyncio.create_task(
        app.watch_tracker(swarm, publisher, metrics, 0.05, renew_now=asyncio.Event())
    )
    try:
        async with asyncio.timeout(5):
            while swarm.site_depth != QUEUE_MAX:
                await asyncio.sleep(0.01)
        publisher.fail = True
        await asyncio.sleep(0.2)
        assert (
            swarm.site_depth == QUEUE_MAX
            and registry.get_sample_value("aptmesh_seeder_site_edges") == 6
        )
        publisher.fail, publisher.uplinks = False, [10**7] * 6
        async with asyncio.timeout(5):
            while swarm.site_depth != 6:
                await asyncio.sleep(0.01)
    finally:
        watch.cancel()
        swarm.close()


async def test_a_failed_sync_is_tried_again_soon_not_after_the_poll_interval(
    tmp_path: Path, debrepo: DebRepo, start_seeder: StartSeeder
) -> None:
    """A seeder that starts beside a tracker still starting cannot publish at first; it tries
    again after seconds, doubling, not after its hour-long poll interval."""
    publisher = MemoryPublisher()
    publisher.fail = True
    seeder = await start_seeder(
        seeder_config(tmp_path, debrepo, None, poll_interval=3600.0), publisher=publisher
    )
    box = seeder.box
    box.retry_first = 0.2
    stop = asyncio.Event()
    attempts: list[bool] = []

    async def count(results: list[SyncResult]) -> None:
        attempts.append(all(r.ok for r in results))

    box.on_synced = count
    polling = asyncio.create_task(box.run(stop))
    try:
        async with asyncio.timeout(20):
            while len(attempts) < 2:
                await asyncio.sleep(0.02)
            publisher.fail = False
            while not attempts[-1]:
                await asyncio.sleep(0.02)
        assert attempts[:2] == [False, False] and attempts[-1]
        assert set(publisher.records) == {p.sha256 for p in debrepo.packages if p.swarmed}
        done = len(attempts)
        await asyncio.sleep(0.5)
        assert len(attempts) == done  # back to the poll interval once a sync worked
    finally:
        stop.set()
        await polling
