"""The libtorrent wrapper with real sessions on loopback: seed, stream in order, web seed."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import libtorrent as lt
import pytest
from aiohttp import web

from aptmesh import web as webhelp
from aptmesh.swarm import (
    HOME,
    HOME_TAIL,
    HOME_WINDOW,
    NEXT,
    NOT_YET,
    OTHER,
    QUEUE_DEEPEN_AFTER,
    QUEUE_MAX,
    QUEUE_MIN,
    QUEUE_SHALLOW_AFTER,
    SOON,
    QueueControl,
    Swarm,
    SwarmError,
    SwarmSettings,
    SwarmTorrent,
    home_left,
    home_priorities,
    is_edge_peer,
    new_peer_id,
    request_queue_depth,
    seed_bound,
    session_settings,
    site_queue_depth,
)
from aptmesh.torrent import HashedFile, make_torrent
from aptmesh.uplink import known_uplink

LOOPBACK = SwarmSettings(listen_host="127.0.0.1", listen_port=0, role="edge")


def _file(tmp_path: Path, name: str, size: int) -> Path:
    path = tmp_path / "seed" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(os.urandom(size))
    return path


def test_datacentre_settings_turn_discovery_and_utp_off() -> None:
    pack = session_settings(SwarmSettings())
    assert pack["enable_dht"] is False and pack["enable_lsd"] is False
    assert pack["enable_upnp"] is False and pack["enable_natpmp"] is False
    assert pack["enable_incoming_utp"] is False and pack["dht_bootstrap_nodes"] == ""
    assert session_settings(SwarmSettings(public=True))["enable_dht"] is True


def test_no_role_suggests_read_cache_pieces() -> None:
    """hps suggests the seed's cached pieces to every peer, so all ask it for the same ones."""
    none = int(lt.suggest_mode_t.no_piece_suggestions)
    for role in ("seeder", "edge"):
        assert session_settings(SwarmSettings(role=role))["suggest_mode"] == none


def test_a_seeder_that_knows_its_uplink_starts_shallow() -> None:
    """Known capacity (or a rate limit, the lower of both): peers may queue QUEUE_MIN blocks at
    first; unknown, or not given (an edge): libtorrent's deep default, no control."""
    assert known_uplink(10_000_000, 0) == 10_000_000
    assert known_uplink(10_000_000, 5_000_000) == 5_000_000
    assert known_uplink(0, 5_000_000) == 5_000_000
    assert known_uplink(0, 0) == 0
    known = SwarmSettings(role="seeder", upload_capacity=known_uplink(10_000_000, 0))
    assert session_settings(known)["max_allowed_in_request_queue"] == QUEUE_MIN
    for unknown in (SwarmSettings(role="seeder"), SwarmSettings(role="edge")):
        assert session_settings(unknown)["max_allowed_in_request_queue"] == QUEUE_MAX


def _run(rates: list[float], capacity: float = 100.0) -> list[int]:
    state, depths = QueueControl(), []
    for rate in rates:
        state = request_queue_depth(state, rate, capacity)
        depths.append(state.depth)
    return depths


def test_a_full_link_keeps_the_request_queue_shallow() -> None:
    """Seed-bound: the uplink is full from the start, so the depth never leaves QUEUE_MIN."""
    assert _run([95.0, 99.0, 90.0, 97.0] * 5) == [QUEUE_MIN] * 20


def test_room_to_spare_for_a_while_deepens_it_and_a_full_link_makes_it_shallow_again() -> None:
    room = [50.0] * QUEUE_DEEPEN_AFTER
    assert _run(room)[-1] == QUEUE_MAX
    assert _run(room[:-1]) == [QUEUE_MIN] * (QUEUE_DEEPEN_AFTER - 1)
    # One full look in between starts the count again; so does one slow look.
    assert _run(room[:-1] + [95.0] + room[:-1])[-1] == QUEUE_MIN
    deep_then_full = _run(room + [95.0] * QUEUE_SHALLOW_AFTER)
    assert deep_then_full[-QUEUE_SHALLOW_AFTER:] == [QUEUE_MAX] * (QUEUE_SHALLOW_AFTER - 1) + [
        QUEUE_MIN
    ]


