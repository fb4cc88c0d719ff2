"""Real apt through a whole mesh: `aptmesh up` (and a second `aptmesh edge`) as processes.

The module shares one `aptmesh up` (tracker, seeder and edge on 127.0.0.2)
over a private copy of the repository fixture (the mirror, 127.0.0.1), so its
request counters belong to this module alone. The tests only add to the shared
mesh's state (cached files, counters) and assert on differences or on what holds
whatever ran before, so any of them can run alone. Tests that need more (a second
edge, a throttled upstream, their own `aptmesh up`) start it themselves.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
from pathlib import Path

import pytest

from aptmesh.debrepo import DebRepo
from aptmesh.testing import free_port
from aptmesh_edge.decisions import FallbackReason
from tests.e2e.conftest import MESH_HOST, Mesh, up_argv, wait_up
from tests.fixtures.mesh import (
    APTMESH,
    DEADLINE,
    assert_clean_terminal,
    assert_downloaded,
    child_env,
    edge_process,
    http_get,
    mesh_apt,
    pool_requests,
    proxy_apt,
    served,
    spawn,
    swarmed,
    try_get_json,
    wait_for,
)

# One worker runs the whole module (`make test` uses --dist loadgroup): one mesh, file order.
pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group(name="e2e-mesh")]

NAMES = ("aptmesh-huge", "aptmesh-large", "aptmesh-medium", "aptmesh-tiny")
SWARM_FALLBACK_REASONS = tuple(r.value for r in FallbackReason.swarm_failures())


def get_lines(stdout: str) -> list[str]:
    return [line for line in stdout.splitlines() if line.startswith("Get:")]


def test_update_and_download_through_mesh_http(mesh: Mesh, tmp_path: Path) -> None:
    repo = mesh.repo
    env = mesh_apt(tmp_path, repo, mesh.edge_http)

    before = pool_requests(repo)
    update = env.run("apt-get", "update")
    assert_clean_terminal(update)
    # The method fetched from the edge itself (apt shows the mesh+http URI; a redirect to
    # the mirror would show the mirror's); apt checked InRelease's signature (signed-by)
    # and the Packages hash, else update would have failed.
    via_method = f"mesh+http://{repo.host}/debian "
    assert get_lines(update.stdout)
    assert all(line.split(" ", 1)[1].startswith(via_method) for line in get_lines(update.stdout))

    download = env.run("apt-get", "download", *NAMES)
    assert_clean_terminal(download)
    assert len(get_lines(download.stdout)) == len(NAMES)
    assert all(line.split(" ", 1)[1].startswith(via_method) for line in get_lines(download.stdout))
    large_paths = {p.filename for p in swarmed(repo)}
    after = pool_requests(repo)
    assert all(after[path] == before[path] for path in large_paths)  # the swarm, not apt
    assert_downloaded(env, repo, NAMES)  # apt checked each against Packages; so do we

    large = swarmed(repo)
    assert [p.name for p in large] == ["aptmesh-huge", "aptmesh-large"]
    edge = mesh.metrics("edge")
    assert served(edge, "swarm") >= sum(p.size for p in large)
    for reason in SWARM_FALLBACK_REASONS:
        assert edge.value("aptmesh_edge_upstream_fallbacks_total", reason=reason) == 0, reason
    # The seeder fetched each large file from the mirror once.
    seeder = mesh.metrics("seeder")
    assert seeder.value("aptmesh_seeder_upstream_bytes_total", kind="package") == sum(
        p.size for p in large
    )


def test_the_mirror_sends_each_large_file_once(mesh: Mesh) -> None:
    """The seeder fetched each large file from the mirror; the edge must get it from the seeder.

    Self-contained: it asks the edge for the large files (no-ops if an earlier
    test already did), then reads the mirror's and the seeder's counters.
    """
    repo = mesh.repo
    large = swarmed(repo)
    for path in (repo.INRELEASE, repo.PACKAGES, *(p.filename for p in large)):
        status, _ = http_get(f"{mesh.edge_http}/{repo.host}/debian/{path}")
        assert status == 200, path
    for pkg in large:
        assert repo.server.requests(pkg.filename) == 1, pkg.name
        assert repo.server.bytes_served(pkg.filename) <= pkg.size, pkg.name
    wait_for(
        lambda: (
            mesh.metrics("seeder").value("aptmesh_torrent_payload_bytes_total", direction="upload")
            >= sum(p.size for p in large)
        ),
        "the seeder's upload counter (updated every few seconds) to show the large files",
        timeout=10.0,
    )


def test_plain_proxy_and_a_second_client_from_cache(mesh: Mesh, tmp_path: Path) -> None:
    repo = mesh.repo
    large = swarmed(repo)

    before = pool_requests(repo)
    first = proxy_apt(tmp_path / "first", repo, mesh.edge_http)
    assert_clean_terminal(first.run("apt-get", "update"))
    assert_clean_terminal(first.run("apt-get", "download", *NAMES))
    assert_downloaded(first, repo, NAMES)
    # The large files came through the mesh (swarm or cache), never from the mirror.
    for pkg in large:
        assert repo.server.requests(pkg.filename) == before[pkg.filename], pkg.name

    at = pool_requests(repo)
    cache_before = served(mesh.metrics("edge"), "cache")
    second = proxy_apt(tmp_path / "second", repo, mesh.edge_http)
    assert_clean_terminal(second.run("apt-get", "update"))
    download = second.run("apt-get", "download", *NAMES)
    assert_clean_terminal(download)
    assert len(get_lines(download.stdout)) == len(NAMES)
    assert_downloaded(second, repo, NAMES)

    assert pool_requests(repo) == at  # not one package file asked of the mirror
    cache_delta = served(mesh.metrics("edge"), "cache") - cache_before
    assert cache_delta >= sum(repo.package(name).size for name in NAMES)


def listed_urls(edge_url: str) -> set[str]:
    document = try_get_json(f"{edge_url}/_aptmesh/edges")
    return {e["url"] for e in document["edges"]} if document else set()


def test_nearest_edge_killed_mid_download(mesh: Mesh, debrepo: DebRepo, tmp_path: Path) -> None:
    """A second edge, nearest by zone, is SIGKILLed while it streams a large package to apt.

    The second edge joins the mesh's tracker to read the edge registry (reading
    needs no token) but does not register: the method is configured with this
    edge alone and learns the mesh's edge from its /_aptmesh/edges listing. Its
    backend for the mirror's host is `debrepo`, the same archive on another
    port, throttled here so that the transfer is caught in flight; its
    `--swarm-min-size` sends even large files to that backend.
    """
    repo, ep = mesh.repo, mesh.endpoints
    backend = debrepo.base_url.removesuffix("/debian")
    swarm = ("--tracker-grpc", ep["tracker_grpc"], "--tracker-announce", ep["tracker_announce"])
    with edge_process(
        "edge2",
        "127.0.0.3",
        tmp_path,
        f"{repo.host}={backend}",
        debrepo.keyring,
        *swarm,
        *("--zone", "near", "--swarm-min-size", "1GiB"),
    ) as (edge2, near):
        wait_for(
            lambda: {near, mesh.edge_http} <= listed_urls(near),
            "edge2 to list the mesh's edge",
            procs=[edge2],
        )
        env = mesh_apt(tmp_path / "apt", repo, near, Zone="near")

        update = env.run("apt-get", "update")
        assert_clean_terminal(update)
        via_method = f"mesh+http://{repo.host}/debian "
        assert all(
            line.split(" ", 1)[1].startswith(via_method) for line in get_lines(update.stdout)
        )

        large = {p.filename: p for p in swarmed(repo)}
        debrepo.server.rate_limit = 512 * 1024
        apt = subprocess.Popen(
            ["apt-get", *env.options, "download", *NAMES],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env.env,
            cwd=env.root,
            start_new_session=True,
        )
        try:
            wait_for(
                lambda: (
                    apt.poll() is not None
                    or any(r.path in large and r.bytes_sent for r in debrepo.server.log)
                ),
                "edge2 to be fetching a large package for apt",
                procs=[edge2],
            )
            assert apt.poll() is None, "apt finished before edge2 was killed"
            edge2.kill()
            stdout, stderr = apt.communicate(timeout=DEADLINE)
        finally:
            debrepo.server.rate_limit = None
            if apt.poll() is None:
                os.killpg(apt.pid, signal.SIGKILL)
                apt.communicate()
        assert edge2.popen.returncode == -signal.SIGKILL

    assert apt.returncode == 0, stdout + stderr
    assert stderr == ""
    assert_downloaded(env, repo, NAMES)
    # edge2 was cut in the middle of a large file...
    # (the method's workers may have been fetching both large files from it at once)
    interrupted = [r for r in debrepo.server.log if r.path in large]
    assert interrupted and all(r.bytes_sent < large[r.path].size for r in interrupted)
    assert any(r.bytes_sent > 0 for r in interrupted)
    # ... the method took that package and every later one from the next edge, the mesh's:
    # apt saw nothing of it (no Ign:, every package fetched once, through the method).
    assert not [line for line in stdout.splitlines() if line.startswith(("Ign:", "Err:"))]
    fetched = [line for line in get_lines(stdout) if line.split(" ", 1)[1].startswith(via_method)]
    assert len(fetched) == len(get_lines(stdout)) == len(NAMES), stdout


def test_every_edge_dead_apt_uses_the_mirror_quietly(mesh: Mesh, tmp_path: Path) -> None:
    """Every configured edge refuses connections: the method sends apt straight to the mirror."""
    repo = mesh.repo
    dead = [f"http://127.0.0.{n}:{free_port(f'127.0.0.{n}')}" for n in (4, 5)]
    env = mesh_apt(tmp_path, repo, " ".join(dead))
    before = pool_requests(repo)

    update = env.run("apt-get", "update")
    assert_clean_terminal(update)
    download = env.run("apt-get", "download", *NAMES)
    assert_clean_terminal(download)
    for line in get_lines(update.stdout) + get_lines(download.stdout):
        assert line.split(" ", 1)[1].startswith(f"{repo.base_url} "), line
    assert_downloaded(env, repo, NAMES)
    after = pool_requests(repo)
    assert {path: n - before[path] for path, n in after.items() if n != before[path]} == {
        repo.package(name).filename: 1 for name in NAMES
    }


def test_the_only_edge_killed_after_update_apt_ends_at_the_mirror(
    mesh: Mesh, tmp_path: Path
) -> None:
    """The method chose an edge (and cached the choice); the edge dies: apt ends at the mirror.

    This edge is a plain verifying cache (no tracker). The method finds it
    dead on the first file and redirects apt to the mirror for every file;
    nothing but apt's ordinary lines reaches the terminal.
    """
    repo = mesh.repo
    origin = repo.base_url.removesuffix("/debian")  # the edge appends the request's path
    with edge_process("edge3", "127.0.0.4", tmp_path, origin, repo.keyring) as (
        edge3,
        url,
    ):
        env = mesh_apt(tmp_path / "apt", repo, url)
        update = env.run("apt-get", "update")
        assert_clean_terminal(update)
        assert all(f" mesh+http://{repo.host}/debian " in line for line in get_lines(update.stdout))
        edge3.kill()

    before = pool_requests(repo)
    download = env.run("apt-get", "download", *NAMES)
    assert_clean_terminal(download)  # the method found the edge dead: apt saw no Ign:
    for line in get_lines(download.stdout):
        assert line.split(" ", 1)[1].startswith(f"{repo.base_url} "), line
    assert_downloaded(env, repo, NAMES)
    after = pool_requests(repo)
    assert all(
        after[repo.package(name).filename] == before[repo.package(name).filename] + 1
        for name in NAMES
    )


def test_endpoints_json_and_banner(mesh: Mesh) -> None:
    ep = mesh.endpoints
    for key in ("tracker_announce", "tracker_grpc", "seeder_grpc", "edge_http", "edge_grpc"):
        assert ep[key].split("//")[-1].startswith(f"{MESH_HOST}:"), (key, ep[key])
    assert ep["tracker_announce"].endswith("/announce")
    assert ep["upstreams"] == [mesh.repo.base_url] and ep["keyring"] == str(mesh.repo.keyring)
    assert sorted(ep["metrics"]) == ["edge", "seeder", "tracker"]
    for service in ep["metrics"]:
        assert mesh.metrics(service).has("aptmesh_build_info"), service
    banner = mesh.proc.stdout.read_text()
    repo = mesh.repo
    assert f"deb [signed-by={repo.keyring}] mesh+http://{repo.host}/debian stable main" in banner
    assert f'Acquire::mesh::Edges "{mesh.edge_http}";' in banner
    assert f'Acquire::http::Proxy "{mesh.edge_http}/";' in banner


def test_up_stops_cleanly_on_sigterm(debrepo: DebRepo, tmp_path: Path) -> None:
    data = tmp_path / "data"
    proc = spawn("up", up_argv(debrepo, data), tmp_path / "logs")
    try:
        stopping = wait_up(proc, data, debrepo)
        edge_port = int(stopping.edge_http.rsplit(":", 1)[1])
        assert proc.terminate() == 0, proc.output()
        assert not (data / "endpoints.json").exists()
        assert not proc.group_alive(), "a process of aptmesh up's group outlived it"
        log = proc.stderr.read_text()
        assert "Traceback" not in log and '"level": "error"' not in log, proc.output()
        with socket.socket() as sock:  # its ports closed with it
            assert sock.connect_ex((MESH_HOST, edge_port)) != 0
    finally:
        proc.kill()


@pytest.mark.parametrize(
    "args, env, named",
    [
        (["--budget-bytes", "lots"], {}, "--budget-bytes"),
        (["--upstream", "ftp://127.0.0.1/debian"], {}, "--upstream"),
        (["--upstream", "http://127.0.0.1:9/debian", "--keyring", "/nonexistent"], {}, "--keyring"),
        (
            ["--upstream", "http://127.0.0.1:9/debian"],
            {"APTMESH_UP_LOG_LEVEL": "loud"},
            "LOG_LEVEL",
        ),
        (
            ["--upstream", "http://127.0.0.1:9/debian"],
            {"APTMESH_UP_BOGUS": "1"},
            "APTMESH_UP_BOGUS",
        ),
    ],
)
def test_bad_option_is_a_one_line_error(
    args: list[str], env: dict[str, str], named: str, tmp_path: Path
) -> None:
    result = subprocess.run(
        [APTMESH, "up", "--data-dir", str(tmp_path / "data"), *args],
        capture_output=True,
        text=True,
        env={**child_env(), **env},
        timeout=DEADLINE,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    [line] = result.stderr.splitlines()
    assert line.startswith("aptmesh up: ") and named in line, line
    assert not (tmp_path / "data").exists()  # nothing was started


def test_unknown_flag_exits_2_naming_it(tmp_path: Path) -> None:
    """argparse's answer: its usage block, then one error line naming the flag."""
    result = subprocess.run(
        [APTMESH, "up", "--data-dir", str(tmp_path / "data"), "--no-such-flag"],
        capture_output=True,
        text=True,
        env=child_env(),
        timeout=DEADLINE,
        check=False,
    )
    assert result.returncode == 2
    assert result.stdout == "" and "Traceback" not in result.stderr
    last = result.stderr.splitlines()[-1]
    assert last == "aptmesh up: error: unrecognized arguments: --no-such-flag", result.stderr
    assert not (tmp_path / "data").exists()
