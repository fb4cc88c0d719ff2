"""A service's uplink, as it reports it to the registry and as a seeder's request-queue control
aims at it. Pure and free of libtorrent: an edge without a swarm reports its uplink too."""

from __future__ import annotations


def known_uplink(capacity: int, rate_limit: int) -> int:
    """Bytes per second: the configured capacity or the upload cap (the link a limited session
    can fill), the lower if both are set; 0 means unknown."""
    known = [v for v in (capacity, rate_limit) if v > 0]
    return min(known) if known else 0
