"""The Debian packages installed for real, in a container from the project's base image
(aptmesh-base:local, a debootstrap minbase bookworm: `deploy/docker/build.sh base`, which
`make images` runs): debconf answers preseeded with debconf-set-selections, both answers;
dpkg-reconfigure changes the choice and keeps an administrator's other lines; remove leaves
nothing running, purge leaves nothing behind (files, user, debconf answers).

The base image has no systemd (and no network here), so the unit is not started: the unit is
checked by systemd-analyze in test_deb.py, and the maintainer scripts take their no-systemd
paths, as in a chroot. lintian runs there too (it reads the .deb; where it runs adds nothing).
"""

from __future__ import annotations

import io
import os
import socket
import tarfile
from collections.abc import Iterator
from typing import Any

import pytest

from tests.packaging.debs import Debs, build_debs

pytestmark = [pytest.mark.containers, pytest.mark.timeout(900)]

BASE_IMAGE = "aptmesh-base:local"
YES = """\
aptmesh-peer aptmesh-peer/contribute boolean true
aptmesh-peer aptmesh-peer/profile select home
aptmesh-peer aptmesh-peer/upload-rate string 1MiB
aptmesh-peer aptmesh-peer/daily-budget string 500MiB
aptmesh-peer aptmesh-peer/upload-windows string 22:00-07:00
"""
NO = "aptmesh-peer aptmesh-peer/contribute boolean false\n"


def _fail(why: str) -> None:
    pytest.fail(
        f"package container test cannot run: {why}. Build the base image first: "
        "`deploy/docker/build.sh base` (as root; `make images` does it).",
        pytrace=False,
    )


@pytest.fixture(scope="module")
def docker_client() -> Iterator[Any]:
    import docker  # type: ignore[import-untyped]
    import docker.errors  # type: ignore[import-untyped]

    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    if host.startswith("unix://"):
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            try:
                probe.connect(host.removeprefix("unix://"))
            except OSError as exc:
                _fail(f"no Docker engine at {host} ({exc})")
    client = docker.from_env(version="1.41")
    try:
        client.images.get(BASE_IMAGE)
    except docker.errors.ImageNotFound:
        client.close()
        _fail(f"the image {BASE_IMAGE} is absent")
    yield client
    client.close()


@pytest.fixture(scope="module")
def debs(tmp_path_factory: pytest.TempPathFactory) -> Debs:
    return build_debs(tmp_path_factory.mktemp("deb"))


class Box:
    """A throw-away container of the base image, with the .debs in /debs."""

    def __init__(self, container: Any) -> None:
        self.container = container

    def sh(self, script: str, *, ok: bool = True) -> str:
        code, output = self.container.exec_run(["sh", "-c", script], demux=False)
        text: str = output.decode(errors="replace")
        if ok:
            assert code == 0, f"`{script}` exited {code}:\n{text}"
        return text

    def status(self, script: str) -> int:
        code, _ = self.container.exec_run(["sh", "-c", script])
        return int(code)

    def env_file(self) -> dict[str, str]:
        lines = self.sh("cat /etc/aptmesh/peer.env").splitlines()
        return dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))

    def install(self, selections: str) -> str:
        self.sh(f"printf '%s' '{selections}' | debconf-set-selections")
        return self.sh(
            "DEBIAN_FRONTEND=noninteractive dpkg -i /debs/aptmesh-apt-method.deb "
            "/debs/aptmesh-peer.deb 2>&1"
        )


@pytest.fixture
def box(docker_client: Any, debs: Debs) -> Iterator[Box]:
    container = docker_client.containers.run(
        BASE_IMAGE, ["sleep", "infinity"], detach=True, network_mode="none", init=True
    )
    try:
        archive = io.BytesIO()
        with tarfile.open(fileobj=archive, mode="w") as tar:
            tar.add(debs.method, arcname="debs/aptmesh-apt-method.deb")
            tar.add(debs.peer, arcname="debs/aptmesh-peer.deb")
        container.put_archive("/", archive.getvalue())
        yield Box(container)
    finally:
        container.remove(force=True)