def test_an_idle_seeder_starts_the_next_burst_shallow() -> None:
    assert _run([50.0] * QUEUE_DEEPEN_AFTER + [0.0])[-1] == QUEUE_MIN
    assert request_queue_depth(QueueControl(), 50.0, 0) == QueueControl(QUEUE_MAX)


async def test_a_seeder_with_a_known_uplink_applies_the_depth(tmp_path: Path) -> None:
    """The session starts with QUEUE_MIN, and the control task runs until `close`."""
    swarm = Swarm(
        SwarmSettings(listen_host="127.0.0.1", listen_port=0, role="seeder", upload_capacity=10**7)
    )
    try:
        assert swarm.queue.depth == QUEUE_MIN
        assert swarm._session.get_settings()["max_allowed_in_request_queue"] == QUEUE_MIN
        assert swarm._queue_task is not None and not swarm._queue_task.done()
    finally:
        swarm.close()
    await asyncio.sleep(0)
    assert swarm._queue_task.cancelled() or swarm._queue_task.done()


MBIT = 125_000  # bytes per second


def test_a_seed_bound_site_gets_a_shallow_queue_and_a_peer_bound_one_a_deep_one() -> None:
    """Kumar-Ross: seed-bound when N * mean(u_i) >= (N - 1) * u_s."""
    seeder = 80 * MBIT
    # Six edges as fast as the seeder: its link is the limit; just enough depth for its share
    # of each edge over a loaded round trip: 10 MB/s / 6 * 50 ms = 5.1 blocks.
    assert site_queue_depth(seeder, [80 * MBIT] * 6) == 6
    assert site_queue_depth(seeder / 4, [80 * MBIT] * 6) == QUEUE_MIN
    # A fast seeder and slow edges: room to spare, duplicates cost nothing.
    assert site_queue_depth(200 * MBIT, [40 * MBIT] * 6) == QUEUE_MAX
    # A 10 Gbit/s seeder with two faster edges: 625 MB/s each over 50 ms is 1908 blocks.
    assert site_queue_depth(1250 * 10**6, [2500 * 10**6] * 2) == 1908
    # Edges that did not say are taken to be like those that did; none known, none decided.
    assert site_queue_depth(seeder, [80 * MBIT, 0, 0, 0, 0, 0]) == 6
    assert site_queue_depth(200 * MBIT, [40 * MBIT, 0, 0, 0, 0, 0]) == QUEUE_MAX
    assert site_queue_depth(seeder, [0, 0]) == 0
    assert site_queue_depth(seeder, []) == 0
    assert site_queue_depth(0, [80 * MBIT]) == 0


async def test_a_seeder_told_its_site_keeps_to_it(tmp_path: Path) -> None:
    swarm = Swarm(
        SwarmSettings(listen_host="127.0.0.1", listen_port=0, role="seeder", upload_capacity=10**7)
    )
    plain = Swarm(LOOPBACK)
    try:
        assert swarm.adaptive and not plain.adaptive
        assert swarm.know_site([10**6] * 6) == QUEUE_MAX
        assert swarm._session.get_settings()["max_allowed_in_request_queue"] == QUEUE_MAX
        assert swarm.stats().request_queue_depth == QUEUE_MAX
        # The control task no longer moves it, even with the link full.
        for _ in range(QUEUE_SHALLOW_AFTER + 1):
            await asyncio.sleep(0.3)
        assert swarm.queue.depth == QUEUE_MAX
        assert swarm.know_site([10**7] * 6) == 6  # 10 MB/s / 6 * 50 ms = 5.1 blocks
        assert swarm._session.get_settings()["max_allowed_in_request_queue"] == 6
        assert swarm.know_site([]) == 0 and swarm.site_depth == 0  # back to adapting
        assert plain.know_site([10**6] * 6) == 0  # an edge has no capacity of its own here
    finally:
        swarm.close()
        plain.close()


