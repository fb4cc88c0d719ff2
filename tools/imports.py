"""The import contracts of DESIGN.md's layout rule, checked on the source tree (`make check`).

Each package's modules are read with `ast` (nothing is imported or run) and
every `import`/`from ... import` is held to its package's contract:

- the core (`aptmesh`) imports no service, no client and not the CLI;
- the apt method (`aptmesh_apt_method`) imports nothing but the standard library
  (of Python 3.9, the oldest its clients run: Debian 11 and Ubuntu 22.04's
  3.10 and up) and itself;
- a service uses another service only through the tracker's client and its
  shared records (`aptmesh_tracker.client`, `aptmesh_tracker.records`);
- only `aptmesh_cli` (the composition of every service) and the tests may
  import everything.

`python tools/imports.py [ROOT]` prints one line per broken contract, "FILE:LINE:
PACKAGE may not import NAME (the rule)", and exits 1 if there is any.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

# Package -> its folder, relative to the repository root.
PACKAGES = {
    "aptmesh": "aptmesh",
    "aptmesh_tracker": "services/tracker/aptmesh_tracker",
    "aptmesh_seeder": "services/seeder/aptmesh_seeder",
    "aptmesh_edge": "services/edge/aptmesh_edge",
    "aptmesh_peer": "services/peer/aptmesh_peer",
    "aptmesh_apt_method": "clients/apt/aptmesh_apt_method",
    "aptmesh_cli": "cli/aptmesh_cli",
}
SERVICES = ("aptmesh_tracker", "aptmesh_seeder", "aptmesh_edge", "aptmesh_peer")
# What one service may use of another.
SHARED = ("aptmesh_tracker.client", "aptmesh_tracker.records")
# The standard library of the oldest Python the apt method supports.
METHOD_PYTHON = (3, 9)
# Names added to the standard library after 3.9 (sys.stdlib_module_names is 3.10+,
# and it lists the running interpreter's modules).
NEWER_STDLIB = {"tomllib": (3, 11), "wsgiref.types": (3, 11)}


@dataclass(frozen=True)
class Violation:
    path: Path
    line: int
    package: str
    name: str
    rule: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.package} may not import {self.name} ({self.rule})"


def imported_names(tree: ast.Module) -> Iterator[tuple[int, str]]:
    """(line, absolute dotted name) of every import; relative imports are reported as such."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                yield node.lineno, "." * node.level + (node.module or "")
            elif node.module == "__future__":
                continue
            elif node.module is not None:
                # "from a.b import c" may import the module a.b.c: name both.
                for alias in node.names:
                    yield node.lineno, f"{node.module}.{alias.name}"


def top(name: str) -> str:
    return name.split(".", 1)[0]


def is_stdlib(name: str) -> bool:
    root = top(name)
    if root in NEWER_STDLIB and NEWER_STDLIB[root] > METHOD_PYTHON:
        return False
    return root in sys.stdlib_module_names


def rule_for(package: str, name: str) -> str | None:
    """Why `package` may not import `name`, or None if it may."""
    if name.startswith("."):
        return "one name per module: import absolutely"
    target = top(name)
    if package == "aptmesh":
        if target in PACKAGES and target != "aptmesh":
            return "the core imports no service"
        return None
    if package == "aptmesh_apt_method":
        if target == package or is_stdlib(name):
            return None
        major, minor = METHOD_PYTHON
        return f"the apt method imports only the standard library of Python {major}.{minor}"
    if package in SERVICES:
        if target == "aptmesh_cli" or target == "aptmesh_apt_method":
            return "a service does not import the CLI or the apt method"
        if target in SERVICES and target != package:
            if any(name == s or name.startswith(s + ".") for s in SHARED):
                return None
            return "services use one another only through the tracker's client and records"
    return None


def check(root: Path) -> list[Violation]:
    found: list[Violation] = []
    for package, folder in PACKAGES.items():
        for path in sorted((root / folder).rglob("*.py")):
            if path.name.endswith(("_pb2.py", "_pb2_grpc.py")):
                continue
            tree = ast.parse(path.read_bytes(), filename=str(path))
            for line, name in imported_names(tree):
                rule = rule_for(package, name)
                if rule is not None:
                    found.append(Violation(path.relative_to(root), line, package, name, rule))
    return found


def main(argv: list[str]) -> int:
    root = Path(argv[0]) if argv else Path(__file__).resolve().parent.parent
    violations = check(root)
    for violation in violations:
        print(violation)
    if violations:
        print(f"{len(violations)} broken import contract(s)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
