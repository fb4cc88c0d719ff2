"""Prometheus helpers shared by the services.

Each service builds its metrics on its own `CollectorRegistry` (several
services run in one process under `aptmesh up` and in tests). Names follow
DESIGN.md: prefix `aptmesh_`, base units, counters end in `_total`, no
unbounded labels.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from aiohttp import web
from google.protobuf import descriptor_pool
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from aptmesh import __version__


def new_registry(service: str) -> CollectorRegistry:
    """A registry with `aptmesh_build_info` already in it."""
    registry = CollectorRegistry()
    info = Gauge(
        "aptmesh_build_info",
        "Build information; the value is always 1.",
        ["service", "version"],
        registry=registry,
    )
    info.labels(service=service, version=__version__).set(1)
    return registry


async def metrics_handler(request: web.Request) -> web.Response:
    """aiohttp handler for `/metrics`; the app holds the registry under `REGISTRY_KEY`."""
    registry = request.app[REGISTRY_KEY]
    body = generate_latest(registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


REGISTRY_KEY = web.AppKey("aptmesh_registry", CollectorRegistry)

# Bucket bounds for RPC latency, as go-grpc-prometheus uses (seconds).
_GRPC_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class GrpcServerMetrics(grpc.aio.ServerInterceptor):
    """Exports go-grpc-prometheus's server metric names for unary-unary and streaming RPCs.

    (py-grpc-prometheus has no released asyncio interceptor, see the reference notes.)
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        labels = ["grpc_type", "grpc_service", "grpc_method"]
        self.started = Counter(
            "grpc_server_started_total",
            "Total number of RPCs started on the server.",
            labels,
            registry=registry,
        )
        self.handled = Counter(
            "grpc_server_handled_total",
            "Total number of RPCs completed on the server, regardless of success or failure.",
            [*labels, "grpc_code"],
            registry=registry,
        )
        self.handling = Histogram(
            "grpc_server_handling_seconds",
            "Histogram of response latency of RPCs handled by the server.",
            labels,
            buckets=_GRPC_BUCKETS,
            registry=registry,
        )
        self.received = Counter(
            "grpc_server_msg_received_total",
            "Total number of RPC stream messages received on the server.",
            labels,
            registry=registry,
        )
        self.sent = Counter(
            "grpc_server_msg_sent_total",
            "Total number of gRPC stream messages sent by the server.",
            labels,
            registry=registry,
        )

    def initialize(self, service: str) -> None:
        """Gives every method of `service` (a full name in the protobuf descriptor pool) its
        samples at zero, as go-grpc-prometheus's InitializeMetrics does: a service that has not
        been called yet still exports `grpc_server_*` series, so dashboards and `rate()` see it.
        """
        try:
            descriptor = descriptor_pool.Default().FindServiceByName(service)
        except KeyError:
            return  # health and reflection: not in the default pool, and not ours to chart
        for method in descriptor.methods:
            kind = _grpc_type(method.client_streaming, method.server_streaming)
            labels = (kind, service, method.name)
            self.started.labels(*labels)
            self.received.labels(*labels)
            self.sent.labels(*labels)
            self.handling.labels(*labels)
            self.handled.labels(*labels, grpc.StatusCode.OK.name)

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        service, _, method = handler_call_details.method.lstrip("/").rpartition("/")
        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(
                self._wrap_unary(handler.unary_unary, "unary", service, method),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(
                self._wrap_stream(handler.unary_stream, "server_stream", service, method),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler  # client- and bidi-streaming: not used by aptmesh's services

    def _finish(self, labels: tuple[str, str, str], start: float, code: grpc.StatusCode) -> None:
        self.handled.labels(*labels, code.name).inc()
        self.handling.labels(*labels).observe(time.perf_counter() - start)

    def _wrap_unary(self, fn: Any, kind: str, service: str, method: str) -> Any:
        labels = (kind, service, method)

        async def wrapped(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            self.started.labels(*labels).inc()
            self.received.labels(*labels).inc()
            start = time.perf_counter()
            try:
                response = await fn(request, context)
            except BaseException:
                self._finish(labels, start, _code_of(context, grpc.StatusCode.UNKNOWN))
                raise
            self.sent.labels(*labels).inc()
            self._finish(labels, start, _code_of(context, grpc.StatusCode.OK))
            return response

        return wrapped

    def _wrap_stream(self, fn: Any, kind: str, service: str, method: str) -> Any:
        labels = (kind, service, method)

        async def wrapped(
            request: Any, context: grpc.aio.ServicerContext[Any, Any]
        ) -> AsyncIterator[Any]:
            self.started.labels(*labels).inc()
            self.received.labels(*labels).inc()
            start = time.perf_counter()
            try:
                async for item in fn(request, context):
                    self.sent.labels(*labels).inc()
                    yield item
            except BaseException:
                self._finish(labels, start, _code_of(context, grpc.StatusCode.UNKNOWN))
                raise
            self._finish(labels, start, _code_of(context, grpc.StatusCode.OK))

        return wrapped


def _grpc_type(client_streaming: bool, server_streaming: bool) -> str:
    if client_streaming:
        return "bidi_stream" if server_streaming else "client_stream"
    return "server_stream" if server_streaming else "unary"


def _code_of(
    context: grpc.aio.ServicerContext[Any, Any], default: grpc.StatusCode
) -> grpc.StatusCode:
    code = context.code()
    if isinstance(code, grpc.StatusCode):
        return code
    return default
