"""Discovery and readiness (issue 14): Debian's `auto-apt-proxy` finds a local edge by its
406 status line; an enforcing edge without a readable keyring does not start, and
/readyz says when the keyring goes away later."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
from pathlib import Path

import aiohttp
import pytest

from aptmesh.debrepo import DebRepo
from aptmesh_edge.app import start
from aptmesh_edge.trust import KeyringError
from tests.edge.conftest import EdgeFactory, edge_config

APT_CACHER_NG_PORT = 3142  # what auto-apt-proxy probes, on 127.0.0.1 first


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


async def test_auto_apt_proxy_detects_a_local_edge(
    make_edge: EdgeFactory, tmp_path: Path, client: aiohttp.ClientSession
) -> None:
    tool = shutil.which("auto-apt-proxy")
    assert tool, "auto-apt-proxy missing: run `make sysdeps`"
    if not _port_free(APT_CACHER_NG_PORT):
        pytest.skip(f"127.0.0.1:{APT_CACHER_NG_PORT} is taken by another process")
    edge = await make_edge(http_port=APT_CACHER_NG_PORT)
    async with client.get(f"{edge.http_url}/") as resp:
        assert (resp.status, resp.reason) == (406, "Usage Information")
    env = {**os.environ, "TMPDIR": str(tmp_path), "AUTO_APT_PROXY_NO_CACHE": "1"}
    proc = await asyncio.to_thread(
        subprocess.run, [tool], capture_output=True, text=True, env=env, timeout=60
    )
    assert proc.stdout.strip() == f"http://127.0.0.1:{APT_CACHER_NG_PORT}", proc


@pytest.mark.parametrize("damage", ["missing", "empty"])
async def test_an_enforcing_edge_without_its_keyring_does_not_start(
    debrepo: DebRepo, tmp_path: Path, damage: str
) -> None:
    keyring = tmp_path / "keyring.gpg"
    if damage == "empty":
        keyring.touch()
    config = edge_config(debrepo, tmp_path / "cache", keyring=keyring)
    with pytest.raises(KeyringError, match=str(keyring)):
        await start(config)


async def test_readyz_says_when_the_keyring_goes_away(
    make_edge: EdgeFactory, debrepo: DebRepo, tmp_path: Path, client: aiohttp.ClientSession
) -> None:
    keyring = tmp_path / "keyring.gpg"
    shutil.copy(debrepo.keyring, keyring)
    edge = await make_edge(keyring=keyring)
    async with client.get(f"{edge.http_url}/readyz") as resp:
        assert resp.status == 200
    keyring.rename(tmp_path / "moved.gpg")
    async with client.get(f"{edge.http_url}/readyz") as resp:
        assert resp.status == 503
    (tmp_path / "moved.gpg").rename(keyring)
    async with client.get(f"{edge.http_url}/readyz") as resp:
        assert resp.status == 200
