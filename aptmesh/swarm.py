"""The project's only libtorrent module: one session wrapper the seeder and the edge share.

Theory of operation. A `Swarm` owns one libtorrent session and pumps its
alerts on the asyncio loop: libtorrent writes a byte to a socketpair when
alerts are waiting (`set_alert_fd`; `set_alert_notify` can deadlock under
Python), the loop reads it and dispatches each alert to the `SwarmTorrent`
it concerns. Callers never poll libtorrent in a loop (the one timer is an
adaptive seeder's look at its upload rate, below).

Roles differ by wiring only: the seeder adds verified files in seed mode, the
edge downloads into a scratch directory (deadlines on its client's next pieces
once the client has waited: `stream_window`) and streams verified pieces in
order, then adds the finished, SHA-256-checked file back in seed mode. Web
seeds can be added while a torrent runs (`add_web_seed`); `transfer()` splits
what a torrent downloaded by source (BitTorrent peers or web seeds) from
libtorrent's per-connection counters. Pieces are read back through
`read_piece`, so a byte reaches a client only after libtorrent checked the
piece's hash. Peers that send bad data are banned by libtorrent's smart-ban;
the piece is fetched again from others (or the web seed). Every failed piece
is reported (`on_hash_failed`: the service counts it in
`aptmesh_verification_failures_total{kind="piece"}`) and so is each ban
(`peer_banned`). A ban holds for one torrent only: the session's IP filter
already carries `leave`, whose per-torrent flag would block a left seeder for
every torrent if bans shared it.

A tracker that lost its peers (restarted with an in-memory peer store) learns
them again only at each torrent's announce interval; `reannounce` announces
every torrent at once, which the services do when the registry's
`peers_epoch` changes.

`upload_rate_limit` binds every peer: libtorrent exempts peers on local
networks (its local peer class) from rate limits and unchoke slots by
default, and a seed box's LAN is where its limit matters most, so that
exemption (`ignore_limits_on_local_network`) is off whenever a limit is set.
The home peer turns it off the same way while its uploads are shut.

Edges share the work (`share_work`): an edge ranked r of the site's N live
edges (the registry's, by id) puts its home pieces, every N-th from r, before
all others, the next few of them in file order, so that each edge asks the
seeder for different pieces and the edges trade the rest among themselves;
pieces another edge holds are never home. Edges carry a role mark in their
peer ids (`is_edge_peer`) so that each can tell the other edges from seeders.
libtorrent's random first pieces and whole-piece runs ignore priorities, so
edges turn them off. Where the seed boxes are the site's bottleneck
(`seed_bound`, from the uplinks in the registry), an edge wants another edge's
piece only once an edge holds it, and leaves the seeder's connection for the
torrent once its own pieces are in: libtorrent fills any free request slot at
the seeder with any wanted piece, and that made the seeder send pieces twice.

A seeder that knows its uplink (`upload_capacity`, or its `upload_rate_limit`)
adapts how many block requests each peer may queue at it
(`max_allowed_in_request_queue`, `request_queue_depth`): shallow while its
upload is full or a burst begins, so a piece one edge has asked for but not
yet received is not handed to the others too (the duplicates that cost stock
libtorrent about 2x the bound, bench/swarm/RESULTS.md), deep once it has had
room to spare for a while. Peers learn the depth in the handshake and keep
to it for the connection, so a change reaches the connections made after it.
Once told the uplinks the site's edges reported (`know_site`), the seeder
knows before any handshake whether the site is seed-bound (shallow) or
peer-bound (deep), and stops guessing (`site_queue_depth`). Neither role
uses hps's read-cache piece suggestions: every peer would ask the seed for
the same suggested pieces.
"""

from __future__ import annotations

import asyncio
import math
import secrets
import socket
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import libtorrent as lt

from aptmesh import __version__, logs

log = logs.get(__name__)

Role = Literal["seeder", "edge", "plain"]


# The `kind` label of aptmesh_verification_failures_total for a piece that failed its hash.
PIECE_FAILURE_KIND = "piece"


class SwarmError(Exception):
    """A torrent failed in libtorrent (storage, metadata, an added torrent rejected)."""


@dataclass(frozen=True)
class SwarmSettings:
    listen_host: str = "0.0.0.0"
    listen_port: int = 6881  # 0 picks a free port
    # Public swarm: DHT, LSD, UPnP and NAT-PMP on. Off inside a data centre.
    public: bool = False
    utp: bool = False  # uTP is 15x slower than TCP here (reference notes); off by default
    upload_rate_limit: int = 0  # bytes per second, 0 = unlimited
    connections_limit: int = 500
    # The uplink in bytes per second that the request-queue control aims at (0: no control).
    # A seeder is given it (`aptmesh.uplink.known_uplink` of its capacity and rate limit) and
    # adapts its request-queue depth to it (`request_queue_depth`); an edge is not.
    upload_capacity: int = 0
    # "seeder" and "edge" get the throughput tuning of the reference notes;
    # "plain" is stock libtorrent, the benchmark's baseline.
    role: Role = "edge"


