"""The `aptmesh` command: one subcommand per service, plus `up` and installers.

Each subcommand's module is imported only when it runs, so `aptmesh --help`
stays fast and a service's dependencies load only for that service.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

SUBCOMMANDS = {
    "tracker": ("aptmesh_tracker.main", "package index, BitTorrent tracker and edge registry"),
    "seeder": ("aptmesh_seeder.main", "seed box: watch repositories and seed their packages"),
    "edge": ("aptmesh_edge.main", "apt-facing cache that fetches large packages from the swarm"),
    "peer": (
        "aptmesh_cli.peer",
        "this machine's peer: apt on loopback, sharing within the user's limits",
    ),
    "collection": (
        "aptmesh_cli.collection",
        "define, update, list, show, delete collections; their status on the edges",
    ),
    "up": ("aptmesh_cli.up", "run a whole mesh (tracker, seeder, edge) on this machine"),
    "status": ("aptmesh_cli.status", "the whole mesh in one screen, from the tracker"),
    "install-apt-method": (
        "aptmesh_apt_method.install",
        "install the mesh apt method into a root directory",
    ),
}


def usage() -> str:
    lines = ["usage: aptmesh COMMAND [options]   (aptmesh COMMAND --help for its options)", ""]
    lines += [f"  {name:<20} {help_}" for name, (_, help_) in SUBCOMMANDS.items()]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in {"-h", "--help", "help"}:
        sys.stdout.write(usage())
        return 0
    if args[0] == "--version":
        from aptmesh import __version__

        print(f"aptmesh {__version__}")
        return 0
    entry = SUBCOMMANDS.get(args[0])
    if entry is None:
        sys.stderr.write(f"aptmesh: unknown command {args[0]!r}\n\n{usage()}")
        return 2
    module = importlib.import_module(entry[0])
    result: int = module.main(args[1:])
    return result


if __name__ == "__main__":
    sys.exit(main())
