"""The real images on their own Docker network: tracker, seeder, edge and the
repository fixture as upstream mirror. A package fetched through the edge
container arrives intact, and the edge got its bytes from the swarm.

Needs the images `make images` builds (deploy/docker/build.sh) and dockerd;
`make test` builds them first. Without them this test fails and says how to
build them: a container test that quietly does not run proves nothing.
The containers run as Kubernetes runs them: read-only root file system,
/tmp a tmpfs, all capabilities dropped, no privilege escalation.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import socket
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from aptmesh import __version__
from aptmesh.debrepo import SWARM_MIN_SIZE, DebRepo
from tests.deploy.manifests import SERVICES

pytestmark = [pytest.mark.containers, pytest.mark.timeout(600)]

IMAGES = {service: f"aptmesh-{service}:{__version__}" for service in SERVICES}
TOKEN = "container-test-publish-token"
# The mirror: the fixture's repository served by aiohttp's static handler
# (Range, If-Modified-Since) from one of our images, inside the network.
# Without its precompressed-sibling feature: aiohttp would answer a request
# for `Packages` with `Packages.gz` as Content-Encoding: gzip, which Debian
# mirrors do not do.
MIRROR_SERVER = """
from aiohttp import web, web_fileresponse

web_fileresponse.ENCODING_EXTENSIONS = {}
app = web.Application()
app.router.add_static("/debian", "/srv/debian")
web.run_app(app, host="0.0.0.0", port=8080, print=None)
"""
HARDENED: dict[str, Any] = {
    "read_only": True,
    "cap_drop": ["ALL"],
    "security_opt": ["no-new-privileges"],
}


def _no_images(request: pytest.FixtureRequest, why: str) -> None:
    message = (
        f"container test cannot run: {why}. Build the images first: `make images` "
        "(deploy/docker/build.sh, as root); `make test` does it."
    )
    pytest.fail(message, pytrace=False)


@pytest.fixture(scope="module")
def docker_images(request: pytest.FixtureRequest) -> dict[str, str]:
    """The images; the test fails if they (or the engine holding them) are absent."""
    import docker  # type: ignore[import-untyped]
    import docker.errors  # type: ignore[import-untyped]

    missing: list[str] = []
    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    if host.startswith("unix://"):
        # docker-py leaks its socket when the engine is not there: look first.
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            try:
                probe.connect(host.removeprefix("unix://"))
            except OSError as exc:
                _no_images(request, f"no Docker engine at {host} ({exc}), so no images")
    try:
        # A fixed API version: "auto" would open a connection in the
        # constructor and leak it when no engine answers.
        client = docker.from_env(version="1.41")
    except docker.errors.DockerException as exc:
        _no_images(request, f"no Docker engine answers ({exc}), so no images")
    try:
        client.ping()
        for image in IMAGES.values():
            try:
                client.images.get(image)
            except docker.errors.ImageNotFound:
                missing.append(image)
    except docker.errors.DockerException as exc:
        client.close()
        _no_images(request, f"no Docker engine answers ({exc}), so no images")
    client.close()
    if missing:
        _no_images(request, f"images {', '.join(missing)} are absent")
    return IMAGES


def _shareable_copy(src: Path, dest: Path) -> Path:
    """A copy the containers' non-root user can read (pytest's tmp dirs are 0700)."""
    if src.is_dir():
        shutil.copytree(src, dest)
    else:
        shutil.copy2(src, dest)
    for path in [dest, *dest.rglob("*")] if dest.is_dir() else [dest]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    return dest


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="aptmesh-containers-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _poll(what: str, check: Callable[[], bool], timeout: float, logs: Callable[[], str]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.5)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}\n{logs()}")


def _get(url: str, timeout: float = 30) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - test URL
        body: bytes = response.read()
        return body


def _metric(url: str, name: str, labels: str = "") -> float:
    """Sum of the samples of `name` whose labels contain `labels` (0 if none or unreachable)."""
    try:
        text = _get(url, timeout=5).decode()
    except (OSError, urllib.error.URLError):
        return 0.0
    total = 0.0
    for line in text.splitlines():
        match = re.match(rf"^{name}(\{{[^}}]*\}})? (\S+)$", line)
        if match and labels in (match.group(1) or ""):
            total += float(match.group(2))
    return total


def test_a_package_travels_through_the_swarm_in_containers(
    docker_images: dict[str, str], debrepo_session: DebRepo, shared_dir: Path
) -> None:
    from testcontainers.core.config import testcontainers_config
    from testcontainers.core.container import DockerContainer
    from testcontainers.core.network import Network

    # Ryuk's image cannot be pulled here; the fixtures clean up themselves.
    os.environ.setdefault("TESTCONTAINERS_RYUK_DISABLED", "true")
    testcontainers_config.ryuk_disabled = True

    repo = _shareable_copy(debrepo_session.root, shared_dir / "debian")
    keyring = _shareable_copy(debrepo_session.keyring, shared_dir / "keyring.gpg")
    package = next(p for p in debrepo_session.packages if p.size >= SWARM_MIN_SIZE)
    mirror_url = "http://mirror:8080/debian"
    announce = "http://tracker:6969/announce"

    def service(name: str, alias: str, network: Network) -> DockerContainer:
        container = (
            DockerContainer(docker_images[name])
            .with_network(network)
            .with_network_aliases(alias)
            .with_tmpfs_mount("/tmp", "size=64m")
            .with_kwargs(**HARDENED)
        )
        return container

    with Network() as network:
        mirror = (
            DockerContainer(docker_images["edge"])
            .with_network(network)
            .with_network_aliases("mirror")
            .with_volume_mapping(str(repo), "/srv/debian", "ro")
            .with_tmpfs_mount("/tmp", "size=64m")
            .with_kwargs(entrypoint=["python3", "-c", MIRROR_SERVER], **HARDENED)
        )
        tracker = (
            service("tracker", "tracker", network)
            .with_env("APTMESH_TRACKER_PUBLISH_TOKEN", TOKEN)
            .with_env("APTMESH_TRACKER_LOG_LEVEL", "debug")
            .with_exposed_ports(6969)
        )
        seeder = (
            service("seeder", "seeder", network)
            .with_volume_mapping(str(keyring), "/keys/keyring.gpg", "ro")
            .with_envs(
                APTMESH_SEEDER_REPOSITORIES=(
                    f"test={mirror_url};suites={debrepo_session.suite};components=main;"
                    "architectures=amd64;webseed=off"
                ),
                APTMESH_SEEDER_KEYRING="/keys/keyring.gpg",
                APTMESH_SEEDER_POLL_INTERVAL="5",
                APTMESH_SEEDER_TRACKER_GRPC="tracker:50051",
                APTMESH_SEEDER_TRACKER_ANNOUNCE=announce,
                APTMESH_SEEDER_PUBLISH_TOKEN=TOKEN,
                APTMESH_SEEDER_LOG_LEVEL="debug",
            )
            .with_exposed_ports(9090)
        )
        edge = (
            service("edge", "edge", network)
            .with_volume_mapping(str(keyring), "/keys/keyring.gpg", "ro")
            .with_envs(
                APTMESH_EDGE_UPSTREAMS="http://mirror:8080",
                APTMESH_EDGE_KEYRING="/keys/keyring.gpg",
                APTMESH_EDGE_VERIFY_MODE="enforce",
                APTMESH_EDGE_TRACKER_GRPC="tracker:50051",
                APTMESH_EDGE_TRACKER_ANNOUNCE=announce,
                APTMESH_EDGE_PUBLISH_TOKEN=TOKEN,
                APTMESH_EDGE_PUBLIC_URL="http://edge:3142",
                APTMESH_EDGE_SWARM_TIMEOUT="60",
                APTMESH_EDGE_LOG_LEVEL="debug",
            )
            .with_exposed_ports(3142)
        )
        with mirror, tracker, seeder, edge:
            started = {"mirror": mirror, "tracker": tracker, "seeder": seeder, "edge": edge}

            def logs() -> str:
                parts = []
                for name, container in started.items():
                    out, err = container.get_logs()
                    tail = (out + err).decode(errors="replace").splitlines()[-40:]
                    parts.append(f"--- {name} ({container.status}) ---\n" + "\n".join(tail))
                return "\n".join(parts)

            def url(container: DockerContainer, port: int, path: str) -> str:
                host = container.get_container_host_ip()
                return f"http://{host}:{container.get_exposed_port(port)}{path}"

            def healthy(container: DockerContainer, port: int) -> Callable[[], bool]:
                def check() -> bool:
                    try:
                        _get(url(container, port, "/healthz"), timeout=3)
                    except (OSError, urllib.error.URLError):
                        return False
                    return True

                return check

            _poll("the tracker", healthy(tracker, 6969), 60, logs)
            _poll("the seeder", healthy(seeder, 9090), 60, logs)
            _poll("the edge", healthy(edge, 3142), 60, logs)
            seeder_metrics = url(seeder, 9090, "/metrics")
            _poll(
                "the seeder to sync and publish",
                lambda: _metric(seeder_metrics, "aptmesh_seeder_published_total") >= 1,
                180,
                logs,
            )
            edge_metrics = url(edge, 3142, "/metrics")
            before = _metric(edge_metrics, "aptmesh_edge_served_bytes_total", 'source="swarm"')
            # As apt does: the signed indexes first, so the edge knows the
            # package's SHA-256 (it never swarms a file it cannot verify).
            prefix = url(edge, 3142, "/mirror:8080/debian")

            def through_edge(path: str) -> bytes:
                try:
                    return _get(f"{prefix}/{path}", timeout=120)
                except urllib.error.HTTPError as exc:
                    pytest.fail(f"GET {path} through the edge: {exc} {exc.read()!r}\n{logs()}")

            for index in (debrepo_session.INRELEASE, debrepo_session.PACKAGES):
                assert through_edge(index) == debrepo_session.read(index)
            # Then the mirror goes away: the edge also uses the upstream as a
            # BEP 19 webseed, and on a fast network that webseed wins. With it
            # gone the package can only come from the seeder.
            mirror.get_wrapped_container().stop(timeout=1)
            body = through_edge(package.filename)
            assert len(body) == package.size
            assert hashlib.sha256(body).hexdigest() == package.sha256
            swarm = _metric(edge_metrics, "aptmesh_edge_served_bytes_total", 'source="swarm"')
            assert swarm - before >= package.size, (
                f"the edge served {swarm - before} bytes from the swarm, expected the whole "
                f"package ({package.size}); metrics:\n{_get(edge_metrics).decode()}\n{logs()}"
            )
            # The seeder's payload counters come from libtorrent's periodic
            # session statistics: poll rather than read once.
            _poll(
                "the seeder to report the upload",
                lambda: (
                    _metric(
                        seeder_metrics, "aptmesh_torrent_payload_bytes_total", 'direction="upload"'
                    )
                    >= package.size
                ),
                30,
                lambda: f"seeder metrics:\n{_get(seeder_metrics).decode()}\n{logs()}",
            )