QUEUE_MAX = 2000  # libtorrent's default max_allowed_in_request_queue


@dataclass
class SwarmStats:
    torrents: int
    peers: int
    payload_uploaded_bytes: int
    payload_downloaded_bytes: int  # from BitTorrent peers and web seeds
    upload_rate: int
    download_rate: int
    web_seed_downloaded_bytes: int = 0  # the part of payload_downloaded_bytes from web seeds
    request_queue_depth: int = QUEUE_MAX  # block requests a peer may queue here


@dataclass(frozen=True)
class Transfer:
    """What one torrent downloaded so far, by source, and what its swarm looks like."""

    peer_bytes: int  # payload from BitTorrent peers
    web_seed_bytes: int  # payload from BEP 19 web seeds
    peers: int  # connected BitTorrent peers (web seeds not counted)
    seeds: int  # connected BitTorrent peers holding the whole file
    peer_rate: int  # bytes per second from BitTorrent peers
    done_bytes: int  # verified bytes held


# Block requests (16 KiB) a peer may queue at an adaptive seeder. libtorrent tells each peer
# this depth in the extension handshake ("reqq") and the peer keeps at most that many requests
# outstanding for the life of the connection, so the depth a connection starts with is what
# counts: a change reaches the connections made after it (the next torrents of a pulse); a
# shallower depth also turns away the excess of older connections.
QUEUE_MIN = 4
SATURATED = 0.85  # payload upload at this fraction of the capacity counts as a full link
QUEUE_EVERY = 0.25  # seconds between looks at the upload rate
QUEUE_DEEPEN_AFTER = 4  # looks in a row with room to spare before the depth goes to QUEUE_MAX
QUEUE_SHALLOW_AFTER = 2  # looks in a row with a full link before it goes back to QUEUE_MIN


@dataclass(frozen=True)
class QueueControl:
    """A seeder's request-queue depth and how many looks in a row saw a full link / room."""

    depth: int = QUEUE_MIN
    full: int = 0
    room: int = 0


def request_queue_depth(state: QueueControl, rate: float, capacity: float) -> QueueControl:
    """A seeder's next `max_allowed_in_request_queue` (a pure function) from the payload upload
    rate just measured. A burst starts shallow: with a full link a shallow queue loses no
    throughput and commits few pieces to one peer before the others can get them from it, so
    the seeder sends each piece about once (seed-bound). Room to spare for a while (fast peers
    could take more: peer-bound) makes it deep; a full link for a while makes it shallow again.
    Idle, the next burst starts shallow."""
    if capacity <= 0:
        return QueueControl(QUEUE_MAX)
    if rate <= 0:
        return QueueControl(QUEUE_MIN)
    if rate >= SATURATED * capacity:
        full = state.full + 1
        depth = QUEUE_MIN if full >= QUEUE_SHALLOW_AFTER else state.depth
        return QueueControl(depth, full, 0)
    room = state.room + 1
    depth = QUEUE_MAX if room >= QUEUE_DEEPEN_AFTER else state.depth
    return QueueControl(depth, 0, room)


BLOCK = 16 * 1024  # bytes per block request
LOADED_RTT = 0.05  # seconds: a request's round trip over loaded links (5-50 ms in bench/swarm)


def seed_bound(capacity: float, edge_uplinks: Sequence[int]) -> bool | None:
    """Whether a site whose seed uplink is `capacity` is seed-bound, from the uplinks its live
    edges reported to the registry (a pure function; None: it cannot tell). It is when the edges
    together could pass on what the seed sends, N * mean(u_i) >= (N - 1) * u_s (Kumar-Ross):
    then every byte the seed sends twice costs the whole site time. Uplinks of 0 are unknown;
    the known ones stand for them."""
    known = [u for u in edge_uplinks if u > 0]
    if capacity <= 0 or not known:
        return None
    edges = len(edge_uplinks)
    return edges * sum(known) / len(known) >= (edges - 1) * capacity


def site_queue_depth(capacity: float, edge_uplinks: Sequence[int]) -> int:
    """The request-queue depth a seeder with uplink `capacity` gives its peers, from the uplinks
    the live edges reported to the registry (a pure function; 0: it cannot tell).

    Seed-bound (`seed_bound`), the seeder's link is full whatever the depth, and a shallow
    queue, just deep enough for the seeder's share of each edge over a loaded round trip, keeps
    edges from asking it for pieces others have asked for too. With room to spare
    (peer-bound), duplicates cost nothing and each edge may ask for as much as it can take."""
    bound = seed_bound(capacity, edge_uplinks)
    if bound is None:
        return 0
    if not bound:
        return QUEUE_MAX
    return max(QUEUE_MIN, math.ceil(capacity / len(edge_uplinks) * LOADED_RTT / BLOCK))


