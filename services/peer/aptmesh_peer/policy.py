"""The peer's user-facing policy: the user's limits turned into decisions (pure; time injected).

Theory of operation. The user chose, at install (debconf) or in /etc/aptmesh/peer.env, how
this machine takes part (`Participation`), where it shares (`Profile`) and the limits of its
uploads (`Limits`). Three questions follow, each answered here by a plain function over
values, and carried out by the runtime:

- **What is opened** (`swarm_plan`, once at start): an opted-out peer runs no BitTorrent
  session at all, so it has no listening socket (it fetches from edges and the mirror); a
  download-only peer joins the swarm but unchokes nobody, so it uploads 0 bytes of payload;
  a contributing home peer joins the public swarm (DHT, local discovery) under its rate cap,
  maps a port on the router only when the user allowed it; a lab peer has no cap, no DHT and
  talks only to the LAN's address ranges (`peer_allowed`).
- **Whether uploading is allowed now** (`upload_gate`, re-asked at `Gate.until`): inside the
  time windows and the daily and monthly budgets (`UploadLedger` counts the bytes per local
  day and month); a closed gate is applied as `unchoke_slots_limit = 0`, as download-only.
- **Whether one file is still seeded** (`seed_decision`): until its share ratio or its seed
  time is reached, whichever first; a lab peer seeds without either.

The clock is a local `datetime` passed in: windows and budgets are in the user's local time.
"""

from __future__ import annotations

import enum
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, time, timedelta

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class Participation(enum.Enum):
    OPTED_OUT = "opted-out"  # no swarm, no listening socket, no upload
    DOWNLOAD_ONLY = "download-only"  # joins the swarm, never uploads
    CONTRIBUTE = "contribute"  # uploads within the limits


class Profile(enum.Enum):
    HOME = "home"  # the public swarm, within the limits
    LAB = "lab"  # the LAN's address ranges only, no caps


class GateState(enum.Enum):
    """Whether the peer may upload now, and if not, why (what `aptmesh peer status` prints)."""

    OPEN = "open"
    NEVER = "never"  # opted out or download only
    OUTSIDE_WINDOW = "outside the upload time windows"
    DAILY_BUDGET_SPENT = "daily upload budget spent"
    MONTHLY_BUDGET_SPENT = "monthly upload budget spent"


class SeedDecision(enum.Enum):
    SEED = "seed"
    NEVER = "never"  # this peer does not upload
    RATIO_REACHED = "share ratio reached"
    SEED_TIME_REACHED = "seed time reached"


class PolicyError(ValueError):
    """A limit the user wrote does not parse; the text says which and how to write it."""


@dataclass(frozen=True)
class TimeWindow:
    """[start, end) in local time; end <= start crosses midnight (22:00-07:00)."""

    start: time
    end: time

    def contains(self, moment: time) -> bool:
        if self.start < self.end:
            return self.start <= moment < self.end
        return moment >= self.start or moment < self.end

    def __str__(self) -> str:
        return f"{self.start:%H:%M}-{self.end:%H:%M}"


def parse_clock(text: str) -> time:
    hours, sep, minutes = text.strip().partition(":")
    if not (sep and hours.isdigit() and minutes.isdigit() and len(minutes) == 2):
        raise PolicyError(f"not a time of day: {text!r} (write HH:MM, such as 22:00)")
    if int(hours) == 24 and int(minutes) == 0:
        return time(0, 0)
    if not (int(hours) < 24 and int(minutes) < 60):
        raise PolicyError(f"not a time of day: {text!r} (00:00 to 23:59)")
    return time(int(hours), int(minutes))


def parse_windows(items: Sequence[str]) -> tuple[TimeWindow, ...]:
    """`("22:00-07:00", "12:00-13:00")` -> windows; none means uploading at any time."""
    windows = []
    for item in items:
        start, sep, end = item.strip().partition("-")
        if not sep:
            raise PolicyError(f"not a time window: {item!r} (write HH:MM-HH:MM, as 22:00-07:00)")
        window = TimeWindow(parse_clock(start), parse_clock(end))
        if window.start == window.end:
            raise PolicyError(f"empty time window: {item!r} (start and end are equal)")
        windows.append(window)
    return tuple(windows)


