"""The seeder's gRPC service, HTTP health and metrics, on loopback."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from aptmesh.seeder.publish import MemoryPublisher
from aptmesh.seeder.service import SERVICE_NAME
from aptmesh.v1 import seeder_pb2, seeder_pb2_grpc
from tests.fixtures.debrepo import DebRepo

from .conftest import StartSeeder, seeder_config


async def test_status_and_sync_now_over_grpc(
    tmp_path: Path, debrepo: DebRepo, start_seeder: StartSeeder
) -> None:
    seeder = await start_seeder(seeder_config(tmp_path, debrepo, None), publisher=MemoryPublisher())
    async with grpc.aio.insecure_channel(seeder.grpc_target) as channel:
        stub = seeder_pb2_grpc.SeederServiceStub(channel)
        before = await stub.GetStatus(seeder_pb2.GetStatusRequest(), timeout=5)
        assert [r.name for r in before.repositories] == ["test"]
        assert not before.repositories[0].HasField("last_sync_time")
        assert before.torrents == 0

        synced = await stub.SyncNow(seeder_pb2.SyncNowRequest(repository="test"), timeout=30)
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
            await stub.SyncNow(seeder_pb2.SyncNowRequest(repository="nope"), timeout=5)
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