def new_peer_id(role: Role) -> str:
    """A whole 20-byte peer id: the client's fingerprint, a role mark ("e" for an edge), then
    random characters. libtorrent uses a 20-byte fingerprint as the peer id itself, so every
    peer sees the mark (`is_edge_peer`)."""
    return (
        lt.generate_fingerprint("AM", 0, 1, 0, 0)
        + ("e" if role == "edge" else "s")
        + (secrets.token_hex(6)[:11])
    )


def is_edge_peer(peer_id: bytes) -> bool:
    """Whether a peer id is an aptmesh edge's (`new_peer_id`)."""
    return peer_id.startswith(b"-AM") and peer_id[8:9] == b"e"


NEXT = 7  # libtorrent's top priority, whatever the availability: the next home pieces in order
HOME = 6  # the rest of the home pieces: before any other piece the seeder holds
SOON = 5  # other pieces the client's stream needs next: before the rest, rarest-first
OTHER = 4  # libtorrent's default priority: rarest-first
NOT_YET = 0  # seed-bound: a piece no edge holds yet, or any while the last home ones arrive
HOME_WINDOW = 16  # home pieces asked for in file order ahead of the rest
SOON_WINDOW = 256  # pieces after the stream's next one that count as needed soon
HOME_TAIL = 2  # seed-bound: home pieces still missing when other pieces stop being asked for


def _flag(flags: Sequence[bool], index: int) -> bool:
    return index < len(flags) and flags[index]


def home_left(
    num_pieces: int, rank: int, count: int, elsewhere: Sequence[bool], have: Sequence[bool]
) -> int:
    """How many of its home pieces the edge ranked `rank` of `count` still has to get from the
    seeder (a pure function): those it lacks that no other edge holds (`home_priorities`)."""
    return sum(
        1
        for index in range(rank, num_pieces, count)
        if not _flag(elsewhere, index) and not _flag(have, index)
    )


def home_priorities(
    num_pieces: int,
    rank: int,
    count: int,
    elsewhere: Sequence[bool] = (),
    have: Sequence[bool] = (),
    stream: int = 0,
    *,
    seed_bound: bool = False,
) -> list[int]:
    """Piece priorities of the edge ranked `rank` of the site's `count` edges (a pure
    function). Its home pieces (every `count`-th, from `rank`) come first, so each edge asks the
    seeder for different pieces and gets the rest from the others, rarest-first; the first
    HOME_WINDOW home pieces it lacks come first of all, in file order, so every edge's pieces
    arrive about in file order and its client's in-order stream keeps up with the download.
    A home piece another edge already holds (`elsewhere[index]`: it took it from the seeder
    after running out of its own, or it has the file) is home no more: asking the seeder for
    it again would be a duplicate. Of the other pieces, the SOON_WINDOW from `stream` (the
    piece the client waits for) come before the rest, for the same reason.

    At a `seed_bound` site every duplicate the seeder sends costs the site time, and libtorrent
    fills an edge's free request slots at the seeder with any piece it wants. So a piece that
    is not home is wanted only once another edge holds it (the edges hand it on), and not at
    all while the last HOME_TAIL home pieces arrive (their slots free up then); once every home
    piece is in, the caller drops the seeder from the torrent (`SwarmTorrent.share_work`)."""
    priorities = [OTHER] * num_pieces
    soon = range(max(0, stream), min(num_pieces, stream + SOON_WINDOW))
    priorities[soon.start : soon.stop] = [SOON] * len(soon)
    left = home_left(num_pieces, rank, count, elsewhere, have) if seed_bound else 0
    if left:
        for index in range(num_pieces):
            if not _flag(have, index) and (left <= HOME_TAIL or not _flag(elsewhere, index)):
                priorities[index] = NOT_YET
    window = HOME_WINDOW
    for index in range(rank, num_pieces, count):
        if _flag(elsewhere, index):
            continue
        if window and not _flag(have, index):
            priorities[index] = NEXT
            window -= 1
        else:
            priorities[index] = HOME
    return priorities