def parse_ranges(items: Sequence[str]) -> tuple[IPNetwork, ...]:
    try:
        return tuple(ipaddress.ip_network(item.strip(), strict=False) for item in items)
    except ValueError as exc:
        raise PolicyError(f"not an address range: {exc} (write CIDR, as 192.168.0.0/16)") from None


@dataclass(frozen=True)
class Limits:
    participation: Participation = Participation.OPTED_OUT
    profile: Profile = Profile.HOME
    upload_rate_limit: int = 0  # bytes per second over all peers, 0: no cap
    share_ratio: float = 0.0  # per file, uploaded / size, 0: no limit
    seed_seconds: float = 0.0  # per file, since it arrived, 0: no limit
    windows: tuple[TimeWindow, ...] = ()  # local time; none: any time
    daily_budget: int = 0  # bytes per local day, 0: none
    monthly_budget: int = 0  # bytes per calendar month, 0: none
    port_mapping: bool = False  # UPnP / NAT-PMP on the router
    lan_ranges: tuple[IPNetwork, ...] = ()

    @property
    def uploads(self) -> bool:
        return self.participation is Participation.CONTRIBUTE

    @property
    def lab(self) -> bool:
        return self.uploads and self.profile is Profile.LAB


@dataclass(frozen=True)
class SwarmPlan:
    """What the runtime opens at start: a BitTorrent session or none, and its settings."""

    enabled: bool  # False: no session, so no listening socket at all
    public: bool  # DHT and public trackers
    local_discovery: bool  # LSD multicast on the LAN
    port_mapping: bool  # UPnP and NAT-PMP
    upload_rate_limit: int  # 0: no cap (only meaningful when uploads happen)
    uploads: bool  # False: unchoke nobody
    allowed_ranges: tuple[IPNetwork, ...] | None  # None: any address

    def libtorrent_settings(self) -> dict[str, int | bool | str]:
        """The settings_pack entries this plan fixes (the swarm wrapper applies them)."""
        return {
            "enable_dht": self.public,
            "enable_lsd": self.local_discovery,
            "enable_upnp": self.port_mapping,
            "enable_natpmp": self.port_mapping,
            "upload_rate_limit": self.upload_rate_limit,
            **self.upload_switch(self.uploads),
        }

    def upload_switch(self, open_: bool) -> dict[str, int | bool | str]:
        """Uploads on (libtorrent's 8 unchoke slots) or off: no peer unchoked, so no payload
        leaves. libtorrent exempts peers on a local network from the unchoke limit and the
        rate cap unless told not to (measured: without it a closed peer still sent a whole
        file over loopback), so the exemption goes whenever a limit must hold."""
        return {
            "unchoke_slots_limit": 8 if open_ else 0,
            "ignore_limits_on_local_network": open_ and not self.upload_rate_limit,
        }


def swarm_plan(limits: Limits) -> SwarmPlan:
    if limits.participation is Participation.OPTED_OUT:
        return SwarmPlan(False, False, False, False, 0, False, None)
    if limits.participation is Participation.DOWNLOAD_ONLY:
        return SwarmPlan(True, True, True, False, 0, False, None)
    if limits.lab:
        return SwarmPlan(True, False, True, False, 0, True, limits.lan_ranges)
    return SwarmPlan(True, True, True, limits.port_mapping, limits.upload_rate_limit, True, None)


def peer_allowed(plan: SwarmPlan, address: str) -> bool:
    """Whether the swarm may talk to `address` (a lab peer: its LAN ranges only)."""
    if plan.allowed_ranges is None:
        return True
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in plan.allowed_ranges)


