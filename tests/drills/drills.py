"""The fault drills: each builds its mesh, injects one fault, and returns its table row.

Every drill ends with the checker (`harness.corrupt_entries`) and reports what
it measured; the assertions are the tests' (test_drills.py) and the table's
(`python -m tests.drills`). A drill takes a `Size`: small in `make test`,
full in `make drills`.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable
from pathlib import Path

import libtorrent as lt

from aptmesh.debrepo import DebRepo
from aptmesh.torrent import make_torrent
from tests.drills.harness import (
    DrillMesh,
    Line,
    Row,
    Size,
    alternate,
    corrupt_entries,
    drill_mesh,
    info_hash,
    run_apts,
)
from tests.fixtures.mesh import Metrics, http_get, served, wait_for

SWARM_BACK_WITHIN = 30.0  # seconds: the goal for the swarm after a tracker restart
BOTH = (Line.PROXY, Line.MESH)

Drill = Callable[[DebRepo, Path, Size], Row]


def _finish(row: Row, mesh: DrillMesh) -> Row:
    bad = corrupt_entries(mesh)
    row.corrupt_entries = len(bad)
    row.notes += [f"corrupt entry {path}" for path in bad]
    return row


def fetch(mesh: DrillMesh, edge: int, path: str) -> bytes:
    """A file through an edge in the path-prefix form (`GET /HOST/debian/PATH`), after the
    signed indexes that vouch for it (as apt fetches them: the edge believes a pool file's
    hash only from a Packages file it verified)."""
    repo = mesh.repo
    for index in (repo.INRELEASE, repo.PACKAGES + ".xz", path):
        status, body = http_get(f"{mesh.edge_urls[edge]}/{repo.host}/debian/{index}", 60)
        assert status == 200, f"{index} through edge{edge}: HTTP {status}"
    return body


def fallbacks(before: Metrics, after: Metrics) -> str:
    """The edge's upstream fallbacks between two scrapes, by reason."""
    name = "aptmesh_edge_upstream_fallbacks_total"
    reasons = {dict(labels).get("reason", "") for n, labels, _ in after.samples if n == name}
    counts = {r: after.value(name, reason=r) - before.value(name, reason=r) for r in reasons}
    return ", ".join(f"{r}: {c:.0f}" for r, c in sorted(counts.items()) if c) or "no fallback"


def kill_during_apt(service: str) -> Drill:
    """kill -9 of `service` while apt runs go through both lines; then it comes back."""

    def drill(repo: DebRepo, tmp: Path, size: Size) -> Row:
        with drill_mesh(repo, tmp / "mesh") as mesh:
            edges = mesh.edge_urls
            # Proxy runs can only fail over by hand: they use the edge that is not killed.
            survivor = edges[1] if service == "edge0" else edges[0]
            plan = alternate(BOTH, edges)

            def plan_for(w: int, r: int) -> tuple[Line, list[str]]:
                line, listed = plan(w, r)
                return line, [survivor] if line is Line.PROXY else listed

            row = run_apts(mesh, tmp, size, plan_for, lambda: mesh.kill(service))
            row.drill = f"kill -9 {service} under apt"
            began = time.monotonic()
            mesh.start(service)
            row.recovery_s = time.monotonic() - began
            return _finish(row, mesh)

    return drill


def tracker_restart(repo: DebRepo, tmp: Path, size: Size) -> Row:
    """kill -9 and restart the tracker; the time until every swarmed file has its seed again,
    then a large-file fetch by an edge that has not cached it comes from the swarm."""
    row = Row("tracker restart: swarm back")
    with drill_mesh(repo, tmp / "mesh") as mesh:
        mesh.kill("tracker")
        began = time.monotonic()
        mesh.start("tracker")
        try:
            wait_for(
                lambda: all(c >= 1 for c in mesh.seeds().values()),
                "every swarmed file to have a seed at the restarted tracker",
                timeout=SWARM_BACK_WITHIN,
            )
            row.recovery_s = time.monotonic() - began
        except AssertionError:
            row.notes.append(f"seeds after {SWARM_BACK_WITHIN:.0f} s: {mesh.seeds()}")
        pkg = repo.package("aptmesh-huge")
        for edge in range(len(mesh.edge_urls)):
            before = mesh.metrics(f"edge{edge}")
            body = fetch(mesh, edge, pkg.filename)
            row.runs += 1
            if hashlib.sha256(body).hexdigest() != pkg.sha256:
                row.corrupt_bytes += len(body)
            after = mesh.metrics(f"edge{edge}")
            if served(after, "swarm") <= served(before, "swarm"):
                row.notes.append(
                    f"edge{edge}: {pkg.name} not from the swarm ({fallbacks(before, after)})"
                )
        return _finish(row, mesh)


