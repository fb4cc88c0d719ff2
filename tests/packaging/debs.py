"""Builds the Debian packages exactly as `make deb` does, into a test's directory."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from aptmesh import __version__

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Debs:
    method: Path
    peer: Path


def build_debs(work: Path) -> Debs:
    """`deploy/docker/build.sh wheels`, then `packaging/build.py` (make deb's two steps)."""
    wheels = work / "wheels"
    env = {
        **os.environ,
        "APTMESH_WHEELS_DIR": str(wheels),
        "APTMESH_BUILD_DIR": str(work / "build"),
    }
    subprocess.run(
        [str(ROOT / "deploy/docker/build.sh"), "wheels"],
        env=env,
        check=True,
        capture_output=True,
    )
    out = work / "dist"
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "packaging/build.py"),
            "--out",
            str(out),
            "--wheels",
            str(wheels),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    paths = [Path(line) for line in result.stdout.split()]
    debs = Debs(
        method=out / f"aptmesh-apt-method_{__version__}_all.deb",
        peer=out / f"aptmesh-peer_{__version__}_amd64.deb",
    )
    assert paths == [debs.method, debs.peer], result.stdout
    return debs