def test_home_pieces_interleave_and_cover_the_file_once() -> None:
    """Every third piece is an edge's own; the first HOME_WINDOW of those it lacks come first
    of all, in order; the pieces its client's stream needs next come before the rest."""
    pieces = 3 * (HOME_WINDOW + 4)
    shares = [home_priorities(pieces, rank, 3, stream=pieces) for rank in range(3)]
    for index in range(pieces):
        assert sum(share[index] in (NEXT, HOME) for share in shares) == 1
    first = shares[1]
    assert [first[i] for i in range(1, pieces, 3)] == [NEXT] * HOME_WINDOW + [HOME] * 4
    assert {first[i] for i in range(pieces) if i % 3 != 1} == {OTHER}
    # Held pieces leave the window to the next ones.
    have = [index < 3 * 4 for index in range(pieces)]
    held = home_priorities(pieces, 1, 3, have=have, stream=pieces)
    assert [held[i] for i in range(1, pieces, 3)] == [HOME] * 4 + [NEXT] * HOME_WINDOW
    # The stream's next pieces: SOON unless they are home.
    soon = home_priorities(pieces, 1, 3, stream=3)
    assert soon[:3] == [OTHER, NEXT, OTHER]
    assert soon[3:6] == [SOON, NEXT, SOON]
    assert home_priorities(4, 0, 1, stream=4) == [NEXT] * 4


def test_a_home_piece_another_edge_holds_is_fetched_like_any_other() -> None:
    elsewhere = [False, True, False, False, True, False]
    priorities = home_priorities(6, 1, 3, elsewhere, stream=6)
    assert priorities == [OTHER] * 6
    assert home_priorities(6, 1, 3, [True] + [False] * 5, stream=6) == [
        OTHER, NEXT, OTHER, OTHER, NEXT, OTHER,
    ]  # fmt: skip


def test_a_site_is_seed_bound_when_its_edges_could_pass_on_all_the_seed_sends() -> None:
    assert seed_bound(80 * MBIT, [80 * MBIT] * 6) is True
    assert seed_bound(200 * MBIT, [40 * MBIT] * 6) is False  # bench/swarm's peer-bound
    assert seed_bound(80 * MBIT, [80 * MBIT, 0, 0]) is True  # the known stand for the rest
    assert seed_bound(0, [80 * MBIT]) is None and seed_bound(80 * MBIT, [0, 0]) is None


def test_seed_bound_an_edge_wants_other_pieces_only_once_an_edge_holds_them() -> None:
    pieces = 3 * (HOME_TAIL + 4)  # edge 1 of 3: home 1, 4, 7, ...
    elsewhere = [index in (0, 5) for index in range(pieces)]
    have = [index in (1, 2) for index in range(pieces)]
    assert home_left(pieces, 1, 3, elsewhere, have) == pieces // 3 - 1
    bound = home_priorities(pieces, 1, 3, elsewhere, have, stream=0, seed_bound=True)
    free = home_priorities(pieces, 1, 3, elsewhere, have, stream=0)
    for index in range(pieces):
        if index % 3 == 1 or index in (0, 2, 5):  # home, held elsewhere, or had
            assert bound[index] == free[index], index
        else:
            assert bound[index] == NOT_YET, index
    # While its last home pieces arrive it wants nothing else (their request slots at the
    # seeder free up then), and once they are in, anything.
    tail = [index % 3 != 1 or index >= 3 * HOME_TAIL for index in range(pieces)]
    assert home_left(pieces, 1, 3, [False] * pieces, tail) == HOME_TAIL
    last = home_priorities(pieces, 1, 3, elsewhere, tail, seed_bound=True)
    assert [last[i] for i in range(pieces) if not tail[i]] == [NEXT] * HOME_TAIL
    done = [index % 3 == 1 for index in range(pieces)]
    assert home_priorities(pieces, 1, 3, elsewhere, done, 0, seed_bound=True) == (
        home_priorities(pieces, 1, 3, elsewhere, done, 0)
    )