def corrupt_seeder_file(repo: DebRepo, tmp: Path, size: Size) -> Row:
    """A byte of a seeded file changes on the seeder's disk (size and mtime kept) while it is
    down; after its restart the seeder must stop seeding those bytes and hold good ones again."""
    row = Row("corrupted seeder file")
    with drill_mesh(repo, tmp / "mesh") as mesh:
        pkg = repo.package("aptmesh-huge")
        held = mesh.seeder_dir / "files" / pkg.sha256[:2] / pkg.sha256
        mesh.kill("seeder")
        st = held.stat()
        with held.open("r+b") as f:
            f.seek(st.st_size // 2)
            byte = f.read(1)
            f.seek(st.st_size // 2)
            f.write(bytes([byte[0] ^ 0xFF]))
        os.utime(held, ns=(st.st_atime_ns, st.st_mtime_ns))
        began = time.monotonic()
        mesh.start("seeder")
        try:
            wait_for(lambda: not corrupt_entries(mesh), "the seeder to hold only good files")
            row.recovery_s = time.monotonic() - began
        except AssertionError:
            row.notes.append("the corrupted file is still held and seeded")
        for edge in range(len(mesh.edge_urls)):
            body = fetch(mesh, edge, pkg.filename)
            row.runs += 1
            if hashlib.sha256(body).hexdigest() != pkg.sha256:
                row.corrupt_bytes += len(body)
        return _finish(row, mesh)


MALICIOUS_HOST = "127.0.0.9"


def malicious_peer(repo: DebRepo, tmp: Path, size: Size) -> Row:
    """A BitTorrent peer of the drill's own sends bad pieces of a swarmed file (the seeder is
    down, so the edges meet it); every edge still serves the signed bytes, counts the bad
    pieces in aptmesh_verification_failures_total and bans the peer."""
    row = Row("malicious BitTorrent peer")
    pkg = repo.package("aptmesh-large")
    with drill_mesh(repo, tmp / "mesh") as mesh:
        mesh.kill("seeder")
        bad_dir = tmp / "malicious"
        bad_dir.mkdir()
        bad = bad_dir / os.path.basename(pkg.filename)
        bad.write_bytes(pkg.path.read_bytes())
        session = lt.session(
            {
                "listen_interfaces": f"{MALICIOUS_HOST}:0",
                "enable_dht": False,
                "enable_lsd": False,
                "enable_upnp": False,
                "enable_natpmp": False,
                "enable_incoming_utp": False,
                "enable_outgoing_utp": False,
                "allow_multiple_connections_per_ip": True,
            }
        )
        atp = lt.add_torrent_params()
        atp.ti = lt.torrent_info(make_torrent(pkg.path).torrent.metainfo)
        atp.save_path = str(bad_dir)
        atp.trackers = [mesh.announce]
        handle = session.add_torrent(atp)
        try:
            wait_for(lambda: handle.status().is_seeding, "the malicious peer to seed")
            # Now that libtorrent checked the file, its bytes change under it: what it
            # uploads from here on fails every piece hash.
            with bad.open("r+b") as f:
                f.write(os.urandom(pkg.size))
            wait_for(lambda: mesh.seeds()[pkg.name] >= 1, "the tracker to list the malicious peer")
            for edge in range(len(mesh.edge_urls)):
                name = f"edge{edge}"
                failures = mesh.metrics(name).value(
                    "aptmesh_verification_failures_total", kind="piece"
                )
                body = fetch(mesh, edge, pkg.filename)
                row.runs += 1
                if hashlib.sha256(body).hexdigest() != pkg.sha256:
                    row.corrupt_bytes += len(body)
                after = mesh.metrics(name).value(
                    "aptmesh_verification_failures_total", kind="piece"
                )
                if after <= failures:
                    row.notes.append(f"{name}: bad pieces not counted as verification failures")
            row.recovery_s = None
        finally:
            session.remove_torrent(handle)
            del session
        return _finish(row, mesh)


DRILLS: dict[str, Drill] = {
    "kill_tracker": kill_during_apt("tracker"),
    "kill_seeder": kill_during_apt("seeder"),
    "kill_edge": kill_during_apt("edge0"),
    "tracker_restart": tracker_restart,
    "corrupt_seeder_file": corrupt_seeder_file,
    "malicious_peer": malicious_peer,
}

__all__ = ["DRILLS", "Drill", "info_hash"]
