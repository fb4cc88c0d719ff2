"""`aptmesh edge`: read the configuration, set up logging, run the edge until signalled."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from aptmesh import config as aptconfig
from aptmesh import lifecycle, logs
from aptmesh_edge.config import EdgeConfig

DESCRIPTION = (
    "apt-facing cache compatible with apt-cacher-ng (port 3142) that fetches large "
    "package files from the swarm"
)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        config = aptconfig.load(EdgeConfig, "edge", args, os.environ, description=DESCRIPTION)
    except aptconfig.ConfigError as exc:
        print(f"aptmesh edge: {exc}", file=sys.stderr)
        return 2
    logs.configure("edge", config.log_level, config.log_format)
    from aptmesh_edge.app import run

    try:
        return lifecycle.run(lambda stop: run(config, stop))
    except OSError as exc:
        logs.get(__name__).error("edge_failed", error=str(exc))
        print(f"aptmesh edge: starting: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
