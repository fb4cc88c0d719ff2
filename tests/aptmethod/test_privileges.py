"""Where the method caches its edge choice, for each user it may run as (issue 18)."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from aptmesh_apt_method import privileges
from aptmesh_apt_method.privileges import cache_file_for_user, sandbox_user


@pytest.mark.parametrize(
    "items, user",
    [({}, "_apt"), ({"apt::sandbox::user": ""}, None), ({"apt::sandbox::user": "root"}, None)],
)
def test_sandbox_user_as_apt_sends_it(items: dict[str, str], user: str | None) -> None:
    assert sandbox_user(items) == user


def test_a_writable_state_dir_is_used(tmp_path: Path) -> None:
    assert cache_file_for_user(str(tmp_path), {}) == str(tmp_path / "mesh-edges.json")


@pytest.fixture
def open_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="aptmesh-user-", dir="/tmp"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"), reason="needs root")
def test_a_plain_user_caches_in_its_own_cache_dir(open_dir: Path) -> None:
    """As `nobody`, with apt's root-owned Dir::State: $XDG_CACHE_HOME/aptmesh, mode 700."""
    code = open_dir / "code"
    code.mkdir()
    shutil.copy(privileges.__file__, code / "privileges.py")
    state = open_dir / "state"  # root's, like /var/lib/apt
    state.mkdir(mode=0o755)
    home = open_dir / "home"
    home.mkdir()
    os.chown(home, 65534, 65534)
    script = (
        "import os, sys; sys.path.insert(0, sys.argv[1]); import privileges; "
        "print(privileges.settle({}, sys.argv[2]))"
    )
    result = subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
        + ["/usr/bin/python3"]  # the interpreter the installed method uses
        + ["-c", script, str(code), str(state)],
        capture_output=True,
        text=True,
        env={"XDG_CACHE_HOME": str(home / ".cache"), "PATH": "/usr/bin:/bin"},
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(home / ".cache/aptmesh/mesh-edges.json")
    directory = home / ".cache/aptmesh"
    assert (directory.stat().st_uid, directory.stat().st_mode & 0o777) == (65534, 0o700)
