"""A real `aptmesh edge` process: killed with SIGKILL mid-download, restarted on its cache."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from aptmesh.debrepo import DebRepo
from tests.edge.conftest import HOST, upstream_entry


class EdgeProcess:
    def __init__(self, repo: DebRepo, cache_dir: Path, log_path: Path) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("APTMESH_")}
        env.update(
            APTMESH_EDGE_HTTP_HOST="127.0.0.1",
            APTMESH_EDGE_HTTP_PORT="0",
            APTMESH_EDGE_CACHE_DIR=str(cache_dir),
            APTMESH_EDGE_UPSTREAMS=upstream_entry(repo),
            APTMESH_EDGE_KEYRING=str(repo.keyring),
            APTMESH_EDGE_UPSTREAM_TIMEOUT="5",
        )
        self._log = log_path.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "aptmesh_cli", "edge", "--grpc-bind", "127.0.0.1:0"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=self._log,
        )
        self.log_path = log_path
        self.url = self._wait_started()

    def _wait_started(self) -> str:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            for line in self.log_path.read_text().splitlines():
                event = json.loads(line) if line.startswith("{") else {}
                if event.get("event") == "edge_started":
                    return str(event["http"])
            if self.proc.poll() is not None:
                raise AssertionError(f"edge exited: {self.log_path.read_text()}")
            time.sleep(0.02)
        raise AssertionError(f"edge did not start: {self.log_path.read_text()}")

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)
        self._log.close()

    def terminate(self) -> int:
        self.proc.terminate()
        code = self.proc.wait(timeout=10)
        self._log.close()
        return code


@pytest.fixture
def processes() -> Iterator[list[EdgeProcess]]:
    started: list[EdgeProcess] = []
    yield started
    for edge in started:
        if edge.proc.poll() is None:
            edge.kill()


async def test_kill_mid_download_then_restart_serves_no_partial_file(
    debrepo: DebRepo, tmp_path: Path, processes: list[EdgeProcess]
) -> None:
    cache = tmp_path / "cache"
    edge = EdgeProcess(debrepo, cache, tmp_path / "edge1.log")
    processes.append(edge)
    pkg = debrepo.package("aptmesh-huge")
    url = f"{edge.url}/{HOST}/debian/{pkg.filename}"
    async with aiohttp.ClientSession() as client:
        for path in (debrepo.INRELEASE, debrepo.PACKAGES + ".xz"):
            async with client.get(f"{edge.url}/{HOST}/debian/{path}") as resp:
                assert resp.status == 200
        debrepo.server.rate_limit = 1024 * 1024  # three seconds for the whole file
        async with client.get(url) as resp:
            assert resp.status == 200
            await resp.content.readexactly(256 * 1024)
            partial = list((cache / "tmp").iterdir())
            assert len(partial) == 1 and 0 < partial[0].stat().st_size < pkg.size
            edge.kill()
            with pytest.raises(aiohttp.ClientPayloadError):
                await resp.read()

    # Restarted with the upstream down: the cut-short file must not come back as whole.
    debrepo.server.stop()
    edge = EdgeProcess(debrepo, cache, tmp_path / "edge2.log")
    processes.append(edge)
    assert not list((cache / "tmp").iterdir())
    async with aiohttp.ClientSession() as client:
        async with client.get(f"{edge.url}/{HOST}/debian/{pkg.filename}") as resp:
            assert resp.status == 502
        # Indexes survived the kill and are still served.
        async with client.get(f"{edge.url}/{HOST}/debian/{debrepo.INRELEASE}") as resp:
            assert resp.status == 200 and await resp.read() == debrepo.read(debrepo.INRELEASE)
        # Upstream back: the file arrives whole, is cached, and survives a clean restart.
        debrepo.server.rate_limit = None
        debrepo.server.start()
        async with client.get(f"{edge.url}/{HOST}/debian/{pkg.filename}") as resp:
            body = await resp.read()
            assert resp.status == 200 and hashlib.sha256(body).hexdigest() == pkg.sha256
    assert edge.terminate() == 0
    debrepo.server.stop()
    edge = EdgeProcess(debrepo, cache, tmp_path / "edge3.log")
    processes.append(edge)
    async with (
        aiohttp.ClientSession() as client,
        client.get(f"{edge.url}/{HOST}/debian/{pkg.filename}") as resp,
    ):
        body = await resp.read()
        assert resp.status == 200 and hashlib.sha256(body).hexdigest() == pkg.sha256
    assert edge.terminate() == 0
