"""The pure policies of a swarm download: when the upstream joins as web seed, and whose bytes
a piece holds; and a download's record of where its bytes came from."""

from __future__ import annotations

from pathlib import Path

from aptmesh_edge.checked import DownloadFailed
from aptmesh_edge.decisions import FallbackReason, SourceKind
from aptmesh_edge.downloads import Download
from aptmesh_edge.sources import (
    STREAM_MIN_PIECES,
    STREAM_PATIENCE,
    SwarmProgress,
    WebSeedPolicy,
    stream_window,
    web_seed_reason,
    web_seed_share,
)

POLICY = WebSeedPolicy(delay=2.0, stall=2.0, min_rate=1_000_000)
HEALTHY = SwarmProgress(
    elapsed=10.0, since_piece=0.1, peers=5, seeds=1, peer_rate=5e6, done=1000, size=10_000
)


def at(**changes: float) -> FallbackReason | None:
    fields = {**HEALTHY.__dict__, **changes}
    return web_seed_reason(SwarmProgress(**fields), POLICY)


def test_a_swarm_that_keeps_up_never_calls_the_mirror() -> None:
    assert at() is None


def test_nothing_is_judged_before_the_delay() -> None:
    assert at(elapsed=1.9, peers=0, seeds=0, since_piece=1.9, peer_rate=0) is None


def test_the_mirror_joins_when_the_swarm_cannot_keep_up() -> None:
    assert (
        at(elapsed=2.0, peers=0, seeds=0, since_piece=2.0, peer_rate=0)
        is FallbackReason.WEBSEED_NO_PEERS
    )
    assert at(elapsed=2.0, seeds=0) is FallbackReason.WEBSEED_NO_SEED
    assert at(since_piece=2.0) is FallbackReason.WEBSEED_STALLED
    assert at(peer_rate=999_999) is FallbackReason.WEBSEED_SLOW


def test_a_slow_start_is_not_slow_until_twice_the_delay() -> None:
    assert at(elapsed=3.9, peer_rate=10) is None
    assert at(elapsed=4.0, peer_rate=10) is FallbackReason.WEBSEED_SLOW


def test_a_finished_download_needs_nothing() -> None:
    assert at(done=10_000, peers=0, seeds=0, since_piece=60.0, peer_rate=0) is None


def test_web_seed_share_follows_the_totals_and_adds_up() -> None:
    assert web_seed_share(0, 0, 100, peer=500, web=0) == 0  # no web seed: all the swarm's
    assert web_seed_share(0, 0, 100, peer=0, web=300) == 100  # only the web seed sent bytes
    # A third from the web seed: pieces are split so the running total follows the third.
    written = web_total = 0
    for _ in range(30):
        web = web_seed_share(written, web_total, 100, peer=2000, web=1000)
        assert 0 <= web <= 100
        written, web_total = written + 100, web_total + web
    assert web_total == 1000
    # Never more than the web seed sent.
    assert web_seed_share(0, 0, 100, peer=1, web=10) == 10


async def test_a_download_remembers_which_source_wrote_which_bytes(tmp_path: Path) -> None:
    download = Download("k", tmp_path / "t", None)
    swarm, upstream = SourceKind.SWARM, SourceKind.UPSTREAM
    download.begin(None, "", swarm)
    download.write(b"a" * 10)
    download.write(b"b" * 5, upstream)
    download.write(b"c" * 5, upstream)
    download.write(b"d" * 10, swarm)
    assert download.sources(0, 30) == [(swarm, 10), (upstream, 10), (swarm, 10)]
    assert download.sources(5, 12) == [(swarm, 5), (upstream, 2)]
    assert download.sources(10, 20) == [(upstream, 10)]
    assert download.sources(25, 30) == [(swarm, 5)]
    download.rewind(0)
    download.write(b"e" * 4)
    assert download.sources(0, 4) == [(swarm, 4)]
    download.fail(DownloadFailed(502, "done"))


def test_no_deadlines_until_the_client_has_waited() -> None:
    """Rarest-first alone at first (deadlines on every edge's next pieces had them all pull the
    same pieces from the seeder); after STREAM_PATIENCE the next ~1 MiB goes by deadline."""
    assert stream_window(0.0, 64 * 1024) == 0
    assert stream_window(STREAM_PATIENCE - 0.01, 64 * 1024) == 0
    assert stream_window(STREAM_PATIENCE, 64 * 1024) == 16
    assert stream_window(STREAM_PATIENCE + 5, 4 * 1024**2) == STREAM_MIN_PIECES
