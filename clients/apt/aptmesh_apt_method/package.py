"""Builds the `aptmesh-apt-method` Debian package: `python -m aptmesh_apt_method.package --out DIR`.

The package holds exactly what `install()` puts in a root, with the
apt.conf.d snippet as a conffile (so dpkg keeps an admin's edits). Needs
`dpkg-deb`; prints the path of the .deb it wrote.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from aptmesh_apt_method.install import CONF_NAME, SYSTEM_PYTHON, install

PACKAGE_NAME = "aptmesh-apt-method"


def project_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("aptmesh")
    except PackageNotFoundError:
        return "0.0.0"


def control(version: str, installed_kib: int) -> str:
    return f"""\
Package: {PACKAGE_NAME}
Version: {version}
Architecture: all
Maintainer: aptmesh developers <aptmesh@example.org>
Installed-Size: {installed_kib}
Depends: python3 (>= 3.9), apt (>= 2.1.15)
Section: admin
Priority: optional
Description: apt method that fetches packages through an aptmesh mesh
 Provides the mesh+http and mesh+https apt methods. A source line such as
 "deb mesh+http://deb.example.org/debian bookworm main" makes apt fetch that
 archive through the nearest healthy aptmesh edge cache, which shares package
 files peer to peer, with the other edges and finally the mirror itself as
 fallbacks. apt verifies every file as usual; when no edge is reachable it
 downloads straight from the mirror.
 .
 Edges and the preferred zone are set in /etc/apt/apt.conf.d/{CONF_NAME}.
"""


def build(out: Path, version: str | None = None) -> Path:
    """Builds the package into directory `out`; returns the .deb's path."""
    version = version or project_version()
    out.mkdir(parents=True, exist_ok=True)
    deb = out / f"{PACKAGE_NAME}_{version}_all.deb"
    with tempfile.TemporaryDirectory(prefix="aptmesh-deb-") as tmp:
        root = Path(tmp) / "root"
        install(root, SYSTEM_PYTHON, overwrite_config=True)
        docs = root / "usr/share/doc" / PACKAGE_NAME
        docs.mkdir(parents=True)
        (docs / "copyright").write_text(
            "aptmesh: Copyright the aptmesh developers.\nLicense: Apache-2.0, "
            "see /usr/share/common-licenses/Apache-2.0\n"
        )
        size = sum(p.stat().st_size for p in root.rglob("*") if p.is_file() and not p.is_symlink())
        debian = root / "DEBIAN"
        debian.mkdir()
        (debian / "control").write_text(control(version, max(1, (size + 1023) // 1024)))
        (debian / "conffiles").write_text(f"/etc/apt/apt.conf.d/{CONF_NAME}\n")
        for path in root.rglob("*"):
            if path.is_dir():
                path.chmod(0o755)
        subprocess.run(
            ["dpkg-deb", "--build", "--root-owner-group", str(root), str(deb)],
            check=True,
            stdout=subprocess.DEVNULL,
        )
    return deb


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m aptmesh_apt_method.package", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--out", type=Path, required=True, help="directory for the .deb")
    parser.add_argument("--version", default=None, help="package version (default: aptmesh's)")
    args = parser.parse_args(argv)
    if shutil.which("dpkg-deb") is None:
        print("building the package: dpkg-deb not found (apt-get install dpkg)", file=sys.stderr)
        return 1
    try:
        deb = build(args.out, args.version)
    except (OSError, subprocess.CalledProcessError) as exc:
        print(f"building the package: {exc}", file=sys.stderr)
        return 1
    print(deb)
    return 0


if __name__ == "__main__":
    sys.exit(main())
