"""The shared gRPC server: health, reflection, and go-grpc-prometheus metric names."""

from __future__ import annotations

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from aptmesh import grpcserver
from aptmesh.metrics import new_registry


async def test_health_reflection_and_metrics_over_a_real_socket() -> None:
    registry = new_registry("test")
    server = await grpcserver.start("127.0.0.1:0", [], registry)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            health = health_pb2_grpc.HealthStub(channel)
            reply = await health.Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await health.Check(health_pb2.HealthCheckRequest(service="nope"), timeout=5)
            assert caught.value.code() == grpc.StatusCode.NOT_FOUND

            stub = reflection_pb2_grpc.ServerReflectionStub(channel)
            request = reflection_pb2.ServerReflectionRequest(list_services="")
            async for response in stub.ServerReflectionInfo(iter([request]), timeout=5):
                names = {s.name for s in response.list_services_response.service}
                assert "grpc.health.v1.Health" in names

            await server.set_serving("", False)
            reply = await health.Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.NOT_SERVING
    finally:
        await server.stop(0)

    def sample(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, labels)

    check = {"grpc_type": "unary", "grpc_service": "grpc.health.v1.Health", "grpc_method": "Check"}
    assert sample("grpc_server_started_total", **check) == 3
    assert sample("grpc_server_handled_total", **check, grpc_code="OK") == 2
    assert sample("grpc_server_handled_total", **check, grpc_code="NOT_FOUND") == 1
    assert sample("grpc_server_handling_seconds_count", **check) == 3
    assert sample("aptmesh_build_info", service="test", version="0.1.0") == 1


def test_local_clients_dial_loopback_for_wildcard_binds() -> None:
    assert grpcserver.host_port("[::]:50051", 50051) == "127.0.0.1:50051"
    assert grpcserver.host_port("10.0.0.1:0", 4242) == "10.0.0.1:4242"


async def test_every_method_exports_samples_before_its_first_call() -> None:
    from aptmesh.v1 import edge_pb2, edge_pb2_grpc

    registry = new_registry("test")
    name = edge_pb2.DESCRIPTOR.services_by_name["EdgeService"].full_name
    servicer = grpcserver.Servicer(
        name,
        edge_pb2_grpc.add_EdgeServiceServicer_to_server,
        edge_pb2_grpc.EdgeServiceServicer(),  # type: ignore[abstract]  # no call is made
    )
    server = await grpcserver.start("127.0.0.1:0", [servicer], registry)
    await server.stop(0)
    methods = [m.name for m in edge_pb2.DESCRIPTOR.services_by_name["EdgeService"].methods]
    assert methods
    for method in methods:
        labels = {"grpc_type": "unary", "grpc_service": name, "grpc_method": method}
        assert registry.get_sample_value("grpc_server_started_total", labels) == 0
        assert (
            registry.get_sample_value("grpc_server_handled_total", labels | {"grpc_code": "OK"})
            == 0
        )
        assert registry.get_sample_value("grpc_server_handling_seconds_count", labels) == 0
