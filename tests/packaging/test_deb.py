"""The Debian packages `make deb` builds (packaging/): their contents, lintian, the unit.

Installing them for real, with debconf answers and dpkg-reconfigure, is the container test
beside this file; here nothing is installed on the host (a scratch dpkg root at most).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from aptmesh import __version__
from tests.aptmethod.proc import MethodProcess
from tests.packaging.debs import ROOT, Debs, build_debs

pytestmark = pytest.mark.timeout(600)
CAPS = b"100 Capabilities\n"


@pytest.fixture(scope="module")
def debs(tmp_path_factory: pytest.TempPathFactory) -> Debs:
    return build_debs(tmp_path_factory.mktemp("deb"))


@pytest.fixture(scope="module")
def peer_tree(debs: Debs, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("peer-root")
    subprocess.run(["dpkg-deb", "-x", str(debs.peer), str(root)], check=True)
    return root


def builder() -> ModuleType:
    spec = importlib.util.spec_from_file_location("packaging_build", ROOT / "packaging/build.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def dpkg_deb(*args: str) -> str:
    return subprocess.run(["dpkg-deb", *args], capture_output=True, text=True, check=True).stdout


def test_the_method_package_holds_the_method_links_and_conffile(debs: Debs) -> None:
    info = dpkg_deb("--info", str(debs.method))
    assert "Package: aptmesh-apt-method" in info and "Architecture: all" in info
    assert "Depends: python3 (>= 3.9), apt (>= 2.1.15)" in info
    listing = dpkg_deb("-c", str(debs.method))
    assert "./usr/lib/apt/methods/mesh+http -> mesh" in listing
    assert "./usr/lib/apt/methods/mesh+https -> mesh" in listing
    assert "-rwxr-xr-x root/root" in next(
        line for line in listing.splitlines() if line.endswith("/methods/mesh")
    )
    assert "./usr/share/doc/aptmesh-apt-method/changelog.gz" in listing
    assert "__pycache__" not in listing
    assert dpkg_deb("-I", str(debs.method), "conffiles") == "/etc/apt/apt.conf.d/50mesh\n"


def scratch_root(path: Path) -> Path:
    """An empty dpkg database that knows python3 and apt are installed."""
    admin = path / "var/lib/dpkg"
    (admin / "info").mkdir(parents=True)
    (admin / "updates").mkdir()
    stub = (
        "Package: {0}\nStatus: install ok installed\nVersion: {1}\nArchitecture: all\n"
        "Maintainer: x <x@example.org>\nDescription: stub\n\n"
    )
    (admin / "status").write_text(stub.format("python3", "3.11.2-1") + stub.format("apt", "2.6.1"))
    return path


def test_dpkg_installs_the_method_into_a_scratch_root(debs: Debs, tmp_path: Path) -> None:
    root = scratch_root(tmp_path / "root")
    dpkg = ["dpkg", f"--root={root}", "-i", str(debs.method)]
    subprocess.run(dpkg, capture_output=True, text=True, check=True)
    status = subprocess.run(
        [
            "dpkg-query",
            f"--admindir={root}/var/lib/dpkg",
            "-W",
            "-f=${Status} ${Version}",
            "aptmesh-apt-method",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert status == f"install ok installed {__version__}"
    # The method as installed runs on its own and speaks first.
    with MethodProcess([str(root / "usr/lib/apt/methods/mesh+https")]) as method:
        method.receive()
        assert method.raw.startswith(CAPS)
        method.close_stdin()
        assert method.finish() == (0, b"", b"")
    # An admin's edit of the conffile survives reinstalling.
    conf = root / "etc/apt/apt.conf.d/50mesh"
    conf.write_text('Acquire::mesh::Edges "http://edge.example.org:3142";\n')
    subprocess.run(dpkg, capture_output=True, text=True, check=True)
    assert conf.read_text() == 'Acquire::mesh::Edges "http://edge.example.org:3142";\n'
    assert not list((root / "usr/lib/aptmesh").rglob("__pycache__"))


def test_lintian_reports_no_error_or_warning_on_either_package(debs: Debs) -> None:
    assert shutil.which("lintian"), "lintian is missing: `make sysdeps` installs it"
    result = subprocess.run(
        [
            "lintian",
            "--pedantic",
            "--display-info",
            "--fail-on",
            "error,warning",
            str(debs.method),
            str(debs.peer),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    tags = [line for line in result.stdout.splitlines() if line[:2] in ("E:", "W:")]
    assert tags == [] and result.returncode == 0, result.stdout + result.stderr


def test_the_peer_runs_from_its_private_environment_wherever_it_is_unpacked(
    peer_tree: Path,
) -> None:
    prefix = peer_tree / "usr/lib/aptmesh-peer"
    assert not list(prefix.rglob("__pycache__")), "bytecode is compiled at install, not shipped"
    # The environment's python3 is a relative link to the system's /usr/bin/python3.
    assert os.readlink(prefix / "bin/python3") == "../../../bin/python3"
    assert "home = /usr/bin\n" in (prefix / "pyvenv.cfg").read_text()
    (peer_tree / "usr/bin/python3").symlink_to("/usr/bin/python3")
    try:
        env = {"PATH": "/usr/bin:/bin", "APTMESH_PEER_PARTICIPATION": "download-only"}
        # -B: this test leaves no bytecode in the tree the other tests look at.
        python = [str(prefix / "bin/python3"), "-I", "-B", "-m", "aptmesh_cli.main"]
        version = subprocess.run([*python, "--version"], capture_output=True, text=True, env=env)
        assert version.stdout == f"aptmesh {__version__}\n", version.stderr
        config = subprocess.run(
            [*python, "peer", "--print-config"], capture_output=True, text=True, env=env
        )
        assert "APTMESH_PEER_PARTICIPATION=download-only\n" in config.stdout, config.stderr
        imports = subprocess.run(
            [
                str(prefix / "bin/python3"),
                "-I",
                "-B",
                "-c",
                "import sys, libtorrent, grpc, aiohttp; print(sys.prefix)",
            ],
            capture_output=True,
            text=True,
            env=env,
        )
        assert imports.stdout == f"{prefix}\n", imports.stderr
    finally:
        (peer_tree / "usr/bin/python3").unlink()
    launcher = (peer_tree / "usr/bin/aptmesh").read_text()
    assert launcher.startswith("#!/bin/sh\n") and "/usr/lib/aptmesh-peer/bin/python3 -I" in launcher


def test_the_peer_copyright_names_every_bundled_distribution(peer_tree: Path) -> None:
    text = (peer_tree / "usr/share/doc/aptmesh-peer/copyright").read_text()
    assert text.startswith(
        "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/"
    )
    site = next((peer_tree / "usr/lib/aptmesh-peer/lib").glob("python3.*/site-packages"))
    for info in site.glob("*.dist-info"):
        if not info.name.startswith("aptmesh-"):
            assert f"/{info.name}/*\n" in text, f"{info.name} has no Files: paragraph"
    assert "Copyright: 2003-2024, Arvid Norberg" in text  # libtorrent's wheel has no license file


@pytest.fixture
def unit(peer_tree: Path, tmp_path: Path) -> Iterator[Path]:
    """The unit as packaged, its ExecStart pointing into the unpacked tree (nothing is
    installed on the host) so systemd-analyze can check the command exists."""
    text = (peer_tree / "lib/systemd/system/aptmesh-peer.service").read_text()
    assert "ExecStart=/usr/bin/aptmesh peer\n" in text
    path = tmp_path / "aptmesh-peer.service"
    path.write_text(text.replace("ExecStart=/usr/bin/", f"ExecStart={peer_tree}/usr/bin/"))
    yield path


def test_systemd_analyze_verifies_the_hardened_unit(unit: Path, peer_tree: Path) -> None:
    assert shutil.which("systemd-analyze"), "systemd-analyze is missing: `make sysdeps`"
    text = unit.read_text()
    for line in (
        "Type=notify",
        "User=_aptmesh",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "NoNewPrivileges=yes",
        "CapabilityBoundingSet=\n",
        "StateDirectory=aptmesh/peer",
        "CacheDirectory=aptmesh/peer",
    ):
        assert line in text
    result = subprocess.run(
        ["systemd-analyze", "verify", str(unit)],
        capture_output=True,
        text=True,
        env={**os.environ, "MANPATH": str(peer_tree / "usr/share/man")},
        check=False,
    )
    assert result.returncode == 0 and result.stderr == "", result.stderr


def test_a_changelog_that_does_not_name_the_version_stops_the_build() -> None:
    build = builder()
    assert build.changelog_version((ROOT / "packaging/changelog").read_text()) == __version__
    with pytest.raises(build.BuildError, match="first line"):
        build.changelog_version("aptmesh 0.1.0 unstable\n")