def session_settings(settings: SwarmSettings, peer_id: str = "") -> dict[str, Any]:
    """The libtorrent settings pack for a role, as a plain dict (a pure function)."""
    peer_id = peer_id or lt.generate_fingerprint("AM", 0, 1, 0, 0)
    pack: dict[str, Any] = {}
    if settings.role in ("seeder", "edge"):
        pack.update(lt.high_performance_seed())
        # hps suggests the pieces in the read cache to every peer, so all of them ask the seed
        # for the same pieces: the seeder then sends each about twice (bench/swarm/RESULTS.md).
        pack["suggest_mode"] = lt.suggest_mode_t.no_piece_suggestions
    pack.update(
        {
            "listen_interfaces": f"{settings.listen_host}:{settings.listen_port}",
            "enable_dht": settings.public,
            "enable_lsd": settings.public,
            "enable_upnp": settings.public,
            "enable_natpmp": settings.public,
            "enable_incoming_utp": settings.utp,
            "enable_outgoing_utp": settings.utp,
            "user_agent": f"aptmesh/{__version__}",
            "peer_fingerprint": peer_id,
            "alert_mask": (
                lt.alert.category_t.error_notification
                | lt.alert.category_t.status_notification
                | lt.alert.category_t.storage_notification
                | lt.alert.category_t.piece_progress_notification
                | lt.alert.category_t.peer_notification  # peer_ban_alert (smart-ban)
            ),
            "upload_rate_limit": settings.upload_rate_limit,
            "ignore_limits_on_local_network": not settings.upload_rate_limit,
            "connections_limit": settings.connections_limit,
            # Edges and seeders of one site often share an address (tests, NAT).
            "allow_multiple_connections_per_ip": True,
            "announce_to_all_trackers": True,
            "announce_to_all_tiers": True,
            # A torrent per package file: never queue torrents behind each other.
            "active_limit": 100000,
            "active_seeds": 100000,
            "active_downloads": 1000,
            "active_tracker_limit": 100000,
            "dont_count_slow_torrents": False,
            "auto_manage_startup": 0,
            # Closing waits this long for trackers to acknowledge `stopped`. It blocks
            # the caller (the binding holds the GIL), which stalls a tracker served on
            # the same event loop (aptmesh up, tests): keep it short.
            "stop_tracker_timeout": 1,
        }
    )
    if settings.role == "edge":
        # Each edge asks the seeder for its own home pieces first (`home_priorities`). By default
        # libtorrent picks random pieces until it has 4, and then runs of contiguous pieces
        # (up to 8 MiB) from a fast peer: both ignore piece priorities, and with them the edges
        # asked the seeder for the same pieces again.
        pack["initial_picker_threshold"] = 0
        pack["whole_pieces_threshold"] = 0
        # At a seed-bound site an edge often wants no missing piece for a moment
        # (`home_priorities`), and libtorrent then counts the torrent finished: with redundant
        # connections closed it drops the seeds and the edges in the same state ("upload to
        # upload", "uninteresting upload-only peer") and reconnects only a minute later (the
        # pulse took 2.4-2.8x the bound instead of 1.2x). Two seeds do not meet this way: the
        # tracker gives a seed only leechers, and an edge seeds a finished file as a new
        # torrent (the download's connections close with it).
        pack["close_redundant_connections"] = False
    if not settings.public:
        pack["dht_bootstrap_nodes"] = ""
    if settings.upload_capacity:
        pack["max_allowed_in_request_queue"] = QUEUE_MIN  # then `request_queue_depth`
    return pack


def ip_filter(networks: Sequence[str]) -> Any:
    """An lt.ip_filter that blocks every address but those in `networks` (CIDR)."""
    import ipaddress

    rules = lt.ip_filter()
    rules.add_rule("0.0.0.0", "255.255.255.255", 1)
    rules.add_rule("::", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 1)
    for text in networks:
        network = ipaddress.ip_network(text, strict=False)
        rules.add_rule(str(network[0]), str(network[-1]), 0)
    return rules


# A torrent in these states has checked its files: each piece it verifies from now on is
# announced by a piece_finished_alert.
_CHECKED_STATES = frozenset(
    (
        lt.torrent_status.states.downloading,
        lt.torrent_status.states.finished,
        lt.torrent_status.states.seeding,
    )
)


def _hex(info_hashes: Any) -> str:
    return str(info_hashes.v1)


