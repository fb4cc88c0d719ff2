"""Real apt (apt-helper download-file) through the method, against loopback servers.

127.0.0.1 is the mirror; edges get their own loopback addresses (127.0.0.2,
127.0.0.3, ...) because apt falls back only between different hosts.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import pytest

from aptmesh.testing import free_port
from aptmesh_apt_method.config import MeshConfig
from aptmesh_apt_method.edges import CacheEntry, Edge, write_cache
from tests.aptmethod.servers import Running, Site, serve

APT_HELPER = "/usr/lib/apt/apt-helper"
DEB = b"!<arch>\n" + bytes(range(256)) * 40
SHA256 = hashlib.sha256(DEB).hexdigest()
# What apt asks for: Debian's "+" and "~" arrive percent-encoded (Acquire::URIEncode).
POOL_PATH = "/debian/pool/main/h/hello/hello_2.10-3%2bb1%7ebpo_all.deb"
POOL_PATH_AS_WRITTEN = "/debian/pool/main/h/hello/hello_2.10-3+b1~bpo_all.deb"


@dataclass
class Mesh:
    mirror: Running
    edges: list[Running]
    tmp: Path

    def edge_site(self, files_status: int = 200, zone: str = "") -> Site:
        site = Site(files_status=files_status)
        site.files[f"/{self.mirror.hostport}{POOL_PATH}"] = DEB
        site.files[f"/HTTPS///{self.mirror.hostport}{POOL_PATH}"] = DEB
        return site


@pytest.fixture
def mirror() -> Iterator[Running]:
    with serve(Site(files={POOL_PATH: DEB}), "127.0.0.1") as running:
        yield running


@pytest.fixture
def stack() -> Iterator[ExitStack]:
    with ExitStack() as stack:
        yield stack


def start_edges(stack: ExitStack, mirror: Running, *sites: tuple[Site, str]) -> list[Running]:
    """Starts each edge on its own loopback address; each lists all of them with its zone."""
    running = []
    for n, (site, _) in enumerate(sites):
        site.files[f"/{mirror.hostport}{POOL_PATH}"] = DEB
        site.files[f"/HTTPS///{mirror.hostport}{POOL_PATH}"] = DEB
        running.append(stack.enter_context(serve(site, f"127.0.0.{n + 2}")))
    listing = [
        {"id": f"edge-{n}", "url": edge.url, "zone": zone}
        for n, (edge, (_, zone)) in enumerate(zip(running, sites, strict=True))
    ]
    for site, _ in sites:
        site.edges = listing
    return running


def apt_download(
    method: Path | str,
    tmp: Path,
    uri: str,
    *options: str,
    scheme: str = "mesh+http",
) -> tuple[subprocess.CompletedProcess[str], Path]:
    """Runs apt-helper download-file in an isolated configuration; returns it and the file."""
    etc = tmp / "etc"
    (etc / "apt.conf.d").mkdir(parents=True, exist_ok=True)
    conf = etc / "apt.conf"
    conf.write_text(f'Dir::Etc::main "/dev/null";\nDir::Etc::parts "{etc}/apt.conf.d";\n')
    state = tmp / "state"
    state.mkdir(exist_ok=True)
    out = tmp / "out" / "hello.deb"
    out.parent.mkdir(exist_ok=True)
    if out.exists():
        out.unlink()
    argv = [APT_HELPER, "-o", f"Dir::Bin::Methods::{scheme}={method}", "-o", f"Dir::State={state}"]
    argv += ["-o", "APT::Sandbox::User=root"]
    for option in options:
        argv += ["-o", option]
    argv += ["download-file", uri, str(out), f"SHA256:{SHA256}"]
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    env["APT_CONFIG"] = str(conf)
    result = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=60)
    return result, out


def assert_clean_success(result: subprocess.CompletedProcess[str], out: Path) -> None:
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stderr == ""
    for line in result.stdout.splitlines():
        assert line.startswith(("Get:", "Ign:", "Fetched ")) or not line.strip(), line
    assert out.read_bytes() == DEB


def uri(mirror: Running, scheme: str = "mesh+http") -> str:
    return f"{scheme}://{mirror.hostport}{POOL_PATH_AS_WRITTEN}"


def test_redirects_to_the_edge(
    method_path: Path, mirror: Running, stack: ExitStack, tmp_path: Path
) -> None:
    [edge] = start_edges(stack, mirror, (Site(), "zone-a"))
    result, out = apt_download(
        method_path, tmp_path, uri(mirror), f"Acquire::mesh::Edges={edge.url}"
    )
    assert_clean_success(result, out)
    assert edge.site.file_requests() == [f"/{mirror.hostport}{POOL_PATH}"]
    assert mirror.site.paths() == []


def test_https_upstream_goes_through_the_edge(
    method_path: Path, mirror: Running, stack: ExitStack, tmp_path: Path
) -> None:
    [edge] = start_edges(stack, mirror, (Site(), "zone-a"))
    result, out = apt_download(
        method_path.with_name("mesh+https"),
        tmp_path,
        uri(mirror, "mesh+https"),
        f"Acquire::mesh::Edges={edge.url}",
        scheme="mesh+https",
    )
    assert_clean_success(result, out)
    assert edge.site.file_requests() == [f"/HTTPS///{mirror.hostport}{POOL_PATH}"]


def test_dead_edge_is_skipped(
    method_path: Path, mirror: Running, stack: ExitStack, tmp_path: Path
) -> None:
    dead = f"http://127.0.0.9:{free_port('127.0.0.9')}"
    [live] = start_edges(stack, mirror, (Site(), ""))
    result, out = apt_download(
        method_path, tmp_path, uri(mirror), f"Acquire::mesh::Edges={dead},{live.url}"
    )
    assert_clean_success(result, out)
    assert "Ign:" not in result.stdout  # the dead edge was never tried
    assert live.site.file_requests() == [f"/{mirror.hostport}{POOL_PATH}"]


def test_failing_edge_falls_back_through_alternate_uris(
    method_path: Path, mirror: Running, stack: ExitStack, tmp_path: Path
) -> None:
    # Edge a is healthy and preferred (its zone) but cannot serve the file.
    a, b = start_edges(stack, mirror, (Site(files_status=404), "za"), (Site(), "zb"))
    result, out = apt_download(
        method_path,
        tmp_path,
        uri(mirror),
        f"Acquire::mesh::Edges={a.url}",
        "Acquire::mesh::Zone=za",
    )
    assert_clean_success(result, out)
    assert a.site.file_requests() == [f"/{mirror.hostport}{POOL_PATH}"]
    assert b.site.file_requests() == [f"/{mirror.hostport}{POOL_PATH}"]
    assert mirror.site.paths() == []


def test_every_edge_failing_ends_at_the_mirror(
    method_path: Path, mirror: Running, stack: ExitStack, tmp_path: Path
) -> None:
    a, b = start_edges(stack, mirror, (Site(files_status=404), ""), (Site(files_status=404), ""))
    result, out = apt_download(
        method_path, tmp_path, uri(mirror), f"Acquire::mesh::Edges={a.url} {b.url}"
    )
    assert_clean_success(result, out)
    assert mirror.site.paths() == [POOL_PATH]


def test_every_edge_dead_goes_to_the_mirror_quietly(
    method_path: Path, mirror: Running, tmp_path: Path
) -> None:
    dead = [f"http://127.0.0.{n}:{free_port(f'127.0.0.{n}')}" for n in (7, 8)]
    result, out = apt_download(
        method_path, tmp_path, uri(mirror), f"Acquire::mesh::Edges={' '.join(dead)}"
    )
    assert_clean_success(result, out)
    assert "Ign:" not in result.stdout
    assert mirror.site.paths() == [POOL_PATH]


@pytest.mark.parametrize("zone, serving", [("za", 0), ("zb", 1)])
def test_zone_preference(
    method_path: Path, mirror: Running, stack: ExitStack, tmp_path: Path, zone: str, serving: int
) -> None:
    edges = start_edges(stack, mirror, (Site(), "za"), (Site(), "zb"))
    # Only edge a is configured; edge b is learnt from a's /_aptmesh/edges.
    result, out = apt_download(
        method_path,
        tmp_path,
        uri(mirror),
        f"Acquire::mesh::Edges={edges[0].url}",
        f"Acquire::mesh::Zone={zone}",
    )
    assert_clean_success(result, out)
    assert edges[serving].site.file_requests() == [f"/{mirror.hostport}{POOL_PATH}"]
    assert edges[1 - serving].site.file_requests() == []


def test_cache_file_is_reused_then_refreshed(
    method_path: Path, mirror: Running, stack: ExitStack, tmp_path: Path
) -> None:
    [edge] = start_edges(stack, mirror, (Site(), "za"))
    options = (f"Acquire::mesh::Edges={edge.url}",)
    assert_clean_success(*apt_download(method_path, tmp_path, uri(mirror), *options))
    cache = tmp_path / "state" / "mesh-edges.json"
    assert json.loads(cache.read_text())["edges"] == [
        {"url": edge.url, "id": "edge-0", "zone": "za"}
    ]
    probes = edge.site.paths().count("/healthz")
    assert probes == 1

    assert_clean_success(*apt_download(method_path, tmp_path, uri(mirror), *options))
    assert edge.site.paths().count("/healthz") == probes  # the second run trusted the cache

    cache.write_text("{ not json")
    assert_clean_success(*apt_download(method_path, tmp_path, uri(mirror), *options))
    assert edge.site.paths().count("/healthz") == probes + 1
    assert json.loads(cache.read_text())["edges"][0]["url"] == edge.url


def test_cached_edge_that_died_is_passed_over(
    method_path: Path, mirror: Running, stack: ExitStack, tmp_path: Path
) -> None:
    dead = f"http://127.0.0.9:{free_port('127.0.0.9')}"
    [live] = start_edges(stack, mirror, (Site(), ""))
    config = MeshConfig(edges=(dead, live.url))
    (tmp_path / "state").mkdir()
    entry = CacheEntry(config.cache_key(), time.time(), (Edge(dead), Edge(live.url)))
    write_cache(str(tmp_path / "state" / "mesh-edges.json"), entry)
    result, out = apt_download(
        method_path,
        tmp_path,
        uri(mirror),
        f"Acquire::mesh::Edges={dead} {live.url}",
    )
    assert_clean_success(result, out)
    assert "Ign:" not in result.stdout  # the method, not apt, found the dead edge
    assert live.site.paths() == [f"/{mirror.hostport}{POOL_PATH}"]  # no probe: cache used
    cached = json.loads((tmp_path / "state" / "mesh-edges.json").read_text())
    assert [e["url"] for e in cached["edges"]] == [live.url]  # the next run skips it too


def test_console_script_works_as_the_method(
    mirror: Running, stack: ExitStack, tmp_path: Path
) -> None:
    [edge] = start_edges(stack, mirror, (Site(), ""))
    script = Path(sys.executable).with_name("aptmesh-apt-method")
    result, out = apt_download(script, tmp_path, uri(mirror), f"Acquire::mesh::Edges={edge.url}")
    assert_clean_success(result, out)
    assert edge.site.file_requests() == [f"/{mirror.hostport}{POOL_PATH}"]