def test_peer_ids_mark_edges() -> None:
    edge, seeder = new_peer_id("edge"), new_peer_id("seeder")
    assert len(edge) == len(seeder) == 20 and edge != new_peer_id("edge")
    assert is_edge_peer(edge.encode()) and not is_edge_peer(seeder.encode())
    assert not is_edge_peer(b"-qB4650-" + b"e" * 12)


async def test_edges_split_the_seeders_pieces_and_it_sends_each_about_once(
    tmp_path: Path,
) -> None:
    """Three edges of a site put different thirds of the pieces first (`share_work`), so a
    slow seeder (one that knows its uplink is full: a shallow request queue) sends about one
    copy of the file and the edges trade the rest."""
    source = _file(tmp_path, "split_1_all.deb", 6 * 1024 * 1024)
    hashed = make_torrent(source)
    seed = Swarm(
        SwarmSettings(**{**LOOPBACK.__dict__, "role": "seeder", "upload_capacity": 2 << 20})
    )
    edges = [Swarm(LOOPBACK) for _ in range(3)]
    try:
        seeding = seed.add(hashed.torrent.metainfo, source.parent, seed=True)
        # Nothing moves until every edge has its priorities (libtorrent exempts loopback from
        # rate limits unless told not to).
        seed.apply(upload_rate_limit=1, ignore_limits_on_local_network=False)
        # Which piece the seed sent to whom: its block-uploaded alerts, read beside the pump.
        sent_to: dict[bytes, list[int]] = {}
        dispatch = seed._dispatch

        def record(alert: object) -> None:
            if isinstance(alert, lt.block_uploaded_alert):
                sent_to.setdefault(alert.pid.to_bytes(), []).append(alert.piece_index)
            else:
                dispatch(alert)

        seed._dispatch = record  # type: ignore[method-assign]
        mask = seed._session.get_settings()["alert_mask"]
        seed.apply(alert_mask=mask | lt.alert.category_t.upload_notification)
        torrents = []
        for rank, edge in enumerate(edges):
            torrent = edge.add(hashed.torrent.metainfo, tmp_path / f"edge{rank}", sequential=False)
            edge.connect_peer(torrent, "127.0.0.1", seed.listen_port)
            for other in edges[:rank]:
                edge.connect_peer(torrent, "127.0.0.1", other.listen_port)
            torrent.share_work(rank, 3)
            expected = home_priorities(torrent.num_pieces, rank, 3)
            assert list(torrent.handle.get_piece_priorities()) == expected
            torrents.append(torrent)
        seed.apply(upload_rate_limit=2 << 20)
        async with asyncio.timeout(60):
            while not all(t.finished.is_set() for t in torrents):
                for rank, torrent in enumerate(torrents):
                    torrent.share_work(rank, 3)
                await asyncio.sleep(0.1)
        sent = seeding.handle.status().total_payload_upload
        assert sent < 1.5 * hashed.torrent.size, sent / hashed.torrent.size
        for rank, edge in enumerate(edges):
            pieces = sent_to[edge.peer_id.encode()]
            home = sum(1 for index in pieces if index % 3 == rank)
            assert home >= 0.5 * len(pieces), (rank, home, len(pieces))  # random: a third
    finally:
        seed.close()
        for edge in edges:
            edge.close()