class SwarmTorrent:
    """One torrent in the session; its events arrive from the alert pump."""

    def __init__(
        self,
        handle: Any,
        num_pieces: int,
        piece_length: int,
        size: int,
        leave: Callable[[set[str]], None] | None = None,
    ) -> None:
        self.handle = handle
        self.num_pieces = num_pieces
        self.piece_length = piece_length
        self.size = size
        self.finished = asyncio.Event()
        self.error: str | None = None
        self.hash_failures = 0
        self._have: set[int] = set()
        self._checked = False  # past checking its files: every new piece comes with an alert
        self.completed: list[int] = []  # piece indexes in the order they were verified
        self._changed = asyncio.Event()
        self._reads: dict[int, asyncio.Future[bytes]] = {}
        self._resume: asyncio.Future[bytes] | None = None
        self.web_seeds: list[str] = []
        # Payload per peer connection (key: endpoint): libtorrent's per-peer counters vanish
        # with the connection, so the last value seen is kept, and a counter that went down
        # means a new connection on the same endpoint.
        self._last: dict[tuple[Any, ...], int] = {}
        self._peer_bytes = 0
        self._priorities: list[int] = []
        # `share_work` at a seed-bound site: this torrent applies the session's IP filter,
        # which blocks the seeders it left (`leave`: `Swarm.leave`).
        self.left_seeders = False
        self._leave = leave

    def _notify(self) -> None:
        self._changed.set()

    def _piece_done(self, index: int) -> None:
        self._have.add(index)
        self.completed.append(index)
        self._notify()

    def _failed(self, message: str) -> None:
        self.error = message
        for future in self._reads.values():
            if not future.done():
                future.set_exception(SwarmError(message))
        self._notify()

    def has_piece(self, index: int) -> bool:
        """Whether libtorrent holds the piece, verified. Known from the pieces' alerts, not
        asked of libtorrent each time: every `torrent_handle` query is a round trip to its
        network thread, and a stream asks once per piece that arrives. Pieces a torrent
        holds without an alert (found on disk while it checks its files, resume data, seed
        mode) are read from its status until it has checked them."""
        if index in self._have:
            return True
        if not self._checked:
            status = self.handle.status(lt.torrent_handle.query_pieces)
            self._have.update(i for i, had in enumerate(status.pieces) if had)
            self._checked = status.state in _CHECKED_STATES
        return index in self._have

    def _start_read(self, index: int) -> asyncio.Future[bytes]:
        future = self._reads.get(index)
        if future is None:
            future = asyncio.get_running_loop().create_future()
            # A read ahead nobody awaits (the stream ended) must not log an unretrieved error.
            future.add_done_callback(lambda done: done.cancelled() or done.exception())
            self._reads[index] = future
            self.handle.read_piece(index)
        return future

    async def read_piece(self, index: int) -> bytes:
        """The bytes of a piece libtorrent has verified."""
        try:
            return await self._start_read(index)
        finally:
            self._reads.pop(index, None)

    def read_ahead(self, first: int, count: int) -> None:
        """Starts reading the verified pieces among `first`..`first+count-1`, so that a stream
        that fell behind the download (pieces arrive out of order) catches up in parallel
        reads, not one libtorrent round trip per piece."""
        for index in range(first, min(first + count, self.num_pieces)):
            if index in self._have:
                self._start_read(index)

    async def wait_changed(self, seconds: float) -> bool:
        """Waits for a piece, an error or completion; False after `seconds`."""
        try:
            await asyncio.wait_for(self._changed.wait(), seconds)
        except TimeoutError:
            return False
        self._changed.clear()
        return True

    async def pieces(self, first: int = 0, *, stall_timeout: float = 30.0) -> AsyncIterator[bytes]:
        """Yields pieces `first`.. in order as each is verified.

        Raises SwarmError if the torrent fails, TimeoutError if no piece arrives
        for `stall_timeout` seconds.
        """
        for index in range(first, self.num_pieces):
            while not self.has_piece(index):
                if self.error:
                    raise SwarmError(self.error)
                if not await self.wait_changed(stall_timeout) and not self.has_piece(index):
                    raise TimeoutError(f"swarm stalled: no piece for {stall_timeout:.0f}s")
            yield await self.read_piece(index)

    def status(self) -> Any:
        return self.handle.status()

    def add_web_seed(self, url: str) -> None:
        """Adds a BEP 19 web seed to the running torrent."""
        if url not in self.web_seeds:
            self.web_seeds.append(url)
            self.handle.add_url_seed(url)

    def stream_window(self, first: int, count: int, first_ms: int, step_ms: int) -> None:
        """Asks for pieces `first`..`first+count-1` by deadlines (first_ms, then step_ms
        apart): libtorrent fetches them before others, from the fastest peers; every
        other piece stays rarest-first. Setting a deadline again only moves it."""
        for offset, index in enumerate(range(first, min(first + count, self.num_pieces))):
            if index not in self._have:
                self.handle.set_piece_deadline(index, first_ms + offset * step_ms)

    def share_work(
        self, rank: int, count: int, stream: int = 0, *, seed_bound: bool = False
    ) -> None:
        """Puts this edge's home pieces first (`home_priorities`): it is `rank` of the site's
        `count` edges, and `stream` is the piece its client waits for. A home piece is home no
        more once another edge holds it (one took it from the seeder, or finished the file).
        At a `seed_bound` site, once its home pieces are in, the edge leaves the seeders (seeds
        that are not edges) of this torrent (`Swarm.leave`): the seeder's upload goes to
        the pieces no edge has yet. Told `seed_bound=False` again (the caller's stream waited
        too long), it takes them back."""
        elsewhere = [False] * self.num_pieces
        edges: set[str] = set()
        seeders: set[str] = set()
        for peer in self.handle.get_peer_info():
            if peer.connection_type != lt.peer_info.standard_bittorrent:
                continue  # a web seed
            if is_edge_peer(peer.pid.to_bytes()):
                edges.add(peer.ip[0])
                for index, held in enumerate(peer.pieces[: self.num_pieces]):
                    elsewhere[index] = elsewhere[index] or held
            elif peer.flags & lt.peer_info.seed:
                seeders.add(peer.ip[0])
        have = [index in self._have for index in range(self.num_pieces)]
        priorities = home_priorities(
            self.num_pieces, rank, count, elsewhere, have, stream, seed_bound=seed_bound
        )
        if priorities != self._priorities:
            self._priorities = priorities
            self.handle.prioritize_pieces(priorities)
        if not seed_bound:
            if self.left_seeders:
                self.left_seeders = False
                self.handle.unset_flags(lt.torrent_flags.apply_ip_filter)
                self.handle.force_reannounce()
        elif not self.left_seeders and not home_left(self.num_pieces, rank, count, elsewhere, have):
            # Never an address an edge uses too (one host, tests): that would drop the edges.
            leave = seeders - edges
            if leave and self._leave is not None:
                self._leave(leave)
                self.handle.set_flags(lt.torrent_flags.apply_ip_filter)
                self.left_seeders = True

    def split(self, total: int) -> tuple[int, int]:
        """(from peers, from web seeds) of `total` payload bytes downloaded. Without a web seed
        every byte is a peer's. With one, a byte is a peer's only if a peer connection's counter
        showed it (polled by `transfer`); the rest, bytes of connections that closed between
        polls included, is counted as the web seed's: offload is never overstated."""
        if not self.web_seeds:
            return total, 0
        peers = min(self._peer_bytes, total)
        return peers, total - peers

    def transfer(self) -> Transfer:
        """Bytes downloaded by source, and the swarm as this torrent sees it now."""
        status = self.handle.status()
        peers = seeds = peer_rate = 0
        web_types = (lt.peer_info.web_seed, lt.peer_info.http_seed)
        for peer in self.handle.get_peer_info():
            if peer.connection_type in web_types:
                continue
            key = tuple(peer.ip)
            got = int(peer.total_download)
            last = self._last.get(key, 0)
            self._peer_bytes += got - last if got >= last else got
            self._last[key] = got
            peers += 1
            seeds += bool(peer.flags & lt.peer_info.seed)
            peer_rate += peer.payload_down_speed
        from_peers, from_web = self.split(int(status.total_payload_download))
        return Transfer(
            from_peers, from_web, peers, seeds, peer_rate, int(status.total_wanted_done)
        )

    async def resume_data(self) -> bytes:
        """libtorrent's resume data for this torrent (bencoded)."""
        self._resume = asyncio.get_running_loop().create_future()
        self.handle.save_resume_data(lt.save_resume_flags_t.save_info_dict)
        return await self._resume


