"""Installs the method into a root directory (`/`, a chroot, a package's staging tree).

What lands under ROOT:

  usr/lib/apt/methods/mesh          a small executable script (#!PYTHON -ISu)
  usr/lib/apt/methods/mesh+http     -> mesh
  usr/lib/apt/methods/mesh+https    -> mesh
  usr/lib/aptmesh/aptmesh_apt_method/*.py   the method's code (standard library only),
                                    and its bytecode for PYTHON (unless bytecode=False)
  etc/apt/apt.conf.d/50mesh         the documented settings (kept if it exists)

The script finds its code relative to its own real path, so a tree installed
under any ROOT runs as it is, and nothing else needs to be installed.

Start-up is paid on every apt run (apt starts the method twice), so the
script runs isolated and without site (`-I -S`: the method needs nothing
outside the standard library, and no .pth file or PYTHON* variable can slow
or change it), and its bytecode is compiled here once: the method never
writes bytecode itself (it may run as root in a tree it should not touch).
The Debian package ships no bytecode (yet: a postinst would compile it).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
PRIVATE_PACKAGE = "aptmesh_apt_method"
# What the method needs at run time: every one of these is standard library only.
RUNTIME_MODULES = (
    "__init__.py",
    "__main__.py",
    "capabilities.py",
    "config.py",
    "edges.py",
    "fetch.py",
    "httpclient.py",
    "main.py",
    "message.py",
    "method.py",
    "privileges.py",
    "uris.py",
)
METHOD_NAMES = ("mesh+http", "mesh+https")
CONF_NAME = "50mesh"
SYSTEM_PYTHON = "/usr/bin/python3"

# -I -S -u in one word: Linux passes everything after the interpreter as one argument.
SCRIPT = """\
#!{python} -ISu
# aptmesh apt method: apt runs this as mesh, mesh+http and mesh+https.
# Installed by aptmesh (install-apt-method, or the aptmesh-apt-method package).
import os
import sys

sys.dont_write_bytecode = True
sys.path.insert(
    0, os.path.join(os.path.dirname(os.path.realpath(__file__)), "..", "..", "aptmesh")
)
from {package}.main import main  # noqa: E402

sys.exit(main())
"""


def apt_conf(edges: Sequence[str] = (), zone: str | None = None) -> str:
    """The apt.conf.d snippet; settings given here are written active, others as examples."""
    edges_line = f'Acquire::mesh::Edges "{" ".join(edges)}";'
    if not edges:
        edges_line = (
            "// "
            + 'Acquire::mesh::Edges "http://edge-a.example.org:3142 http://edge-b.example.org:3142";'
        )
    zone_line = f'Acquire::mesh::Zone "{zone}";' if zone else '// Acquire::mesh::Zone "zone-a";'
    return f"""\
// aptmesh apt method (mesh+http, mesh+https).
//
// A source written "deb mesh+http://deb.example.org/debian bookworm main" is
// fetched through the nearest healthy aptmesh edge, as
// http://EDGE/deb.example.org/debian/..., with the other edges and finally
// deb.example.org itself as fallbacks. apt verifies every file as usual; with
// no edge reachable apt goes straight to the mirror.

// Edges to start from, comma or space separated ("http://" is assumed). The
// edges also tell the method about every other live edge. Give each edge
// its own host name (or address): apt falls back only between different
// hosts, not between ports of one host.
{edges_line}

// Prefer edges in this zone (the zone each edge reports), then the closest.
{zone_line}

// Seconds the chosen edges are reused (cached in Dir::State/mesh-edges.json);
// how long a health probe may take; whether to ask edges for the edge list.
// Acquire::mesh::Cache-Seconds "60";
// Acquire::mesh::Probe-Timeout "0.5";
// Acquire::mesh::Discover "true";

// Diagnostics on stderr (and as "101 Log" for Debug::pkgAcquire::Worker).
// Debug::Acquire::mesh "true";

// Let apt queue more requests per method than its default of 10, so edges
// can fetch many packages from the swarm at once.
Acquire::Max-Pipeline-Depth "50";
"""


def install(
    root: Path,
    python: str = sys.executable,
    *,
    edges: Sequence[str] = (),
    zone: str | None = None,
    overwrite_config: bool = False,
    bytecode: bool = True,
) -> list[Path]:
    """Installs the method under `root`; returns every path it wrote or linked."""
    root = Path(root)
    written: list[Path] = []
    lib = root / "usr/lib/aptmesh" / PRIVATE_PACKAGE
    lib.mkdir(parents=True, exist_ok=True)
    for name in RUNTIME_MODULES:
        dest = lib / name
        shutil.copyfile(PACKAGE_DIR / name, dest)
        dest.chmod(0o644)
        written.append(dest)
    if bytecode:
        compile_bytecode(lib, python)

    methods = root / "usr/lib/apt/methods"
    methods.mkdir(parents=True, exist_ok=True)
    script = methods / "mesh"
    _write_atomic(script, SCRIPT.format(python=python, package=PRIVATE_PACKAGE), 0o755)
    written.append(script)
    for name in METHOD_NAMES:
        link = methods / name
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to("mesh")
        written.append(link)

    conf = root / "etc/apt/apt.conf.d" / CONF_NAME
    conf.parent.mkdir(parents=True, exist_ok=True)
    if overwrite_config or not conf.exists():
        _write_atomic(conf, apt_conf(edges, zone), 0o644)
    written.append(conf)
    return written


def compile_bytecode(lib: Path, python: str) -> None:
    """Compiles the method's modules for `python`; without it (or on failure) they still run."""
    if not os.access(python, os.X_OK):
        return
    # An optimisation only: without bytecode the method compiles in memory.
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        subprocess.run(
            [python, "-I", "-m", "compileall", "-q", str(lib)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=120,
            check=False,
        )


def _write_atomic(path: Path, text: str, mode: int) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    tmp.chmod(mode)
    os.replace(tmp, path)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="aptmesh install-apt-method",
        description="Install the aptmesh apt method (mesh+http, mesh+https) into a root.",
    )
    parser.add_argument("--root", type=Path, default=Path("/"), help="target root (default /)")
    parser.add_argument(
        "--python",
        default=SYSTEM_PYTHON if os.path.exists(SYSTEM_PYTHON) else sys.executable,
        help=f"interpreter for the method's #! line (default {SYSTEM_PYTHON})",
    )
    parser.add_argument("--edges", nargs="*", default=[], help="edge URLs for 50mesh")
    parser.add_argument("--zone", default=None, help="zone to prefer, for 50mesh")
    parser.add_argument(
        "--overwrite-config", action="store_true", help="replace an existing 50mesh"
    )
    args = parser.parse_args(argv)
    try:
        paths = install(
            args.root,
            args.python,
            edges=args.edges,
            zone=args.zone,
            overwrite_config=args.overwrite_config,
        )
    except OSError as exc:
        print(f"install-apt-method: installing into {args.root}: {exc}", file=sys.stderr)
        return 1
    for path in paths:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
