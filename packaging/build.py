"""Builds aptmesh's Debian packages: `python packaging/build.py --out DIR [PACKAGE ...]`.

PACKAGE is `aptmesh-apt-method` (architecture all: the method, its links and its
apt.conf.d conffile) or `aptmesh-peer` (amd64: the whole application in a private
virtual environment under /usr/lib/aptmesh-peer, the `aptmesh-peer` systemd unit, the
debconf question); without one, both. `make deb` runs this.

Each package's Debian files are plain files in `packaging/PACKAGE/` (control
template, copyright, maintainer scripts, debconf templates, the unit, lintian
overrides), so a packager reads them without reading Python; this module only
lays out the tree, fills in the version and sizes, and calls `dpkg-deb`. The one
changelog (`packaging/changelog`, source `aptmesh`) must name the project's
version: a mismatch is an error, not a silently stale changelog.

Why a private virtual environment: the peer needs aiohttp, grpcio, libtorrent
2.1 and protobuf at the versions of requirements.lock, which Debian 12's
python3-* packages do not have. They come from the wheels
`deploy/docker/build.sh wheels` downloads (cp311 manylinux), the same ones the
images use, so the package is built offline from dist/wheels/. The price is
compiled code that Debian did not build; `aptmesh-peer/lintian-overrides` names
each lintian tag this makes unavoidable, and why.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from email.parser import Parser
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SOURCE = "aptmesh"
METHOD = "aptmesh-apt-method"
PEER = "aptmesh-peer"
PACKAGES = (METHOD, PEER)
# The peer's private environment and the interpreter it runs on (the wheels are cp311).
PEER_PREFIX = "usr/lib/aptmesh-peer"
SYSTEM_PYTHON = "/usr/bin/python3"
# Mode of the maintainer scripts and of every other control file.
SCRIPTS = ("config", "preinst", "postinst", "prerm", "postrm")


APACHE_POINTER = (
    "Licensed under the Apache License, Version 2.0. On Debian systems, the\n"
    "complete text of the Apache License, Version 2.0 can be found in\n"
    '"/usr/share/common-licenses/Apache-2.0".'
)


class BuildError(Exception):
    """The package cannot be built; the text says what is missing or wrong."""


def project_version() -> str:
    text = (ROOT / "aptmesh/__init__.py").read_text(encoding="utf-8")
    match = re.search(r'^__version__ = "([^"]+)"$', text, re.MULTILINE)
    if not match:
        raise BuildError("reading aptmesh/__init__.py: no __version__")
    return match.group(1)


def changelog_version(text: str) -> str:
    """The version of the changelog's first entry (`aptmesh (VERSION) suite; ...`)."""
    match = re.match(rf"^{SOURCE} \(([^)]+)\) [a-z-]+; urgency=[a-z]+$", text.split("\n", 1)[0])
    if not match:
        raise BuildError(f"packaging/changelog: the first line is not `{SOURCE} (VERSION) ...`")
    return match.group(1)


def gzip_n(data: bytes) -> bytes:
    """gzip -9n: no name and no time stamp in the header, so the bytes are reproducible."""
    buffer = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", compresslevel=9, fileobj=buffer, mtime=0) as out:
        out.write(data)
    return buffer.getvalue()


def _files(root: Path) -> Iterator[Path]:
    for path in sorted(root.rglob("*")):
        if path.is_file() and not path.is_symlink() and "DEBIAN" not in path.parts:
            yield path


def normalize_modes(root: Path) -> None:
    """Directories 0755, files 0644 unless executable (then 0755): what lintian expects."""
    for path in [root, *root.rglob("*")]:
        if path.is_symlink():
            continue
        if path.is_dir():
            path.chmod(0o755)
        else:
            path.chmod(0o755 if path.stat().st_mode & 0o111 else 0o644)


def add_docs(root: Path, package: str, copyright_text: str) -> None:
    docs = root / "usr/share/doc" / package
    docs.mkdir(parents=True, exist_ok=True)
    (docs / "copyright").write_text(copyright_text, encoding="utf-8")
    changelog = (HERE / "changelog").read_bytes()
    # A native package (aptmesh is packaged by its authors: the version has no Debian
    # revision), so Policy 12.7 names its changelog changelog.gz, not changelog.Debian.gz.
    (docs / "changelog.gz").write_bytes(gzip_n(changelog))


