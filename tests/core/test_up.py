"""`aptmesh up`'s decisions: what it runs when the user leaves things out."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from aptmesh.aptsources import AptSource
from aptmesh.config import ConfigError, build
from aptmesh.debrepo import DebRepo
from aptmesh_cli.up import UpConfig, apt_lines, origin, plan, repository_spec, sync_report
from aptmesh_seeder.select import Candidate, Plan
from aptmesh_seeder.sync import SyncResult


def _keyring(tmp_path: Path) -> Path:
    path = tmp_path / "k.gpg"
    path.write_bytes(b"key")
    return path


def test_without_upstream_the_machines_debian_mirror_and_keyring_are_used(tmp_path: Path) -> None:
    keyring = _keyring(tmp_path)
    sources = [
        AptSource("http://mirror.example/debian-security", ("bookworm-security",), ("main",)),
        AptSource(
            "http://mirror.example/debian", ("bookworm", "bookworm-updates"), ("main",), keyring
        ),
    ]
    p = plan(UpConfig(), sources, "arm64")
    assert p.upstreams == ("http://mirror.example/debian",)
    assert p.suites == ("bookworm",) and p.keyring == keyring
    assert p.architectures == ("arm64", "all")


def test_given_upstream_and_keyring_win(tmp_path: Path) -> None:
    keyring = _keyring(tmp_path)
    cfg = UpConfig(upstream=("http://127.0.0.1:8080/debian/",), keyring=keyring, suites=("stable",))
    p = plan(cfg, [], "amd64")
    assert p.upstreams == ("http://127.0.0.1:8080/debian",) and p.suites == ("stable",)
    spec = repository_spec(0, p.upstreams[0], p, ("main",))
    assert spec == (
        "127.0.0.1-8080-debian=http://127.0.0.1:8080/debian;suites=stable"
        ";components=main;architectures=amd64 all"
    )
    assert origin(p.upstreams[0]) == "http://127.0.0.1:8080"
    assert apt_lines(p, "http://127.0.0.1:3142", ("main",)) == [
        f"deb [signed-by={keyring}] mesh+http://127.0.0.1:8080/debian stable main"
    ]


def test_nothing_to_run_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no Debian mirror"):
        plan(UpConfig(), [], "amd64")
    with pytest.raises(ConfigError, match="APTMESH_UP_KEYRING: no such file"):
        plan(
            UpConfig(upstream=("http://x.example/debian",), keyring=tmp_path / "nope"), [], "amd64"
        )
    with pytest.raises(ConfigError, match="--upstream / APTMESH_UP_UPSTREAM: 'ftp://x' is not"):
        build(UpConfig, "up", {}, {"APTMESH_UP_UPSTREAM": "ftp://x"})


def _result(name: str, ok: bool, **fields: object) -> SyncResult:
    return SyncResult(name, "ok" if ok else "failed", **fields)  # type: ignore[arg-type]


def test_sync_report_prints_the_first_outcome_and_every_change() -> None:
    last: dict[str, bool] = {}
    chosen = Candidate("a" * 64, 3 << 20, "big", "pool/main/b/big/big_1_all.deb")
    ok = _result("debian", True, plan=Plan((chosen,), 5, 4, 100, 0))
    failed = _result("vendor", False, kind="signature", error="verifying InRelease: BADSIG")
    assert sync_report([ok, failed], last) == [
        "aptmesh up: the seeder synced debian: seeding 1 package files (3.0 MiB) of 5 in its"
        " indexes",
        "aptmesh up: the seeder's sync of vendor FAILED (signature): verifying InRelease: BADSIG",
        "  nothing of it is seeded: its packages come from the upstream through the edge; the"
        " seeder tries again on its own",
    ]
    assert sync_report([ok, failed], last) == []  # no change, nothing printed
    assert sync_report([_result("vendor", True)], last) == [
        "aptmesh up: the seeder synced vendor: unchanged since its last sync"
    ]


@pytest.mark.parametrize(("suite", "expected"), [("stable", "seeding 2"), ("nonesuch", "FAILED")])
def test_up_says_what_the_first_sync_did(
    debrepo: DebRepo, tmp_path: Path, suite: str, expected: str
) -> None:
    argv = [sys.executable, "-m", "aptmesh_cli", "up", "--data-dir", str(tmp_path / "mesh")]
    argv += ["--upstream", debrepo.base_url, "--keyring", str(debrepo.keyring)]
    argv += ["--suites", suite, "--architectures", "amd64,all"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("APTMESH_")}
    lines: list[str] = []
    with subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, env=env) as proc:
        try:
            assert proc.stdout is not None
            deadline = time.monotonic() + 60
            while not any(x.startswith("aptmesh up: the seeder") for x in lines):
                assert time.monotonic() < deadline, lines
                line = proc.stdout.readline()
                assert line, f"aptmesh up exited {proc.poll()}: {lines}"
                lines.append(line.rstrip("\n"))
        finally:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=30) == 0
    assert lines[0].startswith("aptmesh is up") and "first sync is running" in lines[0]
    [line] = [x for x in lines if x.startswith("aptmesh up: the seeder")]
    assert expected in line
    if expected == "FAILED":
        assert "(fetch)" in line and "neither InRelease nor Release" in line