@dataclass
class SeedBoundSite:
    """A seeder on an address of its own (edges leave addresses, not ports) and edges ranked
    0, 1, ... of a seed-bound site of three, each with its priorities before it connects to
    anyone (else it may ask the seeder for any piece first)."""

    hashed: HashedFile
    seed: Swarm
    seeding: SwarmTorrent
    edges: list[Swarm]
    torrents: list[SwarmTorrent]

    def seeder_peers(self, torrent: SwarmTorrent) -> int:
        return sum(peer.ip[0] == "127.0.0.2" for peer in torrent.handle.get_peer_info())

    async def share_until(self, done: Callable[[], bool], seconds: float) -> None:
        """Has each edge share the work every 0.1 s until `done`."""
        async with asyncio.timeout(seconds):
            while not done():
                for rank, torrent in enumerate(self.torrents):
                    torrent.share_work(rank, 3, seed_bound=True)
                await asyncio.sleep(0.1)


@contextlib.asynccontextmanager
async def seed_bound_site(
    tmp_path: Path, name: str, size: int, rate: int, edges: int
) -> AsyncIterator[SeedBoundSite]:
    source = _file(tmp_path, name, size)
    hashed = make_torrent(source)
    seed = Swarm(
        SwarmSettings(listen_host="127.0.0.2", listen_port=0, role="seeder", upload_capacity=rate)
    )
    # Nothing moves until every edge has its priorities (libtorrent exempts loopback from
    # rate limits unless told not to).
    seed.apply(upload_rate_limit=1, ignore_limits_on_local_network=False)
    sessions = [Swarm(LOOPBACK) for _ in range(edges)]
    try:
        seeding = seed.add(hashed.torrent.metainfo, source.parent, seed=True)
        torrents = []
        for rank, edge in enumerate(sessions):
            torrent = edge.add(hashed.torrent.metainfo, tmp_path / f"edge{rank}", sequential=False)
            torrent.share_work(rank, 3, seed_bound=True)
            edge.connect_peer(torrent, "127.0.0.2", seed.listen_port)
            for other in sessions[:rank]:
                edge.connect_peer(torrent, "127.0.0.1", other.listen_port)
            torrents.append(torrent)
        seed.apply(upload_rate_limit=rate)
        yield SeedBoundSite(hashed, seed, seeding, sessions, torrents)
    finally:
        seed.close()
        for edge in sessions:
            edge.close()


async def test_seed_bound_edges_ask_the_seeder_for_each_piece_once(tmp_path: Path) -> None:
    async with seed_bound_site(tmp_path, "bound_1_all.deb", 4 << 20, 2 << 20, 3) as site:
        await site.share_until(lambda: all(t.finished.is_set() for t in site.torrents), 60)
        sent = site.seeding.handle.status().total_payload_upload
        assert sent < 1.1 * site.hashed.torrent.size, sent / site.hashed.torrent.size


async def test_a_seed_bound_edge_leaves_the_seeder_and_takes_it_back_when_told(
    tmp_path: Path,
) -> None:
    """Two edges of a site of three (the third is gone): each leaves the seeder once its home
    pieces are in, and nobody asks for the third edge's; told the site is not seed-bound any
    more (what an edge's stream does after waiting too long), they take the seeder back."""
    async with seed_bound_site(tmp_path, "gone_1_all.deb", 2 << 20, 4 << 20, 2) as site:
        torrents = site.torrents
        await site.share_until(
            lambda: all(t.left_seeders and not site.seeder_peers(t) for t in torrents), 30
        )
        await asyncio.sleep(0.5)
        pieces = torrents[0].num_pieces
        for torrent in torrents:
            assert not torrent.finished.is_set()
            assert sorted(torrent.completed) == [i for i in range(pieces) if i % 3 != 2]
        home = sum(site.hashed.torrent.piece_length for i in range(pieces) if i % 3 != 2)
        assert site.seeding.handle.status().total_payload_upload < 1.1 * home
        for rank, (edge, torrent) in enumerate(zip(site.edges, torrents, strict=True)):
            torrent.share_work(rank, 3, seed_bound=False)
            assert not torrent.left_seeders
            edge.connect_peer(torrent, "127.0.0.2", site.seed.listen_port)  # as a tracker would
        async with asyncio.timeout(30):
            await asyncio.gather(*(t.finished.wait() for t in torrents))


