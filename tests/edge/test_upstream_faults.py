"""Upstream faults and same-path-new-bytes (issue 14), with the fault-injecting upstream.

A package file whose hash the signed index gives is asked again when the upstream fails
(5xx, a reset or a short body, a hang after the headers), resuming with Range + If-Range,
and verified whole; any other file gets a clean error at once. Each fault is counted by
reason and action, and nothing that failed is cached. An HTML page reached through a
redirect (a captive portal) is never stored as a package; a package rebuilt under the
same name is fetched anew.
"""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

import aiohttp
import pytest

from aptmesh.debrepo import DebRepo, KiB, PackageSpec, apt_env
from aptmesh_edge.app import RunningEdge
from tests.edge.conftest import HOST, EdgeFactory, fetch_indexes, get, metric, prefix_url
from tests.fixtures.faulty import Fault, FaultyFactory, FaultyUpstream


async def _edge_behind(
    make_edge: EdgeFactory, upstream: FaultyUpstream, **changes: object
) -> RunningEdge:
    return await make_edge(upstreams=(f"{HOST}={upstream.url}",), **changes)


def _faults(edge: RunningEdge, reason: str, action: str) -> float:
    return metric(edge, "aptmesh_edge_upstream_faults_total", reason=reason, action=action)


@pytest.mark.parametrize(
    ("fault", "reason"),
    [
        (Fault.STATUS_500, "server_error"),
        (Fault.RESET_MID_BODY, "broken"),
        (Fault.SHORT_BODY, "broken"),
        (Fault.HANG_AFTER_HEADERS, "stalled"),
    ],
)
async def test_a_known_package_is_fetched_again_and_resumed(
    make_edge: EdgeFactory,
    debrepo: DebRepo,
    faulty_upstream: FaultyFactory,
    client: aiohttp.ClientSession,
    fault: Fault,
    reason: str,
) -> None:
    upstream = await faulty_upstream(debrepo)
    edge = await _edge_behind(make_edge, upstream, upstream_timeout=1.0)
    await fetch_indexes(client, edge, debrepo)
    pkg = debrepo.package("aptmesh-large")
    upstream.inject(fault, pkg.filename)
    status, body, _ = await get(client, prefix_url(edge, pkg.filename))
    assert status == 200 and hashlib.sha256(body).hexdigest() == pkg.sha256
    assert _faults(edge, reason, "retried") == 1 and _faults(edge, reason, "failed") == 0
    assert edge.blobs.get(pkg.sha256) is not None
    asked = upstream.requests(pkg.filename)
    assert len(asked) == 2
    if fault in (Fault.RESET_MID_BODY, Fault.SHORT_BODY):
        # Resumed where the bytes broke off, and only if the file is the same version.
        assert asked[1].headers.get("Range", "").startswith("bytes=") and asked[1].headers.get(
            "If-Range"
        ), asked[1]


async def test_a_resumed_download_through_real_apt(
    make_edge: EdgeFactory, debrepo: DebRepo, faulty_upstream: FaultyFactory, tmp_path: Path
) -> None:
    upstream = await faulty_upstream(debrepo)
    edge = await _edge_behind(make_edge, upstream)
    pkg = debrepo.package("aptmesh-large")
    upstream.inject(Fault.RESET_MID_BODY, pkg.filename)
    apt = apt_env(
        tmp_path / "apt",
        debrepo.sources_line(f"http://{HOST}/debian"),
        {"Acquire::http::Proxy": edge.http_url},
    )
    await asyncio.to_thread(apt.run, "apt-get", "update")
    await asyncio.to_thread(apt.run, "apt-get", "download", pkg.name)
    (got,) = apt.root.glob(f"{pkg.name}_*.deb")
    assert hashlib.sha256(got.read_bytes()).hexdigest() == pkg.sha256
    assert _faults(edge, "broken", "retried") == 1


async def test_a_file_of_unknown_hash_gets_a_clean_error_and_is_not_cached(
    make_edge: EdgeFactory,
    debrepo: DebRepo,
    faulty_upstream: FaultyFactory,
    client: aiohttp.ClientSession,
) -> None:
    upstream = await faulty_upstream(debrepo)
    edge = await _edge_behind(make_edge, upstream)
    pkg = debrepo.package("aptmesh-large")  # no index fetched: its hash is not known
    upstream.inject(Fault.STATUS_500, pkg.filename)
    status, _, _ = await get(client, prefix_url(edge, pkg.filename))
    assert status == 502
    assert _faults(edge, "server_error", "failed") == 1
    assert _faults(edge, "server_error", "retried") == 0
    assert edge.blobs.get(pkg.sha256) is None


