"""Installing into a root, and the Debian package `make deb` builds."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from aptmesh_apt_method import install as installmod
from aptmesh_apt_method.install import install
from aptmesh_apt_method.package import project_version

from .proc import MethodProcess

CAPS = b"100 Capabilities\n"


def test_install_lays_out_method_links_code_and_config(tmp_path: Path) -> None:
    paths = install(
        tmp_path, "/usr/bin/python3", edges=["http://edge-a.example.org:3142"], zone="z1"
    )
    methods = tmp_path / "usr/lib/apt/methods"
    script = methods / "mesh"
    assert script in paths and os.access(script, os.X_OK)
    assert script.read_text().startswith("#!/usr/bin/python3 -u\n")
    for name in ("mesh+http", "mesh+https"):
        assert os.readlink(methods / name) == "mesh"
    conf = (tmp_path / "etc/apt/apt.conf.d/50mesh").read_text()
    assert 'Acquire::mesh::Edges "http://edge-a.example.org:3142";' in conf
    assert 'Acquire::mesh::Zone "z1";' in conf
    assert 'Acquire::Max-Pipeline-Depth "50";' in conf
    code = tmp_path / "usr/lib/aptmesh/aptmesh_apt_method"
    assert sorted(p.name for p in code.iterdir()) == sorted(installmod.RUNTIME_MODULES)


def test_installed_method_imports_only_the_standard_library(tmp_path: Path) -> None:
    install(tmp_path, "/usr/bin/python3")
    lib = str(tmp_path / "usr/lib/aptmesh")
    code = (
        f"import sys; sys.path.insert(0, {lib!r});"
        "import aptmesh_apt_method.main, aptmesh_apt_method.edges;"
        "bad = [m for m in sys.modules if m.split('.')[0] in "
        "('aptmesh', 'structlog', 'grpc', 'aiohttp', 'libtorrent', 'google')]; print(bad)"
    )
    out = subprocess.run(
        ["/usr/bin/python3", "-I", "-c", code], capture_output=True, text=True, check=True
    )
    assert out.stdout == "[]\n"


def test_existing_config_is_kept_unless_asked(tmp_path: Path) -> None:
    conf = tmp_path / "etc/apt/apt.conf.d/50mesh"
    conf.parent.mkdir(parents=True)
    conf.write_text("// mine\n")
    install(tmp_path, "/usr/bin/python3", edges=["http://e:1"])
    assert conf.read_text() == "// mine\n"
    install(tmp_path, "/usr/bin/python3", edges=["http://e:1"], overwrite_config=True)
    assert "http://e:1" in conf.read_text()


def test_install_main_prints_paths_and_reports_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert installmod.main(["--root", str(tmp_path), "--python", "/usr/bin/python3"]) == 0
    assert str(tmp_path / "usr/lib/apt/methods/mesh") in capsys.readouterr().out.splitlines()
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert installmod.main(["--root", str(blocker)]) == 1
    assert capsys.readouterr().err.startswith(f"install-apt-method: installing into {blocker}: ")


@pytest.fixture(scope="module")
def deb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    # Exactly what `make deb` runs.
    result = subprocess.run(
        [sys.executable, "-m", "aptmesh_apt_method.package", "--out", str(out)],
        capture_output=True,
        text=True,
        check=True,
    )
    path = Path(result.stdout.strip())
    assert path == out / f"aptmesh-apt-method_{project_version()}_all.deb"
    return path


def test_dpkg_deb_accepts_the_package(deb: Path) -> None:
    info = subprocess.run(
        ["dpkg-deb", "--info", str(deb)], capture_output=True, text=True, check=True
    ).stdout
    assert "Package: aptmesh-apt-method" in info
    assert "Architecture: all" in info
    assert "Depends: python3 (>= 3.9), apt (>= 2.1.15)" in info
    listing = subprocess.run(
        ["dpkg-deb", "-c", str(deb)], capture_output=True, text=True, check=True
    ).stdout
    assert "./usr/lib/apt/methods/mesh+http -> mesh" in listing
    assert "./usr/lib/apt/methods/mesh+https -> mesh" in listing
    assert "-rwxr-xr-x root/root" in next(
        line for line in listing.splitlines() if line.endswith("/methods/mesh")
    )
    assert "__pycache__" not in listing
    control = subprocess.run(
        ["dpkg-deb", "-I", str(deb), "conffiles"], capture_output=True, text=True, check=True
    )
    assert control.stdout == "/etc/apt/apt.conf.d/50mesh\n"


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


def test_dpkg_installs_the_package_into_a_scratch_root(deb: Path, tmp_path: Path) -> None:
    root = scratch_root(tmp_path / "root")
    subprocess.run(
        ["dpkg", f"--root={root}", "-i", str(deb)], capture_output=True, text=True, check=True
    )
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
    assert status == f"install ok installed {project_version()}"

    # The method as installed runs on its own and speaks first.
    with MethodProcess([str(root / "usr/lib/apt/methods/mesh+https")]) as method:
        method.receive()
        assert method.raw.startswith(CAPS)
        method.close_stdin()
        assert method.finish() == (0, b"", b"")

    # An admin's edit of the conffile survives reinstalling.
    conf = root / "etc/apt/apt.conf.d/50mesh"
    conf.write_text('Acquire::mesh::Edges "http://edge.example.org:3142";\n')
    subprocess.run(
        ["dpkg", f"--root={root}", "-i", str(deb)], capture_output=True, text=True, check=True
    )
    assert conf.read_text() == 'Acquire::mesh::Edges "http://edge.example.org:3142";\n'
    assert not list((root / "usr/lib/aptmesh").rglob("__pycache__"))