def write_control(root: Path, package: str, version: str) -> None:
    """DEBIAN/: control (version and size filled in), md5sums, scripts and templates."""
    source = HERE / package
    debian = root / "DEBIAN"
    debian.mkdir()
    size = sum(path.stat().st_size for path in _files(root))
    control = (source / "control").read_text(encoding="utf-8")
    control = control.format(version=version, installed_size=max(1, (size + 1023) // 1024))
    (debian / "control").write_text(control, encoding="utf-8")
    sums = "".join(
        f"{hashlib.md5(p.read_bytes(), usedforsecurity=False).hexdigest()}  {p.relative_to(root)}\n"
        for p in _files(root)
    )
    (debian / "md5sums").write_text(sums, encoding="utf-8")
    for name in ("conffiles", "templates", *SCRIPTS):
        if (source / name).exists():
            shutil.copyfile(source / name, debian / name)
            (debian / name).chmod(0o755 if name in SCRIPTS else 0o644)


def dpkg_deb(root: Path, deb: Path) -> Path:
    subprocess.run(
        ["dpkg-deb", "--build", "--root-owner-group", "-Zxz", str(root), str(deb)],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return deb


def stage_method(root: Path) -> str:
    """The method's tree; returns its copyright file."""
    from aptmesh_apt_method.install import SYSTEM_PYTHON as METHOD_PYTHON
    from aptmesh_apt_method.install import install

    # No bytecode in the package (lintian: package-installs-python-pycache-dir); a postinst
    # that compiles it is the next step (it must then run in `dpkg --root` scratch roots).
    install(root, METHOD_PYTHON, overwrite_config=True, bytecode=False)
    return (HERE / METHOD / "copyright").read_text(encoding="utf-8")


def stage_peer(root: Path, wheels: Path) -> str:
    """The peer's tree: the virtual environment, the command, its manual, the unit."""
    pip = sorted(wheels.glob("pip-*.whl"))
    if not pip or not sorted(wheels.glob(f"{SOURCE}-*.whl")):
        raise BuildError(
            f"no aptmesh and pip wheels in {wheels}: run `deploy/docker/build.sh wheels` "
            "(`make deb` does)"
        )
    prefix = root / PEER_PREFIX
    subprocess.run([SYSTEM_PYTHON, "-m", "venv", "--without-pip", str(prefix)], check=True)
    subprocess.run(
        [
            str(prefix / "bin/python"),
            f"{pip[-1]}/pip",
            "install",
            "--quiet",
            "--no-index",
            "--no-compile",
            "--no-cache-dir",
            "--disable-pip-version-check",
            "--find-links",
            str(wheels),
            SOURCE,
        ],
        check=True,
    )
    relocate_venv(prefix)
    strip_objects(prefix)
    peer = HERE / PEER
    bindir = root / "usr/bin"
    bindir.mkdir(parents=True)
    # A shell script, not pip's console script: its #! would name the environment's
    # python, which is no interpreter Debian knows. -I: no PYTHON* variables, no user
    # site, no current directory on sys.path, as a system service needs.
    launcher = bindir / SOURCE
    launcher.write_text(
        f'#!/bin/sh\nexec /{PEER_PREFIX}/bin/python3 -I -m aptmesh_cli.main "$@"\n',
        encoding="utf-8",
    )
    launcher.chmod(0o755)
    man = root / "usr/share/man/man1"
    man.mkdir(parents=True)
    (man / "aptmesh.1.gz").write_bytes(gzip_n((peer / "aptmesh.1").read_bytes()))
    unit = root / "lib/systemd/system"
    unit.mkdir(parents=True)
    shutil.copyfile(peer / "aptmesh-peer.service", unit / "aptmesh-peer.service")
    detect = root / PEER_PREFIX / "apt-proxy-detect"
    shutil.copyfile(peer / "apt-proxy-detect", detect)
    detect.chmod(0o755)
    aptconf = root / "etc/apt/apt.conf.d"
    aptconf.mkdir(parents=True)
    shutil.copyfile(peer / "apt.conf", aptconf / "50aptmesh-peer")
    overrides = root / "usr/share/lintian/overrides"
    overrides.mkdir(parents=True)
    shutil.copyfile(peer / "lintian-overrides", overrides / PEER)
    site = next(prefix.glob("lib/python3.*/site-packages"))
    return (peer / "copyright").read_text(encoding="utf-8") + bundled_copyright(site, root)


def relocate_venv(prefix: Path) -> None:
    """Makes a virtual environment built at `prefix` run from wherever it is installed.

    Only the interpreter links are kept in bin/ (pip wrote the build path into the
    console scripts, venv into the activate scripts; nothing at run time needs
    them), they point at the system python3 by a relative path, and pyvenv.cfg is
    rewritten without the build path.
    """
    bindir = prefix / "bin"
    for path in bindir.iterdir():
        path.unlink()
    version = subprocess.run(
        [SYSTEM_PYTHON, "-c", "import platform; print(platform.python_version())"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    minor = ".".join(version.split(".")[:2])
    (bindir / "python3").symlink_to(os.path.relpath(SYSTEM_PYTHON, f"/{PEER_PREFIX}/bin"))
    for name in ("python", f"python{minor}"):
        (bindir / name).symlink_to("python3")
    system = Path(SYSTEM_PYTHON)
    (prefix / "pyvenv.cfg").write_text(
        f"home = {system.parent}\ninclude-system-site-packages = false\nversion = {version}\n",
        encoding="utf-8",
    )
    lib64 = prefix / "lib64"
    if lib64.is_symlink():
        lib64.unlink()
    leftovers = [p for p in _files(prefix) if str(prefix).encode() in p.read_bytes()]
    if leftovers:
        raise BuildError(f"the build path is still written in {leftovers[0]}")


def strip_objects(prefix: Path) -> None:
    """Strips the wheels' shared objects as dh_strip would (debug symbols out) and
    makes them and every module non-executable: only bin/ holds programs."""
    for path in _files(prefix / "lib"):
        if path.suffix == ".so" or ".so." in path.name:
            subprocess.run(
                [
                    "strip",
                    "--strip-unneeded",
                    "--remove-section=.comment",
                    "--remove-section=.note",
                    str(path),
                ],
                check=True,
            )
        elif path.suffix == ".py":
            _system_shebang(path)
        path.chmod(0o644)


def _system_shebang(path: Path) -> None:
    """`#!/usr/bin/env python` in a module becomes `#!/usr/bin/python3`, as dh_python3 does."""
    data = path.read_bytes()
    if data.startswith(b"#!") and b"python" in data.split(b"\n", 1)[0]:
        rest = data.split(b"\n", 1)[1] if b"\n" in data else b""
        path.write_bytes(b"#!" + SYSTEM_PYTHON.encode() + b"\n" + rest)


def bundled_copyright(site: Path, root: Path) -> str:
    """DEP-5 paragraphs for each distribution in the environment, with its license text.

    The text is the distribution's own license file(s) from its .dist-info, so the
    notice ships with the copy; the short name is the distribution's License-Expression
    (or License) field.
    """
    paragraphs: list[str] = []
    for info in sorted(site.glob("*.dist-info")):
        meta = Parser().parsestr((info / "METADATA").read_text(encoding="utf-8"))
        name = meta["Name"]
        if name == SOURCE:
            continue
        license_name = _license_name(meta.get("License-Expression") or meta.get("License") or "")
        texts = [
            path.read_text(encoding="utf-8", errors="replace")
            for path in sorted(info.rglob("*"))
            if path.is_file() and re.match(r"(?i)(licen[cs]e|copying|notice)", path.name)
        ]
        known = HERE / PEER / "licenses" / name.lower()
        if not texts and known.exists():
            # A wheel without its license file (libtorrent's): the text kept here.
            texts = [known.read_text(encoding="utf-8")]
            license_name = "BSD-3-Clause" if license_name == "BSD" else license_name
        if not texts:
            raise BuildError(
                f"{info.name} ships no license file: add its text as "
                f"packaging/{PEER}/licenses/{name.lower()}"
            )
        top = {p.parts[0] for p in _record_paths(info)} - {"..", info.name}
        globs = " ".join(
            f"{site.relative_to(root)}/{t}{'/*' if (site / t).is_dir() else ''}"
            for t in sorted(top)
        )
        holders = _copyright_lines("\n".join(texts)) or [f"the {name} authors"]
        # Policy 12.5: a license in /usr/share/common-licenses is referred to, not copied.
        texts = [
            APACHE_POINTER if "Apache License" in t and "Version 2.0" in t else t for t in texts
        ]
        if any(t is APACHE_POINTER for t in texts) and "Apache" not in license_name:
            license_name = (
                f"Apache-2.0 and {license_name}" if license_name != "other" else "Apache-2.0"
            )
        body = "\n\n".join(dict.fromkeys(t.strip("\n") for t in texts)).splitlines()
        paragraphs.append(
            f"Files: {globs} {site.relative_to(root)}/{info.name}/*\n"
            f"Copyright: {_field(holders)}\n"
            f"License: {license_name}\n{_field(body, first=True)}\n"
        )
    return "\n" + "\n".join(paragraphs)


def _record_paths(info: Path) -> list[Path]:
    record = info / "RECORD"
    return [Path(line.split(",", 1)[0]) for line in record.read_text().splitlines() if line]


# Free-text License fields of the bundled wheels -> DEP-5 short names.
LICENSE_NAMES = {"Apache 2.0": "Apache-2.0", "3-Clause BSD License": "BSD-3-Clause"}


def _license_name(text: str) -> str:
    name = " ".join(text.split()) if len(text) < 80 else ""
    name = LICENSE_NAMES.get(name, name)
    return re.sub(r"[^A-Za-z0-9.+ ()-]", "-", name) or "other"


def _copyright_lines(text: str) -> list[str]:
    seen: list[str] = []
    for line in text.splitlines():
        match = re.match(r"^\s*Copyright\s*(?:\(c\)|©)?\s*(.+)$", line, re.IGNORECASE)
        if match and re.search(r"\d{4}", match.group(1)) and match.group(1) not in seen:
            seen.append(match.group(1).strip())
    return seen[:8]


def _field(lines: Sequence[str], *, first: bool = False) -> str:
    """A DEP-5 multi-line value: continuation lines start with a space, blank ones with ` .`."""
    out = [(" " + line.rstrip()) if line.strip() else " ." for line in lines]
    if first:
        return "\n".join(out)
    return "\n".join([lines[0], *out[1:]]) if lines else ""


def build(package: str, out: Path, wheels: Path) -> Path:
    version = project_version()
    logged = changelog_version((HERE / "changelog").read_text(encoding="utf-8"))
    if logged != version:
        raise BuildError(
            f"packaging/changelog's first entry is {logged}, the project is {version}: "
            "add a changelog entry (dch -v) for this version"
        )
    stage: dict[str, Callable[[Path], str]] = {
        METHOD: stage_method,
        PEER: lambda root: stage_peer(root, wheels),
    }
    arch = "all" if package == METHOD else "amd64"
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="aptmesh-deb-") as tmp:
        root = Path(tmp) / "root"
        root.mkdir()
        copyright_text = stage[package](root)
        add_docs(root, package, copyright_text)
        normalize_modes(root)
        write_control(root, package, version)
        return dpkg_deb(root, out / f"{package}_{version}_{arch}.deb")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python packaging/build.py", description=(__doc__ or "").splitlines()[0]
    )
    parser.add_argument("packages", nargs="*", metavar="PACKAGE", help=f"{' or '.join(PACKAGES)}")
    parser.add_argument("--out", type=Path, required=True, help="directory for the .deb files")
    parser.add_argument(
        "--wheels", type=Path, default=ROOT / "dist/wheels", help="wheels for aptmesh-peer"
    )
    args = parser.parse_args(argv)
    if shutil.which("dpkg-deb") is None:
        print("building the packages: dpkg-deb not found (apt-get install dpkg)", file=sys.stderr)
        return 1
    unknown = sorted(set(args.packages) - set(PACKAGES))
    if unknown:
        parser.error(f"unknown package {unknown[0]} (known: {', '.join(PACKAGES)})")
    for package in args.packages or PACKAGES:
        try:
            print(build(package, args.out, args.wheels))
        except BuildError as exc:
            print(f"building {package}: {exc}", file=sys.stderr)
            return 1
        except (OSError, subprocess.CalledProcessError) as exc:
            print(f"building {package}: {exc}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    os.umask(0o022)
    sys.exit(main())
