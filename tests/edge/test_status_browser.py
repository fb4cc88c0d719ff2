"""A real headless browser (Debian's chromium) reads the status page of an edge after real apt
traffic through it: the figures it shows are the edge's /metrics, and two screenshots (a phone's
width, a desktop's) are kept as test artifacts."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
from pathlib import Path

import aiohttp
import pytest

from aptmesh.debrepo import DebRepo, apt_env
from aptmesh_edge.app import RunningEdge
from aptmesh_edge.decisions import Outcome, SourceKind
from tests.edge.conftest import HOST, scrape

BROWSER_TIMEOUT = 60.0  # seconds one chromium run may take
PHONE = (390, 844)
DESKTOP = (1280, 900)


async def chromium(tmp_path: Path, url: str, *args: str) -> str:
    """One headless chromium run (bounded in time, its process group killed afterwards);
    its standard output."""
    tool = shutil.which("chromium")
    assert tool, "chromium missing: run `make sysdeps`"
    profile = tmp_path / "chromium-profile"
    profile.mkdir(exist_ok=True)
    proc = await asyncio.create_subprocess_exec(
        tool,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={profile}",
        *args,
        url,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "HOME": str(tmp_path)},
        start_new_session=True,  # its own process group: its helpers are killed with it
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), BROWSER_TIMEOUT)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        await proc.wait()
    assert proc.returncode == 0, err.decode(errors="replace")[-2000:]
    return out.decode()


def shown_bytes(dom: str, name: str) -> int:
    found = re.search(rf'<data id="{re.escape(name)}" value="(\d+)">', dom)
    assert found, f"{name} not on the page"
    return int(found.group(1))


def shown_text(dom: str, name: str) -> str:
    found = re.search(rf'id="{re.escape(name)}"[^>]*>([^<]*)<', dom)
    assert found, f"{name} not on the page"
    return found.group(1)


async def test_a_browser_shows_the_edges_figures_after_apt(
    edge: RunningEdge, debrepo: DebRepo, tmp_path: Path
) -> None:
    env = apt_env(tmp_path / "apt", debrepo.sources_line(f"{edge.http_url}/{HOST}/debian"))
    await asyncio.to_thread(env.run, "apt-get", "update")
    names = ["aptmesh-tiny", "aptmesh-large"]
    await asyncio.to_thread(env.run, "apt-get", "download", *names)
    # Again from another apt: cache hits this time.
    env2 = apt_env(tmp_path / "apt2", debrepo.sources_line(f"{edge.http_url}/{HOST}/debian"))
    await asyncio.to_thread(env2.run, "apt-get", "update")
    await asyncio.to_thread(env2.run, "apt-get", "download", *names)

    # The browser asks for text/html at /: the status page, not the 406 usage page.
    dom = await chromium(tmp_path, f"{edge.http_url}/", "--dump-dom")
    async with aiohttp.ClientSession() as client:
        metrics = await scrape(client, edge)
    (tmp_path / "status.html").write_text(dom)

    def value(name: str, **labels: str) -> float:
        return metrics.get((name, ",".join(f"{k}={v}" for k, v in sorted(labels.items()))), 0.0)

    assert shown_text(dom, "edge-id") == edge.edge_id() and "Usage Information" not in dom
    served = 0
    for kind in SourceKind:
        want = int(value("aptmesh_edge_served_bytes_total", source=kind.value))
        assert shown_bytes(dom, f"served-total-{kind.value}") == want, kind
        # A fresh edge: all of it within the last hour and day.
        assert shown_bytes(dom, f"served-hour-{kind.value}") == want, kind
        assert shown_bytes(dom, f"served-day-{kind.value}") == want, kind
        served += want
    assert value("aptmesh_edge_served_bytes_total", source="cache") > 0
    assert value("aptmesh_edge_served_bytes_total", source="upstream") > 0
    saved = served - int(value("aptmesh_edge_served_bytes_total", source="upstream"))
    assert shown_bytes(dom, "saved-day") == saved
    assert shown_bytes(dom, "cache-size") == int(value("aptmesh_edge_cache_size_bytes"))
    assert shown_bytes(dom, "cache-limit") == int(value("aptmesh_edge_cache_limit_bytes"))
    assert int(shown_text(dom, "cache-entries")) == int(value("aptmesh_edge_cache_entries"))
    requests = {o: 0 for o in Outcome}
    for (name, labels), sample in metrics.items():
        if name == "aptmesh_edge_requests_total":
            requests[Outcome(dict(p.split("=", 1) for p in labels.split(","))["cache"])] += int(
                sample
            )
    for outcome, count in requests.items():
        assert int(shown_text(dom, f"requests-{outcome.value}")) == count, outcome
    total = sum(requests.values())
    assert requests[Outcome.HIT] >= 2
    assert shown_text(dom, "hit-ratio") == f"{requests[Outcome.HIT] / total:.0%}"
    # This edge has no swarm: each package fetch fell back to the upstream by design.
    fallbacks = int(value("aptmesh_edge_upstream_fallbacks_total", reason="swarm_disabled"))
    assert fallbacks == 2
    assert int(shown_text(dom, "fallbacks-hour-swarm_disabled")) == fallbacks
    for name in names:
        assert debrepo.package(name).filename in dom
    assert "stable" in dom and 'id="generations"' in dom
    assert f'Acquire::http::Proxy "{edge.public_url()}/";' in dom
    assert f"deb {edge.public_url()}/{HOST}/debian" in dom
    assert "deb mesh+http://" in dom
    # The clients (apt) were on 127.0.0.1 too: only the edge's own address may show.
    assert "127.0.0.1" not in dom.replace(edge.public_url(), "").replace(edge.edge_id(), "")

    shots = []
    for label, (width, height) in (("phone", PHONE), ("desktop", DESKTOP)):
        shot = tmp_path / f"status-{label}.png"
        await chromium(
            tmp_path, f"{edge.http_url}/", f"--screenshot={shot}", f"--window-size={width},{height}"
        )
        data = shot.read_bytes()
        assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 5000, label
        # PNG IHDR: the width and height the window had.
        assert int.from_bytes(data[16:20], "big") == width, label
        shots.append(shot)
    print("status page screenshots:", *shots)


@pytest.mark.parametrize("accept", ["*/*", ""])
async def test_probes_still_get_406_at_the_root(
    edge: RunningEdge, accept: str, client: aiohttp.ClientSession
) -> None:
    async with client.get(f"{edge.http_url}/", headers={"Accept": accept}) as resp:
        assert (resp.status, resp.reason) == (406, "Usage Information")