async def test_a_body_longer_than_its_content_length_is_refused(
    make_edge: EdgeFactory,
    debrepo: DebRepo,
    faulty_upstream: FaultyFactory,
    client: aiohttp.ClientSession,
) -> None:
    upstream = await faulty_upstream(debrepo)
    edge = await _edge_behind(make_edge, upstream)
    await fetch_indexes(client, edge, debrepo)
    pkg = debrepo.package("aptmesh-large")
    upstream.inject(Fault.LONG_BODY, pkg.filename)
    status, _, _ = await get(client, prefix_url(edge, pkg.filename))
    assert status == 502
    assert metric(edge, "aptmesh_verification_failures_total", service="edge", kind="package_size")
    assert edge.blobs.get(pkg.sha256) is None
    # The next request is a fresh download, not the refused one.
    status, body, _ = await get(client, prefix_url(edge, pkg.filename))
    assert status == 200 and hashlib.sha256(body).hexdigest() == pkg.sha256


@pytest.mark.parametrize("verify_mode", ["enforce", "off"])
async def test_a_captive_portal_page_is_never_stored_as_a_package(
    make_edge: EdgeFactory,
    debrepo: DebRepo,
    faulty_upstream: FaultyFactory,
    client: aiohttp.ClientSession,
    verify_mode: str,
) -> None:
    upstream = await faulty_upstream(debrepo)
    edge = await _edge_behind(make_edge, upstream, verify_mode=verify_mode)
    if verify_mode == "enforce":
        await fetch_indexes(client, edge, debrepo)
    pkg = debrepo.package("aptmesh-tiny")
    upstream.inject(Fault.PORTAL, pkg.filename)
    status, body, _ = await get(client, prefix_url(edge, pkg.filename))
    assert status == 502 and b"HTML page" in body
    assert upstream.requests("/portal")  # the redirect was followed
    assert _faults(edge, "html_page", "failed") == 1
    assert edge.blobs.stats().entries == 0
    status, body, _ = await get(client, prefix_url(edge, pkg.filename))
    assert status == 200 and hashlib.sha256(body).hexdigest() == pkg.sha256


async def test_a_package_rebuilt_under_the_same_name_is_fetched_anew(
    make_edge: EdgeFactory, debrepo: DebRepo, client: aiohttp.ClientSession
) -> None:
    edge = await make_edge(index_freeze_seconds=0.0)
    old = debrepo.package("aptmesh-tiny")
    await fetch_indexes(client, edge, debrepo)
    status, body, _ = await get(client, prefix_url(edge, old.filename))
    assert status == 200 and hashlib.sha256(body).hexdigest() == old.sha256
    # Same name and version, new bytes (a rebuild), a new Packages and InRelease.
    new = debrepo.add_package(PackageSpec("aptmesh-tiny", old.version, 3 * KiB))
    assert new.filename == old.filename and new.sha256 != old.sha256
    await fetch_indexes(client, edge, debrepo)
    status, body, _ = await get(client, prefix_url(edge, new.filename))
    assert status == 200 and hashlib.sha256(body).hexdigest() == new.sha256
    assert debrepo.server.requests(new.filename) == 2


async def test_an_index_fetched_by_its_hash_is_resumed_too(
    make_edge: EdgeFactory,
    debrepo: DebRepo,
    faulty_upstream: FaultyFactory,
    client: aiohttp.ClientSession,
) -> None:
    upstream = await faulty_upstream(debrepo)
    edge = await _edge_behind(make_edge, upstream)
    upstream.inject(Fault.RESET_MID_BODY, "/by-hash/SHA256/")
    await fetch_indexes(client, edge, debrepo)  # Packages.xz by name: fetched by its hash
    assert _faults(edge, "broken", "retried") == 1
    # An InRelease (hash unknown until verified) gets the clean error at once.
    upstream.inject(Fault.RESET_MID_BODY, "InRelease")
    edge2 = await _edge_behind(make_edge, upstream)
    status, _, _ = await get(client, prefix_url(edge2, debrepo.INRELEASE))
    assert status == 502 and _faults(edge2, "broken", "failed") == 1
