"""Real apt through the edge, in both of apt-cacher-ng's client modes, and promtool on /metrics."""

from __future__ import annotations

import asyncio
import hashlib
import shutil
import subprocess
from pathlib import Path

import aiohttp

from aptmesh.debrepo import DebRepo, apt_env
from aptmesh_edge.app import RunningEdge
from tests.edge.conftest import HOST, metric


async def _update_and_download(
    env_root: Path, edge: RunningEdge, debrepo: DebRepo, mode: str
) -> None:
    if mode == "proxy":
        env = apt_env(
            env_root,
            debrepo.sources_line(f"http://{HOST}/debian"),
            {"Acquire::http::Proxy": edge.http_url},
        )
    else:
        env = apt_env(env_root, debrepo.sources_line(f"{edge.http_url}/{HOST}/debian"))
    await asyncio.to_thread(env.run, "apt-get", "update")
    names = ["aptmesh-tiny", "aptmesh-large"]
    await asyncio.to_thread(env.run, "apt-get", "download", *names)
    for name in names:
        pkg = debrepo.package(name)
        (got,) = env.root.glob(f"{name}_*.deb")
        assert hashlib.sha256(got.read_bytes()).hexdigest() == pkg.sha256


async def test_apt_get_through_the_edge_in_both_modes(
    edge: RunningEdge, debrepo: DebRepo, tmp_path: Path
) -> None:
    await _update_and_download(tmp_path / "proxy", edge, debrepo, "proxy")
    await _update_and_download(tmp_path / "prefix", edge, debrepo, "prefix")
    for name in ("aptmesh-tiny", "aptmesh-large"):
        assert debrepo.server.requests(debrepo.package(name).filename) == 1
    assert metric(edge, "aptmesh_edge_requests_total", file_class="package", cache="hit") == 2
    # The second apt's update was answered from the frozen indexes.
    assert debrepo.server.requests(debrepo.INRELEASE) == 1


async def test_promtool_accepts_the_metrics(
    edge: RunningEdge, debrepo: DebRepo, tmp_path: Path
) -> None:
    async with aiohttp.ClientSession() as client:
        for path in (debrepo.INRELEASE, debrepo.package("aptmesh-tiny").filename):
            async with client.get(f"{edge.http_url}/{HOST}/debian/{path}") as resp:
                await resp.read()
        async with client.get(f"{edge.http_url}/metrics") as resp:
            text = await resp.read()
    for name in (
        b"aptmesh_edge_served_bytes_total",
        b"aptmesh_edge_requests_total",
        b"aptmesh_edge_upstream_fallbacks_total",
        b"aptmesh_verification_failures_total",
        b"aptmesh_torrent_payload_bytes_total",
        b"aptmesh_build_info",
    ):
        assert name in text
    promtool = shutil.which("promtool")
    assert promtool, "promtool missing: run `make sysdeps`"
    proc = await asyncio.to_thread(
        subprocess.run, [promtool, "check", "metrics"], input=text, capture_output=True
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
