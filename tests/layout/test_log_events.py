"""One log-event naming scheme across services: snake_case `<subject>_<past participle>`
(`sync_failed`, `edge_registered`), no service prefix (aptmesh.logs binds the service)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FOLDERS = ("aptmesh", "services", "cli")
LEVELS = {"debug", "info", "warning", "error", "exception", "critical"}
EVENT = re.compile(r"[a-z][a-z0-9]*(_[a-z0-9]+)+")


def events() -> list[tuple[str, int, str]]:
    found = []
    for folder in FOLDERS:
        for path in sorted((ROOT / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_bytes())):
                if (
                    isinstance(node, ast.Call)
                    and isinstance(node.func, ast.Attribute)
                    and node.func.attr in LEVELS
                    and isinstance(node.func.value, ast.Name)
                    and node.func.value.id == "log"
                    and node.args
                ):
                    # Every literal the event can be (`"a" if x else "b"` too); an event
                    # passed in a variable is checked where its literals are written.
                    for part in ast.walk(node.args[0]):
                        if isinstance(part, ast.Constant) and isinstance(part.value, str):
                            found.append((str(path.relative_to(ROOT)), node.lineno, part.value))
    return found


def test_every_log_event_follows_the_scheme() -> None:
    seen = events()
    assert len(seen) > 50  # the scan finds the services' log calls
    wrong = [f"{path}:{line}: {name!r}" for path, line, name in seen if not EVENT.fullmatch(name)]
    assert wrong == []