def test_saying_no_writes_opted_out_and_the_peer_reads_it(box: Box) -> None:
    box.install(NO)
    env = box.env_file()
    assert env["APTMESH_PEER_PARTICIPATION"] == "opted-out"
    assert box.status("getent passwd _aptmesh") == 0
    shown = box.sh("set -a; . /etc/aptmesh/peer.env; aptmesh peer --print-config")
    assert "APTMESH_PEER_PARTICIPATION=opted-out\n" in shown
    # Bytecode was compiled at install; the method came along.
    assert (
        box.status("ls -d /usr/lib/aptmesh-peer/lib/python3*/site-packages/aptmesh/__pycache__")
        == 0
    )
    assert box.status("test -L /usr/lib/apt/methods/mesh+http") == 0
    # apt asks the peer's detector for a proxy; with no peer running it says DIRECT.
    assert "apt-proxy-detect" in box.sh("apt-config dump Acquire::http::Proxy-Auto-Detect")
    assert box.sh("/usr/lib/aptmesh-peer/apt-proxy-detect http://deb.example.org/") == "DIRECT\n"


def test_saying_yes_writes_the_limits_the_peer_reads(box: Box) -> None:
    box.install(YES)
    env = box.env_file()
    assert env["APTMESH_PEER_PARTICIPATION"] == "contribute"
    assert env["APTMESH_PEER_UPLOAD_RATE_LIMIT"] == "1MiB"
    assert env["APTMESH_PEER_UPLOAD_WINDOWS"] == "22:00-07:00"
    shown = box.sh("set -a; . /etc/aptmesh/peer.env; aptmesh peer --print-config")
    assert "APTMESH_PEER_UPLOAD_RATE_LIMIT=1048576\n" in shown
    assert f"APTMESH_PEER_DAILY_UPLOAD_BUDGET={500 * 1024**2}\n" in shown


def test_dpkg_reconfigure_changes_the_choice_and_keeps_other_lines(box: Box) -> None:
    box.install(NO)
    box.sh("echo APTMESH_PEER_LOG_LEVEL=debug >> /etc/aptmesh/peer.env")
    # The teletype front end reads the answers from stdin, one line per question shown
    # (dpkg-reconfigure shows every priority): contribute, profile, upload rate, share
    # ratio, seed hours, windows, daily and monthly budgets, port mapping.
    answers = "yes\\nhome\\n2MiB\\n\\n\\n\\n\\n\\nno\\n"
    box.sh(f"printf '{answers}' | DEBIAN_FRONTEND=teletype dpkg-reconfigure aptmesh-peer")
    env = box.env_file()
    assert env["APTMESH_PEER_PARTICIPATION"] == "contribute"
    assert env["APTMESH_PEER_UPLOAD_RATE_LIMIT"] == "2MiB"
    assert env["APTMESH_PEER_LOG_LEVEL"] == "debug"
    # And back: the file, not a stale answer, is where the next run starts.
    box.sh("printf 'no\\nno\\n' | DEBIAN_FRONTEND=teletype dpkg-reconfigure aptmesh-peer")
    assert box.env_file()["APTMESH_PEER_PARTICIPATION"] == "opted-out"


def test_remove_leaves_nothing_running_and_purge_leaves_nothing_behind(box: Box) -> None:
    box.install(YES)
    removed = box.sh("dpkg -r aptmesh-peer 2>&1")
    assert "not empty" not in removed, removed
    assert box.status("test -e /usr/lib/aptmesh-peer") != 0
    assert box.status("test -e /usr/bin/aptmesh") != 0
    running = box.sh("cat /proc/[0-9]*/cmdline 2>/dev/null | tr '\\0' ' '")
    assert "aptmesh" not in running
    assert box.status("test -f /etc/aptmesh/peer.env") == 0  # configuration kept until purge
    box.sh("dpkg -P aptmesh-peer 2>&1")
    for path in (
        "/etc/aptmesh",
        "/var/lib/aptmesh",
        "/var/cache/aptmesh",
        "/etc/apt/apt.conf.d/50aptmesh-peer",
    ):
        assert box.status(f"test -e {path}") != 0, f"{path} left behind"
    assert box.status("getent passwd _aptmesh") != 0
    assert box.status("getent group _aptmesh") != 0
    assert box.sh("debconf-show aptmesh-peer 2>/dev/null") == ""
    status = box.sh("dpkg-query -W -f='${Status}' aptmesh-peer 2>&1", ok=False)
    assert "no packages found" in status or "not-installed" in status, status
