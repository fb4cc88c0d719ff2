"""Fixtures for the end-to-end tests: `aptmesh up` as a process, real apt, the repository fixture.

The processes, waiting, metrics and apt helpers live in tests/fixtures/mesh.py
(the drills use them too). Addresses: the mirror (the repository fixture)
listens on 127.0.0.1, the mesh of `aptmesh up` on 127.0.0.2, further edges on
127.0.0.3 and up.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from aptmesh.debrepo import DebRepo
from tests.fixtures.mesh import APTMESH, Metrics, Proc, scrape, spawn, wait_for

MESH_HOST = "127.0.0.2"

# --- the mesh ----------------------------------------------------------------------------------


def read_endpoints(data_dir: Path) -> dict[str, Any] | None:
    """`DIR/endpoints.json` once `aptmesh up` has written it (it writes atomically)."""
    try:
        document: dict[str, Any] = json.loads((data_dir / "endpoints.json").read_text())
    except FileNotFoundError:
        return None
    return document


@dataclass
class Mesh:
    """A running `aptmesh up` process and what it wrote to endpoints.json."""

    proc: Proc
    data_dir: Path
    endpoints: dict[str, Any]
    repo: DebRepo

    @property
    def edge_http(self) -> str:
        url: str = self.endpoints["edge_http"]
        return url

    def metrics(self, service: str) -> Metrics:
        return scrape(self.endpoints["metrics"][service])


def up_argv(repo: DebRepo, data_dir: Path, *extra: str) -> list[str]:
    return [
        APTMESH,
        "up",
        "--data-dir",
        str(data_dir),
        "--upstream",
        repo.base_url,
        "--keyring",
        str(repo.keyring),
        "--host",
        MESH_HOST,
        "--log-level",
        "info",
        "--log-format",
        "json",
        *extra,
    ]


def wait_up(proc: Proc, data_dir: Path, repo: DebRepo) -> Mesh:
    """Waits for endpoints.json, then for the seeder to have published every swarmed package."""
    endpoints = wait_for(
        lambda: (e := read_endpoints(data_dir)) and e.get("pid") == proc.pid and e,
        "endpoints.json",
        procs=[proc],
    )
    mesh = Mesh(proc, data_dir, endpoints, repo)
    swarmed = sum(1 for p in repo.packages if p.swarmed)
    wait_for(
        lambda: mesh.metrics("seeder").value("aptmesh_seeder_published_total") >= swarmed,
        f"the seeder to publish {swarmed} torrents",
        procs=[proc],
    )
    return mesh


@contextlib.contextmanager
def mesh_up(repo: DebRepo, data_dir: Path, logdir: Path, name: str = "up") -> Iterator[Mesh]:
    """`aptmesh up` for the block; SIGTERM at its end, SIGKILL (whole group) if that fails."""
    proc = spawn(name, up_argv(repo, data_dir), logdir)
    try:
        yield wait_up(proc, data_dir, repo)
    finally:
        if proc.popen.poll() is None:
            with contextlib.suppress(AssertionError):
                proc.terminate()
        proc.kill()


@pytest.fixture(scope="module")
def e2e_repo(
    debrepo_session: DebRepo, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[DebRepo]:
    """The pristine repository served on its own port, with counters private to the module."""
    repo = debrepo_session.copy(tmp_path_factory.mktemp("e2e-repo") / "debian", mutable=False)
    try:
        repo.server.start()
        yield repo
    finally:
        repo.close()


@pytest.fixture(scope="module")
def mesh(e2e_repo: DebRepo, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    """One `aptmesh up` process shared by the module's tests (they do not conflict)."""
    root = tmp_path_factory.mktemp("e2e-mesh")
    with mesh_up(e2e_repo, root / "data", root / "logs") as running_mesh:
        yield running_mesh