@dataclass(frozen=True)
class UploadLedger:
    """Payload bytes uploaded in the current local day and month (kept in the state dir)."""

    day: str = ""  # YYYY-MM-DD
    month: str = ""  # YYYY-MM
    day_bytes: int = 0
    month_bytes: int = 0
    total_bytes: int = field(default=0)

    def at(self, now: datetime) -> UploadLedger:
        """The ledger as of `now`: a new day or month starts from 0."""
        day, month = f"{now:%Y-%m-%d}", f"{now:%Y-%m}"
        ledger = self
        if ledger.month != month:
            ledger = replace(ledger, month=month, month_bytes=0)
        if ledger.day != day:
            ledger = replace(ledger, day=day, day_bytes=0)
        return ledger

    def record(self, uploaded: int, now: datetime) -> UploadLedger:
        if uploaded < 0:
            raise ValueError("uploaded bytes cannot be negative")
        ledger = self.at(now)
        return replace(
            ledger,
            day_bytes=ledger.day_bytes + uploaded,
            month_bytes=ledger.month_bytes + uploaded,
            total_bytes=ledger.total_bytes + uploaded,
        )


@dataclass(frozen=True)
class Gate:
    state: GateState
    until: datetime | None  # when to ask again (None: the answer does not change with time)

    @property
    def open(self) -> bool:
        return self.state is GateState.OPEN


def _next_midnight(now: datetime) -> datetime:
    return datetime.combine(now.date() + timedelta(days=1), time(0), now.tzinfo)


def _next_month(now: datetime) -> datetime:
    year, month = (now.year + 1, 1) if now.month == 12 else (now.year, now.month + 1)
    return now.replace(year=year, month=month, day=1, hour=0, minute=0, second=0, microsecond=0)


def _next_window_edge(windows: Sequence[TimeWindow], now: datetime) -> datetime:
    """The first start or end of a window after `now`."""
    edges = []
    for window in windows:
        for moment in (window.start, window.end):
            candidate = datetime.combine(now.date(), moment, now.tzinfo)
            if candidate <= now:
                candidate += timedelta(days=1)
            edges.append(candidate)
    return min(edges)


def upload_gate(limits: Limits, ledger: UploadLedger, now: datetime) -> Gate:
    """Whether the peer may upload at `now`, given what it uploaded this day and month."""
    if not limits.uploads:
        return Gate(GateState.NEVER, None)
    if limits.lab:
        return Gate(GateState.OPEN, None)
    ledger = ledger.at(now)
    if limits.monthly_budget and ledger.month_bytes >= limits.monthly_budget:
        return Gate(GateState.MONTHLY_BUDGET_SPENT, _next_month(now))
    if limits.daily_budget and ledger.day_bytes >= limits.daily_budget:
        return Gate(GateState.DAILY_BUDGET_SPENT, _next_midnight(now))
    if limits.windows:
        edge = _next_window_edge(limits.windows, now)
        if not any(window.contains(now.time()) for window in limits.windows):
            return Gate(GateState.OUTSIDE_WINDOW, edge)
        return Gate(GateState.OPEN, edge)
    if limits.daily_budget or limits.monthly_budget:
        # Open until the budget is spent: the runtime asks again as bytes are counted.
        return Gate(GateState.OPEN, _next_midnight(now))
    return Gate(GateState.OPEN, None)


def budget_left(limits: Limits, ledger: UploadLedger, now: datetime) -> int | None:
    """Bytes that may still be uploaded today and this month (None: no budget)."""
    ledger = ledger.at(now)
    left = []
    if limits.daily_budget:
        left.append(max(0, limits.daily_budget - ledger.day_bytes))
    if limits.monthly_budget:
        left.append(max(0, limits.monthly_budget - ledger.month_bytes))
    return min(left) if left else None


@dataclass(frozen=True)
class SeedRecord:
    """One file the peer seeds: its size, what it uploaded of it, when it was complete."""

    size: int
    uploaded: int
    completed_at: datetime


def seed_decision(limits: Limits, record: SeedRecord, now: datetime) -> SeedDecision:
    if not limits.uploads:
        return SeedDecision.NEVER
    if limits.lab:
        return SeedDecision.SEED
    if limits.share_ratio and record.size and record.uploaded >= limits.share_ratio * record.size:
        return SeedDecision.RATIO_REACHED
    if limits.seed_seconds and (now - record.completed_at).total_seconds() >= limits.seed_seconds:
        return SeedDecision.SEED_TIME_REACHED
    return SeedDecision.SEED
