"""Edge fixtures: an edge in this process, in front of the `debrepo` fixture's repository."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from aptmesh.debrepo import DebRepo
from aptmesh_edge.app import RunningEdge, start
from aptmesh_edge.config import EdgeConfig

HOST = "deb.example.org"


def upstream_entry(repo: DebRepo) -> str:
    """`deb.example.org` remapped to the fixture's server (its archive is under /debian)."""
    return f"{HOST}=http://127.0.0.1:{repo.server.port}"


def edge_config(repo: DebRepo, cache_dir: Path, **changes: Any) -> EdgeConfig:
    config = EdgeConfig(
        http_host="127.0.0.1",
        http_port=0,
        grpc_bind="127.0.0.1:0",
        cache_dir=cache_dir,
        upstreams=(upstream_entry(repo),),
        keyring=repo.keyring,
        verify_mode="enforce",
        upstream_timeout=5.0,
        listen_port=0,
        log_format="console",
    )
    return replace(config, **changes)


EdgeFactory = Callable[..., Awaitable[RunningEdge]]


@pytest.fixture
async def make_edge(debrepo: DebRepo, tmp_path: Path) -> AsyncIterator[EdgeFactory]:
    edges: list[RunningEdge] = []

    async def factory(**changes: Any) -> RunningEdge:
        cache_dir = changes.pop("cache_dir", tmp_path / f"edge{len(edges)}")
        edge = await start(edge_config(debrepo, cache_dir, **changes))
        edges.append(edge)
        return edge

    yield factory
    for edge in edges:
        if edge.swarm_side is not None:
            # Closing a session sends "stopped" announces while blocking the loop that the
            # in-process tracker runs on: do not wait for their answers.
            edge.swarm_side.swarm.apply(stop_tracker_timeout=0)
        await edge.stop()


@pytest.fixture
async def edge(make_edge: EdgeFactory) -> RunningEdge:
    return await make_edge()


@pytest.fixture
async def client() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(auto_decompress=False) as session:
        yield session


def prefix_url(edge: RunningEdge, path: str) -> str:
    """Path-prefix form: http://EDGE/deb.example.org/debian/<path>."""
    return f"{edge.http_url}/{HOST}/debian/{path}"


async def get(
    client: aiohttp.ClientSession, url: str, **kwargs: Any
) -> tuple[int, bytes, dict[str, str]]:
    async with client.get(url, **kwargs) as resp:
        body = await resp.read()
        return resp.status, body, dict(resp.headers)


async def fetch_indexes(client: aiohttp.ClientSession, edge: RunningEdge, repo: DebRepo) -> None:
    """What `apt-get update` does first: InRelease, then Packages (by-hash, as apt would)."""
    for path in (repo.INRELEASE, repo.PACKAGES + ".xz"):
        status, body, _ = await get(client, prefix_url(edge, path))
        assert status == 200, body
        assert body == repo.read(path)


def metric(edge: RunningEdge, name: str, **labels: str) -> float:
    """The current value of one sample of the edge's registry (0 if absent)."""
    value = edge.metrics.registry.get_sample_value(name, labels)
    return value or 0.0


async def scrape(client: aiohttp.ClientSession, edge: RunningEdge) -> dict[tuple[str, str], float]:
    """The /metrics page, parsed: (sample name, sorted labels) -> value."""
    async with client.get(f"{edge.http_url}/metrics") as resp:
        text = await resp.text()
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items())))] = (
                sample.value
            )
    return out


Serve = Callable[[Callable[[web.Request], Awaitable[web.StreamResponse]]], Awaitable[str]]


@pytest.fixture
async def fake_edge() -> AsyncIterator[Serve]:
    """Runs a handler for every path on loopback (a fake edge or upstream); returns its URL."""
    runners: list[web.AppRunner] = []

    async def start(handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> str:
        app = web.Application()
        app.router.add_get("/{path:.*}", handler)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        runners.append(runner)
        return f"http://127.0.0.1:{runner.addresses[0][1]}"

    yield start
    for runner in runners:
        await runner.cleanup()
