"""`aptmesh peer status`: what the peer did, against the user's limits, as text (pure).

The running peer answers with a `PeerStatus` (JSON on its loopback HTTP port); this module
turns one into the lines a user reads, and round-trips it through JSON.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

from aptmesh_peer.policy import GateState, Limits, Participation, Profile


@dataclass(frozen=True)
class PeerStatus:
    participation: str
    profile: str
    from_peers_bytes: int  # package bytes that came over BitTorrent
    from_edges_bytes: int  # from the site's edges
    from_mirror_bytes: int  # from the upstream mirror
    uploaded_today_bytes: int
    uploaded_month_bytes: int
    uploaded_total_bytes: int
    upload_rate_limit: int
    daily_budget: int
    monthly_budget: int
    gate: str  # a GateState value
    seeding: int  # files seeded now
    listening: bool  # a BitTorrent listening socket is open
    reachable: bool | None  # an incoming connection was seen (None: not listening)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> PeerStatus:
        data: dict[str, Any] = json.loads(text)
        return cls(**{name: data[name] for name in cls.__dataclass_fields__})


def human(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def _of(used: int, budget: int) -> str:
    return f"{human(used)} of {human(budget)}" if budget else f"{human(used)} (no budget)"


def render(status: PeerStatus) -> str:
    participation = Participation(status.participation)
    lines = [f"participation: {participation.value} ({Profile(status.profile).value} profile)"]
    fetched = status.from_peers_bytes + status.from_edges_bytes + status.from_mirror_bytes
    lines.append(
        f"downloaded:    {human(fetched)}: {human(status.from_peers_bytes)} from peers, "
        f"{human(status.from_edges_bytes)} from edges, {human(status.from_mirror_bytes)} "
        "from the mirror"
    )
    if participation is Participation.CONTRIBUTE:
        cap = f"{human(status.upload_rate_limit)}/s" if status.upload_rate_limit else "no cap"
        lines.append(
            f"uploaded:      today {_of(status.uploaded_today_bytes, status.daily_budget)}, "
            f"this month {_of(status.uploaded_month_bytes, status.monthly_budget)}, "
            f"{human(status.uploaded_total_bytes)} in all; rate {cap}"
        )
        gate = GateState(status.gate)
        lines.append(
            f"uploading:     {'yes' if gate is GateState.OPEN else 'paused: ' + gate.value}, "
            f"{status.seeding} files seeded"
        )
    else:
        lines.append("uploaded:      nothing (this machine does not upload)")
    if not status.listening:
        lines.append("reachable:     no listening port (not taking part)")
    elif status.reachable:
        lines.append("reachable:     yes (other peers have connected)")
    else:
        lines.append("reachable:     not yet seen (behind a NAT without a mapped port?)")
    return "\n".join(lines) + "\n"


def limits_summary(limits: Limits) -> dict[str, int]:
    """The limits a status reports beside what was used."""
    return {
        "upload_rate_limit": 0 if limits.lab else limits.upload_rate_limit,
        "daily_budget": 0 if limits.lab else limits.daily_budget,
        "monthly_budget": 0 if limits.lab else limits.monthly_budget,
    }
