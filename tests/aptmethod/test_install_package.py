"""Installing into a root (the Debian package is tested in tests/packaging/)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from aptmesh_apt_method import install as installmod
from aptmesh_apt_method.install import install


def test_install_lays_out_method_links_code_and_config(tmp_path: Path) -> None:
    paths = install(
        tmp_path, "/usr/bin/python3", edges=["http://edge-a.example.org:3142"], zone="z1"
    )
    methods = tmp_path / "usr/lib/apt/methods"
    script = methods / "mesh"
    assert script in paths and os.access(script, os.X_OK)
    assert script.read_text().startswith("#!/usr/bin/python3 -ISu\n")
    for name in ("mesh+http", "mesh+https"):
        assert os.readlink(methods / name) == "mesh"
    conf = (tmp_path / "etc/apt/apt.conf.d/50mesh").read_text()
    assert 'Acquire::mesh::Edges "http://edge-a.example.org:3142";' in conf
    assert 'Acquire::mesh::Zone "z1";' in conf
    assert 'Acquire::Max-Pipeline-Depth "50";' in conf
    code = tmp_path / "usr/lib/aptmesh/aptmesh_apt_method"
    assert sorted(p.name for p in code.glob("*.py")) == sorted(installmod.RUNTIME_MODULES)


def test_install_compiles_bytecode_for_the_methods_python_unless_told_not_to(
    tmp_path: Path,
) -> None:
    install(tmp_path / "a", "/usr/bin/python3")
    tag = subprocess.run(
        ["/usr/bin/python3", "-c", "import sys; print(sys.implementation.cache_tag)"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    cache = tmp_path / "a/usr/lib/aptmesh/aptmesh_apt_method/__pycache__"
    compiled = {p.name.split(".")[0] for p in cache.glob(f"*.{tag}.pyc")}
    assert compiled == {name.removesuffix(".py") for name in installmod.RUNTIME_MODULES}
    install(tmp_path / "b", "/usr/bin/python3", bytecode=False)
    assert not (tmp_path / "b/usr/lib/aptmesh/aptmesh_apt_method/__pycache__").exists()


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
