"""The gRPC server every service runs: health, reflection, metrics, graceful stop.

A service hands over its servicers; this module adds `grpc.health.v1` (one
status per service name plus the overall "" status), server reflection and the
Prometheus interceptor, binds, and reports the port it got (port 0 picks a
free one, which tests and `aptmesh up` use).
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from prometheus_client import CollectorRegistry

from aptmesh.metrics import GrpcServerMetrics


@dataclass(frozen=True)
class Servicer:
    """One gRPC service to host: its full name, the generated adder and the implementation."""

    name: str
    add: Callable[[Any, grpc.aio.Server], None]
    impl: object


class GrpcServer:
    def __init__(self, server: grpc.aio.Server, health: health.aio.HealthServicer, port: int):
        self._server = server
        self._health = health
        self.port = port

    async def set_serving(self, name: str, serving: bool) -> None:
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if serving
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        await self._health.set(name, status)

    async def stop(self, grace: float = 5.0) -> None:
        """Stops accepting calls, lets running ones finish within `grace` seconds."""
        await self._health.enter_graceful_shutdown()
        await self._server.stop(grace)


async def start(
    bind: str,
    servicers: Sequence[Servicer],
    registry: CollectorRegistry,
) -> GrpcServer:
    """Starts a server on `bind` (host:port); raises OSError if the address is taken."""
    metrics = GrpcServerMetrics(registry)
    server = grpc.aio.server(
        interceptors=[metrics],
        options=[("grpc.so_reuseport", 0), ("grpc.max_receive_message_length", 64 << 20)],
    )
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    for servicer in servicers:
        servicer.add(servicer.impl, server)
        metrics.initialize(servicer.name)
        await health_servicer.set(servicer.name, health_pb2.HealthCheckResponse.SERVING)
    await health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    reflection.enable_server_reflection(
        [s.name for s in servicers] + [health.SERVICE_NAME, reflection.SERVICE_NAME], server
    )
    port = server.add_insecure_port(bind)
    if port == 0:
        raise OSError(f"starting gRPC server: cannot bind {bind}")
    await server.start()
    return GrpcServer(server, health_servicer, port)


def bearer_metadata(token: str) -> tuple[tuple[str, str], ...]:
    """Call metadata carrying a publish token."""
    return (("authorization", f"Bearer {token}"),)


def token_matches(context: grpc.aio.ServicerContext[Any, Any], expected: str) -> bool:
    """True when the call carries `authorization: Bearer <expected>` (constant-time compare)."""
    if not expected:
        return False
    for key, value in context.invocation_metadata() or ():
        if key == "authorization" and isinstance(value, str) and value.startswith("Bearer "):
            return hmac.compare_digest(value[len("Bearer ") :].encode(), expected.encode())
    return False


def host_port(bind: str, port: int) -> str:
    """The address a client on this machine dials for a server bound to `bind`."""
    host = bind.rsplit(":", 1)[0]
    if host in {"", "0.0.0.0", "[::]"}:
        host = "127.0.0.1"
    return f"{host}:{port}"
