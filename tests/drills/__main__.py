"""`make drills`: the full fault drills against a freshly built signed repository, as a table.

Usage: python -m tests.drills [--small] [DRILL ...]. Exit status 1 when a drill broke a
promise (an apt failure, a hung run, corrupt bytes or entries, no recovery), 0 otherwise.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from aptmesh.debrepo import SigningKey, build_repo
from tests.drills.drills import DRILLS
from tests.drills.harness import FULL, SMALL, Row

HEADER = (
    "drill",
    "runs",
    "apt failures",
    "hung runs",
    "corrupt bytes served",
    "corrupt cache entries",
    "recovery time",
)


def broken(row: Row) -> bool:
    return bool(
        row.apt_failures or row.hung or row.corrupt_bytes or row.corrupt_entries or row.notes
    )


def table(rows: list[Row]) -> str:
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    for r in rows:
        recovery = f"{r.recovery_s:.1f} s" if r.recovery_s is not None else "-"
        cells = (
            r.drill,
            r.runs,
            r.apt_failures,
            r.hung,
            r.corrupt_bytes,
            r.corrupt_entries,
            recovery,
        )
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.drills", description=__doc__)
    parser.add_argument("--small", action="store_true", help="the make test sizes")
    parser.add_argument("drills", nargs="*", choices=[[], *DRILLS], metavar="DRILL")
    args = parser.parse_args(argv)
    size = SMALL if args.small else FULL
    rows = []
    with tempfile.TemporaryDirectory(prefix="aptmesh-drills-") as tmp_name:
        tmp = Path(tmp_name)
        key = SigningKey.generate(tmp / "key")
        repo = build_repo(tmp / "repo" / "debian", key, mutable=False)
        repo.server.start()
        try:
            for name in args.drills or DRILLS:
                began = time.monotonic()
                row = DRILLS[name](repo, tmp / name, size)
                rows.append(row)
                print(f"{name}: {time.monotonic() - began:.0f} s", file=sys.stderr, flush=True)
                for note in row.notes:
                    print(f"  {note}", file=sys.stderr)
        finally:
            repo.close()
            key.close()
    print(table(rows))
    return 1 if any(broken(r) for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
