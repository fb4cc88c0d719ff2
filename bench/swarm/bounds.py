"""The physical limits a distribution run is measured against (pure functions).

Rates are goodput in bytes per second, sizes in bytes, times in seconds. A
missing download cap is `math.inf`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence


def kumar_ross(
    size: int, server_up: float, peer_up: Sequence[float], peer_down: Sequence[float]
) -> float:
    """Kumar & Ross (2006): the minimum time to give every peer the file.

    max{F/u_s, F/d_min, N*F/(u_s + sum u_i)}; reachable in the fluid model.
    """
    n = len(peer_up)
    d_min = min(peer_down, default=math.inf)
    return max(size / server_up, size / d_min, n * size / (server_up + sum(peer_up)))


def mundinger(t_kr: float, peers: int, pieces: int) -> float:
    """The discrete correction (Mundinger, Weber & Weiss 2008): T*(1 + floor(log2 N)/M)."""
    if peers < 1 or pieces < 1:
        return t_kr
    return t_kr * (1 + math.floor(math.log2(peers)) / pieces)


def client_server(size: int, server_up: float, peers: int, peer_down: Sequence[float]) -> float:
    """Every peer fetching from the server alone: max{N*F/u_s, F/d_min}."""
    d_min = min(peer_down, default=math.inf)
    return max(peers * size / server_up, size / d_min)
