"""Which files of apt's archive cache the peer may seed; the status a user reads; the
upload ledger on disk."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from aptmesh_peer import ledger
from aptmesh_peer.archives import pool_name
from aptmesh_peer.policy import GateState, UploadLedger
from aptmesh_peer.status import PeerStatus, render


def test_the_epoch_apt_writes_as_percent_3a_is_not_in_the_pool_name() -> None:
    assert pool_name("bash_5.2.15-2+b2_amd64.deb") == "bash_5.2.15-2+b2_amd64.deb"
    assert pool_name("libc6_1%3a2.36-9_amd64.deb") == "libc6_2.36-9_amd64.deb"
    assert pool_name("lock") is None
    assert pool_name("partial") is None
    assert pool_name("notes.txt") is None


STATUS = PeerStatus(
    participation="contribute",
    profile="home",
    from_peers_bytes=30 * 1024**2,
    from_edges_bytes=0,
    from_mirror_bytes=10 * 1024**2,
    uploaded_today_bytes=100 * 1024**2,
    uploaded_month_bytes=1024**3,
    uploaded_total_bytes=2 * 1024**3,
    upload_rate_limit=512 * 1024,
    daily_budget=100 * 1024**2,
    monthly_budget=0,
    gate=GateState.DAILY_BUDGET_SPENT.value,
    seeding=12,
    listening=True,
    reachable=False,
)


def test_status_says_where_bytes_came_from_and_what_was_uploaded_against_the_limits() -> None:
    text = render(STATUS)
    assert (
        "downloaded:    40.0 MiB: 30.0 MiB from peers, 0 B from edges, 10.0 MiB from the mirror"
        in text
    )
    assert "today 100.0 MiB of 100.0 MiB, this month 1.0 GiB (no budget)" in text
    assert "rate 512.0 KiB/s" in text
    assert "uploading:     paused: daily upload budget spent, 12 files seeded" in text
    assert "reachable:     not yet seen" in text
    assert PeerStatus.from_json(STATUS.to_json()) == STATUS


def test_status_of_an_opted_out_peer_says_it_uploads_nothing_and_listens_nowhere() -> None:
    quiet = PeerStatus(
        **{**STATUS.__dict__, "participation": "opted-out", "listening": False, "reachable": None}
    )
    text = render(quiet)
    assert "uploaded:      nothing" in text and "no listening port" in text
    assert "paused" not in text


def test_the_ledger_survives_a_restart_and_a_bad_file_is_named(tmp_path: Path) -> None:
    assert ledger.load(tmp_path) == UploadLedger()
    now = datetime(2026, 12, 4, 12, tzinfo=UTC)
    kept = UploadLedger().record(12345, now)
    ledger.save(tmp_path, kept)
    assert ledger.load(tmp_path) == kept
    assert not list(tmp_path.glob(".*.tmp"))
    (tmp_path / ledger.NAME).write_text("{")
    with pytest.raises(ledger.LedgerError, match=str(tmp_path / ledger.NAME)):
        ledger.load(tmp_path)
