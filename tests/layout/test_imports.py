"""The layout rule's import contracts (tools/imports.py, run by `make check`).

Each case copies the real tree, breaks one contract in it and shows that the
checker (as `make check` runs it) fails and names the file; the real tree passes.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHECKER = ROOT / "tools" / "imports.py"
FOLDERS = ("aptmesh", "services", "clients", "cli")


def run_checker(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(CHECKER), str(root)], capture_output=True, text=True, check=False
    )


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    for folder in FOLDERS:
        shutil.copytree(
            ROOT / folder, tmp_path / folder, ignore=shutil.ignore_patterns("__pycache__")
        )
    return tmp_path


def test_the_tree_keeps_every_contract() -> None:
    result = run_checker(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr


def test_no_symlinked_module_names() -> None:
    links = [p for f in FOLDERS for p in (ROOT / f).rglob("*") if p.is_symlink()]
    assert links == []


@pytest.mark.parametrize(
    ("file", "line", "rule"),
    [
        ("aptmesh/files.py", "from aptmesh_edge import cache", "the core imports no service"),
        ("aptmesh/torrent.py", "import aptmesh_cli.up", "the core imports no service"),
        (
            "clients/apt/aptmesh_apt_method/edges.py",
            "import aiohttp",
            "the apt method imports only the standard library",
        ),
        (
            "clients/apt/aptmesh_apt_method/method.py",
            "from aptmesh import logs",
            "the apt method imports only the standard library",
        ),
        (
            "clients/apt/aptmesh_apt_method/uris.py",
            "import tomllib",
            "the apt method imports only the standard library",
        ),
        (
            "services/edge/aptmesh_edge/cache.py",
            "from aptmesh_tracker import store",
            "only through the tracker's client and records",
        ),
        (
            "services/seeder/aptmesh_seeder/sync.py",
            "from aptmesh_edge.cache import Cache",
            "only through the tracker's client and records",
        ),
        ("services/seeder/aptmesh_seeder/sync.py", "from . import state", "import absolutely"),
    ],
)
def test_a_broken_contract_fails_the_check(tree: Path, file: str, line: str, rule: str) -> None:
    path = tree / file
    path.write_text(path.read_text() + f"\n{line}  # a deliberate break\n")
    result = run_checker(tree)
    assert result.returncode == 1
    assert file in result.stdout and rule in result.stdout, result.stdout


def test_services_may_share_the_trackers_client_and_records(tree: Path) -> None:
    path = tree / "services/edge/aptmesh_edge/cache.py"
    path.write_text(
        path.read_text() + "\nfrom aptmesh_tracker.client import TrackerClient  # noqa\n"
        "from aptmesh_tracker import records  # noqa\n"
    )
    assert run_checker(tree).returncode == 0
