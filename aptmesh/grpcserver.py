"""The gRPC server every service runs: health, reflection, metrics, graceful stop.

A service hands over its servicers; this module adds `grpc.health.v1` (one
status per service name plus the overall "" status), server reflection and the
Prometheus interceptor, binds, and reports the port it got (port 0 picks a
free one, which tests and `aptmesh up` use).

Bounds (an outsider can call any method before any token is checked):

- Every unary method has a most bytes for one request message: its Servicer's
  `max_request` entry, else `DEFAULT_MAX_REQUEST`. Each entry is sized to the
  largest legitimate message of that method (e.g. a batch of `max_batch`
  hashes), not to a round number. gRPC core refuses a message over the largest
  of them when it reads the message's length prefix, before buffering it
  (RESOURCE_EXHAUSTED); one between that and the method's own bound is refused
  before protobuf parses it (RESOURCE_EXHAUSTED too). So a batch count is
  checked by size before a single element is parsed.
- Bytes that do not parse as the method's request are INVALID_ARGUMENT, not
  the INTERNAL gRPC would say. Every refusal that is the caller's fault and
  goes through `abort` (these, bad arguments, missing tokens) is one
  rate-limited warning line without a traceback.
- At most `MAX_CONCURRENT_RPCS` calls run at once (more get
  RESOURCE_EXHAUSTED), so what the server holds for requests is at most that
  many times the largest bound.

State-changing methods check a bearer token with `require_token`; read-only
methods are open.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NoReturn

import grpc
from google.protobuf.message import DecodeError
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from prometheus_client import CollectorRegistry

from aptmesh import logs
from aptmesh.metrics import GrpcServerMetrics

log = logs.get(__name__)

# Most bytes of one request message of a method its Servicer gives no bound:
# every request of ours without a list or a blob is well under 1 KiB.
DEFAULT_MAX_REQUEST = 16 * 1024
# Calls running at once; more are refused with RESOURCE_EXHAUSTED.
MAX_CONCURRENT_RPCS = 64
# Bytes one repeated string field costs on the wire besides its text (tag, length).
_FIELD_OVERHEAD = 4

_refused = logs.RateLimitedWarning(log, "grpc_request_refused")


def repeated_bytes(count: int, each: int) -> int:
    """The wire size of `count` strings of at most `each` bytes in one repeated field."""
    return count * (each + _FIELD_OVERHEAD) + DEFAULT_MAX_REQUEST


@dataclass(frozen=True)
class Servicer:
    """One gRPC service to host: its full name, the generated adder and the implementation.

    `max_request` maps a method's short name to the most bytes one request may
    have; methods it leaves out take `DEFAULT_MAX_REQUEST`.
    """

    name: str
    add: Callable[[Any, grpc.aio.Server], None]
    impl: object
    max_request: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class _Refused:
    """What the bounded deserializer hands the method instead of a request it refused."""

    code: grpc.StatusCode
    text: str


class _RequestBounds(grpc.aio.ServerInterceptor):
    """Refuses a unary request over its method's bound before parsing, and unparsable ones."""

    def __init__(self, limits: Mapping[str, int]) -> None:
        self._limits = limits  # full method name ("/pkg.Service/Method") -> bytes

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = await continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler  # health's Watch and reflection stream: the global bound holds
        method = handler_call_details.method
        limit = self._limits.get(method, DEFAULT_MAX_REQUEST)
        parse = handler.request_deserializer
        inner = handler.unary_unary

        def bounded(raw: bytes) -> object:
            if len(raw) > limit:
                return _Refused(
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    f"request is {len(raw)} bytes; this method takes at most {limit}",
                )
            try:
                return parse(raw) if parse is not None else raw
            except (DecodeError, ValueError):
                return _Refused(grpc.StatusCode.INVALID_ARGUMENT, "request is not a valid message")

        async def behavior(request: object, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            if isinstance(request, _Refused):
                await abort(context, request.code, request.text, method=method)
            return await inner(request, context)  # type: ignore[arg-type] # aio passes aio

        return grpc.unary_unary_rpc_method_handler(
            behavior, request_deserializer=bounded, response_serializer=handler.response_serializer
        )


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
    limits = {
        f"/{s.name}/{method}": size for s in servicers for method, size in s.max_request.items()
    }
    largest = max([DEFAULT_MAX_REQUEST, *limits.values()])
    metrics = GrpcServerMetrics(registry)
    server = grpc.aio.server(
        interceptors=[metrics, _RequestBounds(limits)],
        options=[
            ("grpc.so_reuseport", 0),
            ("grpc.max_receive_message_length", largest),
            # No bandwidth-delay probing: the flow-control window stays small, so what a
            # refused message has already sent is little (the probe grows it to megabytes).
            ("grpc.http2.bdp_probe", 0),
        ],
        maximum_concurrent_rpcs=MAX_CONCURRENT_RPCS,
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
    """Call metadata carrying a bearer token (publish or admin)."""
    return (("authorization", f"Bearer {token}"),)


def token_matches(context: grpc.aio.ServicerContext[Any, Any], expected: str) -> bool:
    """True when the call carries `authorization: Bearer <expected>` (constant-time compare)."""
    if not expected:
        return False
    for key, value in context.invocation_metadata() or ():
        if key == "authorization" and isinstance(value, str) and value.startswith("Bearer "):
            return hmac.compare_digest(value[len("Bearer ") :].encode(), expected.encode())
    return False


# Codes that say the caller got it wrong: logged as rate-limited warnings, no traceback.
_CALLERS_FAULT = {
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.UNAUTHENTICATED,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
}


async def abort(
    context: grpc.aio.ServicerContext[Any, Any],
    code: grpc.StatusCode,
    text: str,
    *,
    method: str = "",
) -> NoReturn:
    """Ends the call with `code`; a refusal that is the caller's fault is also one
    rate-limited warning line (`grpc_request_refused`)."""
    if code in _CALLERS_FAULT:
        _refused(method=method, code=code.name, detail=text[:200])
    await context.abort(code, text)
    raise AssertionError("unreachable: abort raises")


async def require_token(
    context: grpc.aio.ServicerContext[Any, Any], token: str, action: str, *, option: str
) -> None:
    """Aborts with UNAUTHENTICATED unless the call carries `token`; the one check of every
    state-changing RPC. `option` names the setting that configures the token, for the text
    a caller gets when the service has none (then the action is disabled)."""
    if not token:
        await abort(
            context,
            grpc.StatusCode.UNAUTHENTICATED,
            f"{action} is disabled: no {option} is configured",
        )
    if not token_matches(context, token):
        await abort(
            context, grpc.StatusCode.UNAUTHENTICATED, f"{action} needs a valid bearer token"
        )


def host_port(bind: str, port: int) -> str:
    """The address a client on this machine dials for a server bound to `bind`."""
    host = bind.rsplit(":", 1)[0]
    if host in {"", "0.0.0.0", "[::]"}:
        host = "127.0.0.1"
    return f"{host}:{port}"
