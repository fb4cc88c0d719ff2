"""The swarm benchmark's harness, small and fast: it builds, measures, reports and cleans up.

Runs as root (CI does): network namespaces, veth, a bridge and HTB caps. A
tiny configuration (4 MiB, 3 edges, 40 Mbit/s) of the same code path that
`make bench-swarm` runs in full.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.swarm import netns
from bench.swarm.harness import REPO, BenchConfig, BenchRun, scenarios
from bench.swarm.payload import pulse_sizes

pytestmark = [pytest.mark.root]

REQUIRED = {"scenario", "system", "t_kr", "t_last", "ratio", "mirror_bytes_ratio", "valid"}
EDGES = 3
RATE = 40.0


@pytest.fixture(autouse=True)
def _root() -> None:
    if os.geteuid() != 0:
        pytest.fail("the swarm harness needs root (ip netns, tc); CI runs as root")


def _ours(prefix: str) -> list[str]:
    return [n for n in netns.namespaces() if n.startswith(prefix)]


def _tiny_run(*systems: str, pulse: bool = False, timeout: float = 90) -> tuple[str, str]:
    """`python -m bench.swarm` in the tiny configuration, seed-bound; (stdout, stderr)."""
    argv = [
        sys.executable, "-m", "bench.swarm", "--edges", str(EDGES), "--size-mib", "4",
        "--rate", str(RATE), "--scenario", "seed-bound", "--calib-seconds", "1",
    ]  # fmt: skip
    if pulse:
        argv += ["--pulse", "--seed", "1"]
    for system in systems:
        argv += ["--system", system]
    done = subprocess.run(
        argv, capture_output=True, text=True, cwd=REPO, timeout=timeout, check=False
    )
    assert done.returncode in (0, 3), done.stderr  # 3: measured, but a run was invalid
    return done.stdout, done.stderr


def _prefix(stderr: str) -> str:
    match = re.search(r"run (amb\d+-) in (\S+)", stderr)
    assert match, stderr
    return match.group(1)


def test_tiny_run_reports_sane_json_lines_and_leaves_nothing_behind() -> None:
    stdout, stderr = _tiny_run("http", "libtorrent-default")
    prefix = _prefix(stderr)
    results = {r["system"]: r for r in map(json.loads, stdout.splitlines())}
    assert set(results) == {"http", "libtorrent-default"}
    for result in results.values():
        assert set(result) >= REQUIRED
        assert result["bytes_ok"] is True  # every edge holds the mirror's exact bytes
        assert len(result["t_finish"]) == EDGES and None not in result["t_finish"]
        assert result["t_last"] >= 0.9 * result["t_kr"]
        assert result["ratio"] == pytest.approx(result["t_last"] / result["t_kr"], rel=0.01)
        nominal = RATE * 1e6 / 8
        for rate in [result["u_s_eff"], *result["u_i_eff"]]:
            assert 0.85 * nominal < rate <= 1.02 * nominal  # calibrated, not nominal
        assert isinstance(result["valid"], bool)
        assert result["valid"] or result["invalid_reasons"]
        assert 0 < result["cpu_peak"] <= 1
    http = results["http"]
    assert http["mirror_bytes_ratio"] == pytest.approx(EDGES, abs=0.01)
    assert http["seed_bytes"] == 0
    assert http["t_last"] >= 0.9 * http["t_cs"]
    swarm = results["libtorrent-default"]
    assert swarm["mirror_bytes_ratio"] == 0
    assert swarm["seed_bytes_ratio"] >= 0.99  # every piece leaves the seed at least once
    assert sum(swarm["edge_upload_bytes"]) > 0  # the edges shared with each other
    assert "T_KR" in stderr and "libtorrent-default" in stderr
    assert _ours(prefix) == []
    assert not list(Path("/tmp").glob(f"{prefix}*"))


def test_tiny_aptmesh_pulse_fetches_every_file_from_outside_once() -> None:
    """The aptmesh system end to end in the harness: tracker, seeder and edges in their
    namespaces, a pulse of small and large files. Large files come from the seeder and the
    swarm, small ones from the mirror once for the whole site (through their owner edges)."""
    stdout, stderr = _tiny_run("aptmesh", pulse=True, timeout=150)
    prefix = _prefix(stderr)
    [result] = map(json.loads, stdout.splitlines())
    assert set(result) >= REQUIRED and result["system"] == "aptmesh" and result["pulse"]
    assert result["bytes_ok"] is True
    assert len(result["t_finish"]) == EDGES and None not in result["t_finish"]
    nominal = int(RATE * 1e6 / 8)
    assert result["settings"]["edge_upload_capacity"] == nominal
    assert result["settings"]["seeder_upload_capacity"] == nominal
    sizes = pulse_sizes(4 << 20, seed=1)
    small = sum(size for size in sizes if size < 1 << 20)  # DESIGN.md's swarm_min_size
    assert 0 < small < sum(sizes)
    # The mirror sends each small file once for the site (plus the indexes), not once per
    # edge; the large ones leave the origin from the seeder.
    assert small <= result["mirror_bytes"] < small + 256 * 1024, (small, result["mirror_bytes"])
    assert result["seed_bytes"] >= sum(sizes) - small
    assert _ours(prefix) == []
    assert not list(Path("/tmp").glob(f"{prefix}*"))


def test_an_exception_inside_a_run_removes_its_namespaces_and_processes() -> None:
    config = BenchConfig(edges=2, file_size=1 << 20)
    with pytest.raises(RuntimeError, match="boom"), BenchRun(config) as run:
        topo = run.build(scenarios(RATE)["seed-bound"])
        proc = run.start(
            topo.hosts["origin"], "mirror", "--bind", "127.0.0.1", "--port", "0",
            "--root", str(run.tmp),
        )  # fmt: skip
        proc.expect("ready", time.time() + 20)
        assert len(_ours(run.prefix)) == 5  # switch, origin, two edges, calibration sink
        raise RuntimeError("boom")
    assert _ours(run.prefix) == []
    assert proc.popen.poll() is not None
    assert not run.tmp.exists()


def test_sigterm_removes_everything_of_the_run() -> None:
    bench = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bench.swarm",
            "--edges",
            "2",
            "--size-mib",
            "2",
            "--calib-seconds",
            "5",
            "--scenario",
            "seed-bound",
        ],  # fmt: skip
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    assert bench.stderr is not None
    prefix = _prefix(bench.stderr.readline())
    deadline = time.time() + 20
    while len(_ours(prefix)) < 4 and time.time() < deadline:
        time.sleep(0.05)
    assert _ours(prefix), "the run never built its namespaces"
    bench.send_signal(signal.SIGTERM)
    assert bench.wait(20) == 130
    bench.stderr.close()
    assert _ours(prefix) == []
    assert not list(Path("/tmp").glob(f"{prefix}*"))


def test_cleanup_removes_leftovers_of_dead_runs_only() -> None:
    pid = 99_999_999  # above any pid_max: a run that is surely gone
    leftover = f"{netns.PREFIX}{pid}-x"
    alive = f"{netns.run_prefix()}alive"
    netns.run("ip", "netns", "add", leftover)
    netns.run("ip", "netns", "add", alive)
    try:
        removed = netns.cleanup()
        assert leftover in removed and alive not in removed
        assert _ours(leftover) == [] and _ours(alive) == [alive]
    finally:
        netns.delete_namespace(leftover)
        netns.delete_namespace(alive)
