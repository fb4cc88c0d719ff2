"""`aptmesh peer`: the peer of one machine (home or lab profile); `aptmesh peer status`."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from aptmesh import config as aptconfig
from aptmesh_peer.config import PeerConfig
from aptmesh_peer.policy import swarm_plan

DESCRIPTION = (
    "a small edge on this machine: apt fetches through it on loopback; it seeds what apt "
    "downloaded within the user's limits (or never, or on the LAN only)"
)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        config = aptconfig.load(PeerConfig, "peer", args, os.environ, description=DESCRIPTION)
    except aptconfig.ConfigError as exc:
        print(f"aptmesh peer: {exc}", file=sys.stderr)
        return 2
    plan = swarm_plan(config.limits())
    # Serving apt needs the edge's composition root (issue 18, step 4): until it is built
    # on, say so plainly rather than run half a peer.
    print(
        f"aptmesh peer: participation {config.participation}, profile {config.profile}, "
        f"BitTorrent {'on' if plan.enabled else 'off (no listening socket)'}; serving apt "
        "is not built yet",
        file=sys.stderr,
    )
    return 1


if __name__ == "__main__":
    sys.exit(main())
