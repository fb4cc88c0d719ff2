"""The peer's policy (aptmesh_peer/policy.py): the user's limits -> what is opened, whether
uploading is allowed now, whether a file is still seeded. Pure functions, a hand-set clock."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aptmesh_peer.policy import (
    GateState,
    Limits,
    Participation,
    PolicyError,
    Profile,
    SeedDecision,
    SeedRecord,
    TimeWindow,
    UploadLedger,
    parse_ranges,
    parse_windows,
    peer_allowed,
    seed_decision,
    swarm_plan,
    upload_gate,
)

MiB = 1024**2
NOON = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)
HOME = Limits(participation=Participation.CONTRIBUTE, upload_rate_limit=512 * 1024)
LAB = Limits(
    participation=Participation.CONTRIBUTE,
    profile=Profile.LAB,
    upload_rate_limit=512 * 1024,  # ignored: a lab has no caps
    share_ratio=1.0,
    daily_budget=1,
    lan_ranges=parse_ranges(["10.0.0.0/8", "fd00::/8"]),
)


def test_an_opted_out_peer_opens_no_swarm_and_never_uploads() -> None:
    limits = Limits(participation=Participation.OPTED_OUT, profile=Profile.LAB)
    plan = swarm_plan(limits)
    assert not plan.enabled and not plan.uploads and not plan.public
    assert upload_gate(limits, UploadLedger(), NOON).state is GateState.NEVER
    record = SeedRecord(size=MiB, uploaded=0, completed_at=NOON)
    assert seed_decision(limits, record, NOON) is SeedDecision.NEVER


def test_a_download_only_peer_joins_the_swarm_but_unchokes_nobody() -> None:
    limits = Limits(participation=Participation.DOWNLOAD_ONLY, port_mapping=True)
    plan = swarm_plan(limits)
    assert plan.enabled and plan.public and not plan.uploads
    settings = plan.libtorrent_settings()
    assert settings["unchoke_slots_limit"] == 0
    # Nothing to gain from a mapped port for a peer that gives nothing back.
    assert settings["enable_upnp"] is False and settings["enable_natpmp"] is False
    assert upload_gate(limits, UploadLedger(), NOON).state is GateState.NEVER


def test_a_home_peer_joins_the_public_swarm_under_its_cap() -> None:
    plan = swarm_plan(HOME)
    settings = plan.libtorrent_settings()
    assert settings["enable_dht"] is True
    assert settings["upload_rate_limit"] == 512 * 1024
    assert settings["unchoke_slots_limit"] == 8
    assert settings["enable_upnp"] is False  # port mapping is opt-in
    mapped = swarm_plan(Limits(participation=Participation.CONTRIBUTE, port_mapping=True))
    assert mapped.libtorrent_settings()["enable_natpmp"] is True
    assert peer_allowed(plan, "203.0.113.7")


def test_a_lab_peer_has_no_caps_and_talks_to_its_lan_only() -> None:
    plan = swarm_plan(LAB)
    settings = plan.libtorrent_settings()
    assert settings["upload_rate_limit"] == 0
    assert settings["enable_dht"] is False and settings["enable_lsd"] is True
    assert peer_allowed(plan, "10.1.2.3") and peer_allowed(plan, "fd00::5")
    assert not peer_allowed(plan, "203.0.113.7") and not peer_allowed(plan, "not-an-ip")
    spent = UploadLedger().record(10 * MiB, NOON)
    assert upload_gate(LAB, spent, NOON).open
    record = SeedRecord(size=MiB, uploaded=100 * MiB, completed_at=NOON - timedelta(days=30))
    assert seed_decision(LAB, record, NOON) is SeedDecision.SEED


def test_a_window_across_midnight_opens_at_night_and_says_when_it_changes() -> None:
    limits = Limits(participation=Participation.CONTRIBUTE, windows=parse_windows(["22:00-07:00"]))
    gate = upload_gate(limits, UploadLedger(), NOON)
    assert gate.state is GateState.OUTSIDE_WINDOW
    assert gate.until == NOON.replace(hour=22)
    night = NOON.replace(hour=23, minute=30)
    gate = upload_gate(limits, UploadLedger(), night)
    assert gate.open and gate.until == (night + timedelta(days=1)).replace(hour=7, minute=0)
    assert upload_gate(limits, UploadLedger(), NOON.replace(hour=6, minute=59)).open
    assert not upload_gate(limits, UploadLedger(), NOON.replace(hour=7)).open


def test_the_daily_budget_closes_the_gate_until_midnight_and_a_new_day_reopens_it() -> None:
    limits = Limits(participation=Participation.CONTRIBUTE, daily_budget=100 * MiB)
    ledger = UploadLedger().record(60 * MiB, NOON)
    assert upload_gate(limits, ledger, NOON).open
    ledger = ledger.record(40 * MiB, NOON + timedelta(hours=1))
    gate = upload_gate(limits, ledger, NOON + timedelta(hours=1))
    assert gate.state is GateState.DAILY_BUDGET_SPENT
    assert gate.until == datetime(2026, 12, 5, tzinfo=UTC)
    assert upload_gate(limits, ledger, datetime(2026, 12, 5, 0, 1, tzinfo=UTC)).open


def test_the_monthly_budget_outlasts_the_day_and_resets_with_the_month() -> None:
    limits = Limits(participation=Participation.CONTRIBUTE, monthly_budget=1024 * MiB)
    ledger = UploadLedger()
    for day in range(1, 5):
        ledger = ledger.record(256 * MiB, NOON.replace(day=day))
    assert ledger.month_bytes == 1024 * MiB and ledger.day_bytes == 256 * MiB
    gate = upload_gate(limits, ledger, NOON.replace(day=20))
    assert gate.state is GateState.MONTHLY_BUDGET_SPENT
    assert gate.until == datetime(2027, 1, 1, tzinfo=UTC)
    assert upload_gate(limits, ledger, datetime(2027, 1, 1, 0, 0, 1, tzinfo=UTC)).open
    assert ledger.at(datetime(2027, 1, 1, tzinfo=UTC)).total_bytes == 1024 * MiB


def test_a_file_is_seeded_until_its_ratio_or_its_time_whichever_first() -> None:
    limits = Limits(participation=Participation.CONTRIBUTE, share_ratio=2.0, seed_seconds=3600)
    fresh = SeedRecord(size=10 * MiB, uploaded=19 * MiB, completed_at=NOON)
    assert seed_decision(limits, fresh, NOON) is SeedDecision.SEED
    shared = SeedRecord(size=10 * MiB, uploaded=20 * MiB, completed_at=NOON)
    assert seed_decision(limits, shared, NOON) is SeedDecision.RATIO_REACHED
    later = NOON + timedelta(hours=1)
    assert seed_decision(limits, fresh, later) is SeedDecision.SEED_TIME_REACHED
    unlimited = Limits(participation=Participation.CONTRIBUTE)
    old = SeedRecord(size=MiB, uploaded=50 * MiB, completed_at=NOON - timedelta(days=365))
    assert seed_decision(unlimited, old, NOON) is SeedDecision.SEED


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("22:00", "HH:MM-HH:MM"),
        ("25:00-01:00", "00:00 to 23:59"),
        ("7-9", "HH:MM"),
        ("08:00-08:00", "empty time window"),
    ],
)
def test_bad_windows_are_errors_that_say_how_to_write_them(text: str, why: str) -> None:
    with pytest.raises(PolicyError, match=why):
        parse_windows([text])


def test_bad_ranges_are_errors() -> None:
    with pytest.raises(PolicyError, match="CIDR"):
        parse_ranges(["10.0.0.0/33"])


@given(
    st.times().map(lambda t: t.replace(second=0, microsecond=0)),
    st.times().map(lambda t: t.replace(second=0, microsecond=0)),
    st.times(),
)
def test_a_window_and_its_complement_cover_each_moment_once(
    start: time, end: time, moment: time
) -> None:
    if start == end:
        return
    window, complement = TimeWindow(start, end), TimeWindow(end, start)
    assert window.contains(moment) != complement.contains(moment)
    assert parse_windows([str(window)]) == (window,)


@given(st.lists(st.integers(min_value=0, max_value=10 * MiB), max_size=20))
def test_the_ledger_counts_every_byte_of_one_day(amounts: list[int]) -> None:
    ledger = UploadLedger()
    for i, amount in enumerate(amounts):
        ledger = ledger.record(amount, NOON + timedelta(minutes=i))
    assert ledger.day_bytes == ledger.month_bytes == ledger.total_bytes == sum(amounts)