async def test_leech_streams_verified_pieces_in_order_from_a_seed(tmp_path: Path) -> None:
    source = _file(tmp_path, "big_1.0+b1~x_amd64.deb", 3 * 1024 * 1024 + 123)
    hashed = make_torrent(source)
    seed, leech = Swarm(LOOPBACK), Swarm(LOOPBACK)
    try:
        # The seed holds the file under its content address, not its name.
        stored = tmp_path / "cas" / hashed.sha256
        stored.parent.mkdir()
        source.rename(stored)
        seeding = seed.add(hashed.torrent.metainfo, stored.parent, file_name=stored.name, seed=True)
        assert seeding.finished.is_set()
        fetching = leech.add(hashed.torrent.metainfo, tmp_path / "scratch")
        leech.connect_peer(fetching, "127.0.0.1", seed.listen_port)
        digest = hashlib.sha256()
        sizes = []
        async with asyncio.timeout(30):
            async for piece in fetching.pieces(stall_timeout=20):
                sizes.append(len(piece))
                digest.update(piece)
        assert digest.hexdigest() == hashed.sha256
        assert sum(sizes) == hashed.torrent.size
        assert len(sizes) == fetching.num_pieces
        async with asyncio.timeout(10):
            await fetching.finished.wait()
        assert seed.stats().payload_uploaded_bytes >= hashed.torrent.size
    finally:
        seed.close()
        leech.close()


async def test_web_seed_alone_delivers_the_file(tmp_path: Path) -> None:
    """A web seed added to a running torrent delivers it; its bytes are counted as the web
    seed's, not as peers'."""
    source = _file(tmp_path, "web_1_all.deb", 1_500_000)
    hashed = make_torrent(source)
    app = web.Application()
    app.router.add_static("/pool/", source.parent)
    site = await webhelp.start(app, "127.0.0.1", 0)
    leech = Swarm(LOOPBACK)
    try:
        torrent = leech.add(hashed.torrent.metainfo, tmp_path / "scratch", sequential=False)
        assert torrent.transfer().web_seed_bytes == 0
        torrent.add_web_seed(f"{site.url}/pool/{source.name}")
        digest = hashlib.sha256()
        async with asyncio.timeout(30):
            # Through read_piece, as the edge reads: the file on disk may lag the
            # finished alert while libtorrent's disk thread still writes it.
            async for piece in torrent.pieces(stall_timeout=20):
                digest.update(piece)
            await torrent.finished.wait()
        assert digest.hexdigest() == hashed.sha256
        moved = torrent.transfer()
        assert moved.web_seed_bytes >= hashed.torrent.size and moved.peer_bytes == 0
        stats = leech.stats()
        assert stats.web_seed_downloaded_bytes == stats.payload_downloaded_bytes
        leech.remove(torrent)
        assert leech.stats().web_seed_downloaded_bytes == moved.web_seed_bytes
    finally:
        leech.close()
        await site.stop()