@dataclass
class _Totals:
    uploaded: int = 0
    downloaded: int = 0
    web_seed_downloaded: int = 0
    by_torrent: dict[str, tuple[int, int]] = field(default_factory=dict)


class Swarm:
    """A libtorrent session on the running asyncio loop."""

    def __init__(
        self,
        settings: SwarmSettings,
        *,
        on_hash_failed: Callable[[SwarmTorrent], None] | None = None,
    ) -> None:
        """`on_hash_failed` is called once per piece that failed its hash, with its torrent: a
        service counts it (`PIECE_FAILURE_KIND`); a seeder re-hashes the file it seeds."""
        self.settings = settings
        self.peer_id = new_peer_id(settings.role)
        params = lt.session_params()
        params.settings = session_settings(settings, self.peer_id)  # type: ignore[assignment]
        self._session = lt.session(params)
        self._torrents: dict[str, SwarmTorrent] = {}
        # The same torrents by handle (hashed and compared by the torrent it refers to, in
        # the binding, with no round trip to libtorrent's thread), for the alert pump.
        self._by_handle: dict[Any, SwarmTorrent] = {}
        self._left: set[str] = set()  # seeder addresses edges left (`leave`)
        self._on_hash_failed = on_hash_failed
        self._loop = asyncio.get_running_loop()
        self._totals = _Totals()
        self._reader, writer = socket.socketpair()
        self._writer = writer
        self._reader.setblocking(False)
        writer.setblocking(False)
        self._session.set_alert_fd(writer.fileno())
        self._loop.add_reader(self._reader.fileno(), self._drain)
        self.queue = QueueControl(
            int(params.settings.get("max_allowed_in_request_queue", QUEUE_MAX))
        )
        self.site_depth = 0  # set by `know_site`; while set, it replaces `request_queue_depth`
        self._queue_task: asyncio.Task[None] | None = None
        capacity = settings.upload_capacity
        if capacity:
            self._queue_task = self._loop.create_task(self._control_queue(capacity))

    async def _control_queue(self, capacity: int) -> None:
        """Applies `request_queue_depth` every QUEUE_EVERY seconds from the measured upload."""
        last = self.stats().payload_uploaded_bytes
        last_t = self._loop.time()
        while True:
            await asyncio.sleep(QUEUE_EVERY)
            now, sent = self._loop.time(), self.stats().payload_uploaded_bytes
            rate = max(0, sent - last) / max(now - last_t, 1e-6)
            last, last_t = sent, now
            if not self.site_depth:
                self._set_queue(request_queue_depth(self.queue, rate, capacity))

    def _set_queue(self, control: QueueControl) -> None:
        if control.depth != self.queue.depth:
            self._session.apply_settings({"max_allowed_in_request_queue": control.depth})
        self.queue = control

    def know_site(self, edge_uplinks: Sequence[int]) -> int:
        """Tells an adaptive seeder the uplinks of the site's live edges (the registry's); from
        then on its request-queue depth is `site_queue_depth` of them, not learned from its
        own upload. Returns the depth (0: the site cannot tell; the seeder adapts as before)."""
        capacity = self.settings.upload_capacity
        self.site_depth = site_queue_depth(capacity, edge_uplinks) if capacity else 0
        if self.site_depth:
            self._set_queue(QueueControl(self.site_depth))
        return self.site_depth

    @property
    def adaptive(self) -> bool:
        """Whether this session adapts its request-queue depth (a seeder that knows its uplink)."""
        return self._queue_task is not None

    @property
    def listen_port(self) -> int:
        return int(self._session.listen_port())

    def _drain(self) -> None:
        try:
            while self._reader.recv(4096):
                pass
        except BlockingIOError:
            pass
        for alert in self._session.pop_alerts():
            self._dispatch(alert)

    def _torrent_of(self, alert: Any) -> SwarmTorrent | None:
        handle = getattr(alert, "handle", None)
        if handle is None or not handle.is_valid():
            return None
        return self._by_handle.get(handle)

    def _dispatch(self, alert: Any) -> None:
        if isinstance(alert, lt.peer_ban_alert):
            log.warning("peer_banned", address=str(alert.ip[0]), torrent=alert.torrent_name)
        torrent = self._torrent_of(alert)
        if torrent is None:
            return
        if isinstance(alert, lt.piece_finished_alert):
            torrent._piece_done(alert.piece_index)
        elif isinstance(alert, lt.read_piece_alert):
            future = torrent._reads.get(alert.piece)
            if future is not None and not future.done():
                if alert.error.value():
                    future.set_exception(SwarmError(f"reading piece: {alert.error.message()}"))
                else:
                    future.set_result(bytes(alert.buffer))
        elif isinstance(alert, lt.torrent_finished_alert):
            # libtorrent's "finished" means every wanted piece; ours, every piece (a seed-bound
            # edge wants none of some for a while: `home_priorities`).
            if torrent.handle.status().is_seeding:
                torrent.finished.set()
            torrent._notify()
        elif isinstance(alert, lt.hash_failed_alert):
            torrent.hash_failures += 1
            log.warning("piece_hash_failed", torrent=alert.torrent_name, piece=alert.piece_index)
            if self._on_hash_failed is not None:
                self._on_hash_failed(torrent)
        elif isinstance(alert, lt.torrent_error_alert | lt.file_error_alert):
            torrent._failed(alert.message())
        elif torrent._resume is None or torrent._resume.done():
            return
        elif isinstance(alert, lt.save_resume_data_alert):
            torrent._resume.set_result(lt.write_resume_data_buf(alert.params))
        elif isinstance(alert, lt.save_resume_data_failed_alert):
            torrent._resume.set_exception(SwarmError(alert.message()))

    def add(
        self,
        metainfo: bytes,
        save_path: Path,
        *,
        file_name: str | None = None,
        seed: bool = False,
        trackers: list[str] | tuple[str, ...] = (),
        web_seeds: list[str] | tuple[str, ...] = (),
        resume_data: bytes | None = None,
        sequential: bool = True,
    ) -> SwarmTorrent:
        """Adds a torrent; `file_name` stores its single file under another name.

        `seed=True` means the caller verified the file's SHA-256: libtorrent trusts
        it (seed mode) instead of re-hashing it.
        """
        info = lt.torrent_info(metainfo)
        key = _hex(info.info_hashes())
        existing = self._torrents.get(key)
        if existing is not None:
            return existing
        atp = lt.read_resume_data(resume_data) if resume_data else lt.add_torrent_params()
        atp.ti = info
        atp.save_path = str(save_path)
        if file_name and file_name != info.name():
            atp.renamed_files = {0: file_name}
        atp.trackers = list(trackers)
        atp.url_seeds = list(web_seeds)
        flags = lt.torrent_flags.disable_dht | lt.torrent_flags.disable_lsd
        if not self.settings.public:
            flags |= lt.torrent_flags.disable_pex
        if seed:
            flags |= lt.torrent_flags.seed_mode
        if sequential:
            flags |= lt.torrent_flags.sequential_download
        atp.flags = flags
        try:
            handle = self._session.add_torrent(atp)
        except RuntimeError as exc:
            raise SwarmError(f"adding torrent {info.name()}: {exc}") from None
        torrent = SwarmTorrent(
            handle, info.num_pieces(), info.piece_length(), info.total_size(), self.leave
        )
        torrent.web_seeds = list(web_seeds)
        self._torrents[key] = torrent
        self._by_handle[handle] = torrent
        if seed:
            torrent.finished.set()
        return torrent

    def leave(self, addresses: set[str]) -> None:
        """Blocks `addresses` for the torrents that apply the IP filter (flag
        `apply_ip_filter`, set by `SwarmTorrent.share_work`; `add` leaves it off)."""
        if addresses <= self._left:
            return
        self._left |= addresses
        rules = lt.ip_filter()
        for address in self._left:
            rules.add_rule(address, address, 1)  # 1: blocked
        self._session.set_ip_filter(rules)

    def reannounce(self) -> int:
        """Announces every torrent to its trackers now (a tracker lost its peers); returns how
        many."""
        for torrent in self._torrents.values():
            torrent.handle.force_reannounce(0, -1, lt.reannounce_flags_t.ignore_min_interval)
        return len(self._torrents)

    def get(self, info_hash_v1: str) -> SwarmTorrent | None:
        return self._torrents.get(info_hash_v1)

    def remove(self, torrent: SwarmTorrent, *, delete_files: bool = False) -> None:
        key = _hex(torrent.handle.info_hashes())
        status = torrent.handle.status()
        self._totals.uploaded += status.total_payload_upload
        self._totals.downloaded += status.total_payload_download
        self._totals.web_seed_downloaded += torrent.split(status.total_payload_download)[1]
        self._torrents.pop(key, None)
        self._by_handle.pop(torrent.handle, None)
        flags = lt.session.delete_files if delete_files else 0
        self._session.remove_torrent(torrent.handle, flags)

    def torrents(self) -> list[SwarmTorrent]:
        return list(self._torrents.values())

    def incoming_peers(self) -> int:
        """Peers connected now that dialled this session (not dialled by it): the sign that
        this session's listen port is reachable from outside (a NAT without a mapped port
        lets only outgoing connections through)."""
        return sum(
            1
            for torrent in self._torrents.values()
            for peer in torrent.handle.get_peer_info()
            if not peer.flags & lt.peer_info.local_connection
        )

    def stats(self) -> SwarmStats:
        """Totals over the session's life, including removed torrents."""
        up, down, web = (
            self._totals.uploaded,
            self._totals.downloaded,
            self._totals.web_seed_downloaded,
        )
        peers = up_rate = down_rate = 0
        for torrent in self._torrents.values():
            status = torrent.handle.status()
            up += status.total_payload_upload
            down += status.total_payload_download
            peers += status.num_peers
            up_rate += status.upload_payload_rate
            down_rate += status.download_payload_rate
            web += torrent.split(status.total_payload_download)[1]
        return SwarmStats(
            len(self._torrents), peers, up, down, up_rate, down_rate, web, self.queue.depth
        )

    def connect_peer(self, torrent: SwarmTorrent, host: str, port: int) -> None:
        """Adds a peer directly (benchmarks and tests of peer behaviour only)."""
        torrent.handle.connect_peer((host, port))

    def allow_only(self, networks: Sequence[str]) -> None:
        """Talk only to peers in these CIDR ranges (a lab peer's LAN); libtorrent's IP filter."""
        self._session.set_ip_filter(ip_filter(networks))

    def apply(self, **changes: Any) -> None:
        """Changes session settings at run time (rate limits, benchmark tuning)."""
        self._session.apply_settings(changes)  # type: ignore[arg-type]

    def close(self) -> None:
        if self._queue_task is not None:
            self._queue_task.cancel()
        self._loop.remove_reader(self._reader.fileno())
        self._session.pause()
        for torrent in list(self._torrents.values()):
            self._session.remove_torrent(torrent.handle)
        self._torrents.clear()
        self._by_handle.clear()
        # Dropping the last reference aborts the session and joins its threads.
        del self._session
        self._reader.close()
        self._writer.close()