async def test_deadline_window_comes_first_and_peer_bytes_are_peers(tmp_path: Path) -> None:
    """Rarest-first with a deadline window: the pieces a client waits for arrive before the
    rest; every byte came from a peer."""
    source = _file(tmp_path, "window_1_all.deb", 8 * 1024 * 1024)
    hashed = make_torrent(source)
    seed, leech = Swarm(SwarmSettings(**{**LOOPBACK.__dict__, "role": "seeder"})), Swarm(LOOPBACK)
    try:
        seed.add(hashed.torrent.metainfo, source.parent, seed=True)
        # A slow seed (libtorrent exempts loopback from rate limits unless told not to).
        seed.apply(upload_rate_limit=4 << 20, ignore_limits_on_local_network=False)
        fetching = leech.add(hashed.torrent.metainfo, tmp_path / "scratch", sequential=False)
        assert not fetching.status().sequential_download
        middle = fetching.num_pieces // 2
        fetching.stream_window(middle, 4, 0, 10)
        leech.connect_peer(fetching, "127.0.0.1", seed.listen_port)
        async with asyncio.timeout(30):
            await fetching.finished.wait()
        early = fetching.completed[: fetching.num_pieces // 4]
        assert set(range(middle, middle + 4)) <= set(early), fetching.completed[:16]
        moved = fetching.transfer()
        assert moved.web_seed_bytes == 0 and moved.peer_bytes >= hashed.torrent.size
    finally:
        seed.close()
        leech.close()


async def test_stall_is_reported_when_nobody_has_the_file(tmp_path: Path) -> None:
    hashed = make_torrent(_file(tmp_path, "lonely.deb", 200_000))
    leech = Swarm(LOOPBACK)
    try:
        torrent = leech.add(hashed.torrent.metainfo, tmp_path / "scratch")
        with pytest.raises(TimeoutError, match="stalled"):
            async for _ in torrent.pieces(stall_timeout=0.5):
                pass
    finally:
        leech.close()


async def test_resume_data_round_trips(tmp_path: Path) -> None:
    path = _file(tmp_path, "r.deb", 300_000)
    hashed = make_torrent(path)
    swarm = Swarm(LOOPBACK)
    try:
        torrent = swarm.add(hashed.torrent.metainfo, path.parent, seed=True)
        data = await asyncio.wait_for(torrent.resume_data(), 10)
        assert data.startswith(b"d")
        swarm.remove(torrent)
        again = swarm.add(hashed.torrent.metainfo, path.parent, resume_data=data)
        assert again.handle.is_valid()
    finally:
        swarm.close()


async def test_pieces_found_on_disk_are_streamed(tmp_path: Path) -> None:
    """A torrent added over its complete file (not in seed mode) checks it and finds every
    piece, which `has_piece` knows from the pieces' alerts or the torrent's status."""
    path = _file(tmp_path, "found.deb", 300_000)
    hashed = make_torrent(path)
    swarm = Swarm(LOOPBACK)
    try:
        torrent = swarm.add(hashed.torrent.metainfo, path.parent)
        digest = hashlib.sha256()
        async with asyncio.timeout(20):
            async for piece in torrent.pieces(stall_timeout=10):
                digest.update(piece)
        assert digest.hexdigest() == hashed.sha256
    finally:
        swarm.close()


def test_swarm_error_is_an_exception() -> None:
    assert issubclass(SwarmError, Exception)


def test_edges_pick_by_priority_from_the_first_piece() -> None:
    """libtorrent's random first pieces and runs of contiguous pieces ignore priorities; an
    edge turns both off so that its home pieces come first (the other roles keep them)."""
    edge = session_settings(SwarmSettings(role="edge"))
    assert edge["initial_picker_threshold"] == 0 and edge["whole_pieces_threshold"] == 0
    seeder = session_settings(SwarmSettings(role="seeder"))
    assert "initial_picker_threshold" not in seeder and "whole_pieces_threshold" not in seeder


def test_edges_keep_connections_that_look_redundant_for_a_moment() -> None:
    """A seed-bound edge often wants no missing piece for a moment; closing "redundant"
    connections then would drop the seeds and edges it needs a moment later."""
    assert session_settings(SwarmSettings(role="edge"))["close_redundant_connections"] is False
    assert session_settings(SwarmSettings(role="seeder"))["close_redundant_connections"] is True


def test_a_lab_filter_lets_only_its_ranges_through() -> None:
    from aptmesh.swarm import ip_filter

    rules = ip_filter(["10.0.0.0/8", "fd00::/8"])
    assert rules.access("10.2.3.4") == 0 and rules.access("fd00::1") == 0
    assert rules.access("203.0.113.9") == 1 and rules.access("2001:db8::1") == 1
