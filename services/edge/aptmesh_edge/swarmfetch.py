"""The edge's swarm side: torrent lookup, streaming verified pieces, publishing and seeding.

Theory of operation. `EdgeSwarm` is the `SwarmFetcher` the package service
is given when a tracker is configured (roles by wiring: without one, the
service gets None and every package comes from the upstream).

- `lookup` asks the tracker's index for the file's SHA-256 (the one the
  verified Packages gives) and remembers the record for `source_for`.
- `SwarmSource.fetch` adds the torrent (the tracker's announce URL) and
  appends pieces to the download in order as libtorrent verifies them:
  rarest-first; only when the client has waited a while for its next piece
  are the next few asked for by deadline (deadlines on every edge's next
  pieces had all edges pull the same pieces from the seeder at once). The
  upstream joins as BEP 19 web seed only when `sources.web_seed_reason` says
  the swarm is not keeping up (no peers, no seed, stalled or slow), so the
  swarm is never much slower than the mirror alone and yet the mirror sends
  about one copy per site. Bytes that came from the web seed are written
  (and so served and counted) as `upstream`, the rest as `swarm`. No piece in
  `swarm_timeout` seconds is `no_peers`; none for `swarm_stall_seconds` later
  is `swarm_stalled`; both fall back to the upstream over HTTP, which resumes
  at the first byte not yet written.
- Once the download is verified and committed, the scratch copy is dropped
  and the cached blob is seeded (seed mode: its SHA-256 was just checked).
- A verified file over the threshold that came from the upstream gets its
  torrent made (the identity function), published when the edge holds a
  token, and seeded.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path

from aptmesh import logs
from aptmesh.debian import FileHash
from aptmesh.swarm import Swarm, SwarmError, SwarmTorrent, seed_bound
from aptmesh.torrent import TorrentError, make_torrent, parse_torrent
from aptmesh_edge.checked import Pieces
from aptmesh_edge.decisions import FallbackReason, SourceKind
from aptmesh_edge.downloads import Download
from aptmesh_edge.metrics import EdgeMetrics
from aptmesh_edge.sources import (
    STREAM_PATIENCE,
    SourceUnavailable,
    SwarmProgress,
    TorrentState,
    WebSeedPolicy,
    stream_window,
    web_seed_reason,
    web_seed_share,
)
from aptmesh_edge.urls import Resource
from aptmesh_tracker.client import IndexUnavailable, NotFound, Rejected, TrackerClient
from aptmesh_tracker.records import Edge, PackageRecord

log = logs.get(__name__)

# Once the client has waited `sources.STREAM_PATIENCE` for its next piece, the next few
# (`sources.stream_window`) are asked for by deadline, the first within STREAM_FIRST_MS and
# each further one STREAM_STEP_MS later; otherwise the whole file is fetched rarest-first.
STREAM_FIRST_MS = 1000
STREAM_STEP_MS = 50
WEB_SEED_CHECK_EVERY = 0.25  # seconds between looks at whether the swarm keeps up
READ_AHEAD = 4 << 20  # bytes of verified pieces read in parallel ahead of the stream


class SwarmSource:
    """The swarm as a `Source` for one file whose torrent the tracker's index gave: writes only
    pieces libtorrent verified against the torrent's piece hashes."""

    kind = SourceKind.SWARM

    def __init__(self, owner: EdgeSwarm, record: PackageRecord, expected: FileHash) -> None:
        self._owner = owner
        self._record = record
        self._expected = expected

    async def fetch(self, resource: Resource, download: Download) -> None:
        owner = self._owner
        try:
            torrent = parse_torrent(self._record.torrent)
        except TorrentError as exc:
            raise SourceUnavailable(
                FallbackReason.SWARM_ERROR, f"the index's torrent is unusable: {exc}"
            ) from None
        if torrent.size != self._expected.size:
            raise SourceUnavailable(
                FallbackReason.SWARM_ERROR, "the index's torrent has the wrong size"
            )
        if download.written == 0:  # bytes from a fallback are checked piece by piece too
            download.check.know_pieces(Pieces(torrent.piece_length, torrent.v1_pieces))
        scratch = owner.scratch_dir / self._expected.sha256
        scratch.mkdir(parents=True, exist_ok=True)
        trackers = owner.trackers
        try:
            handle = owner.swarm.add(
                torrent.with_trackers(trackers, []),
                scratch,
                trackers=trackers,
                sequential=False,  # rarest-first; the client's next pieces go by deadline
            )
        except SwarmError as exc:
            raise SourceUnavailable(FallbackReason.SWARM_ERROR, str(exc)) from None
        owner.downloading[self._expected.sha256] = handle
        try:
            await self._stream(handle, torrent.piece_length, resource, download)
        finally:
            if download.written < torrent.size:
                owner.drop_download(self._expected.sha256)

    async def _stream(
        self, handle: SwarmTorrent, piece_length: int, resource: Resource, download: Download
    ) -> None:
        """Writes verified pieces in order from `download.written` on, asking libtorrent for
        the next few by deadline once the client has waited a while for one (`stream_window`),
        and adds the upstream as web seed when the swarm lags."""
        owner = self._owner
        urls = resource.upstream_urls()
        size = handle.size
        first = download.written // piece_length
        skip = download.written - first * piece_length
        loop = asyncio.get_running_loop()
        start = last_piece = loop.time()
        progressed = False
        next_check = next_share = start
        written_web = 0
        try:
            for index in range(first, handle.num_pieces):
                waiting_since = loop.time()
                asked = False  # deadlines set once per piece waited for (setting them moves them)
                while not handle.has_piece(index):
                    if handle.error:
                        raise SwarmError(handle.error)
                    now = loop.time()
                    window = 0 if asked else stream_window(now - waiting_since, piece_length)
                    if window:
                        handle.stream_window(index, window, STREAM_FIRST_MS, STREAM_STEP_MS)
                        asked = True
                    limit = owner.stall_seconds if progressed else owner.first_piece_timeout
                    if now - last_piece >= limit:
                        raise TimeoutError
                    if owner.site is not None and now >= next_share:
                        next_share = now + WEB_SEED_CHECK_EVERY
                        # Waiting long for a piece (its home edge may be gone) or with the
                        # upstream as web seed, the edge takes any piece from anyone.
                        patient = now - waiting_since < STREAM_PATIENCE and not handle.web_seeds
                        handle.share_work(
                            *owner.site, index, seed_bound=owner.seed_bound and patient
                        )
                    if not handle.web_seeds and urls and now >= next_check:
                        next_check = now + WEB_SEED_CHECK_EVERY
                        self._consider_web_seed(handle, resource, now - start, now - last_piece)
                    wait = min(WEB_SEED_CHECK_EVERY, last_piece + limit - now)
                    if await handle.wait_changed(max(wait, 0.0)):
                        last_piece = loop.time()
                        progressed = True
                handle.read_ahead(index + 1, max(1, READ_AHEAD // piece_length))
                data = await handle.read_piece(index)
                if index == first:
                    data = data[skip:]
                    download.begin(size, "", self.kind)
                if handle.web_seeds:
                    moved = handle.transfer()
                    web = web_seed_share(
                        download.written, written_web, len(data), moved.peer_bytes,
                        moved.web_seed_bytes,
                    )  # fmt: skip
                    written_web += web
                    download.write(data[: len(data) - web], self.kind)
                    download.write(data[len(data) - web :], SourceKind.UPSTREAM)
                else:
                    download.write(data, self.kind, verified_piece=True)
        except TimeoutError:
            reason = FallbackReason.SWARM_STALLED if progressed else FallbackReason.NO_PEERS
            raise SourceUnavailable(reason, f"swarm: no progress ({reason.value})") from None
        except SwarmError as exc:
            raise SourceUnavailable(FallbackReason.SWARM_ERROR, f"swarm: {exc}") from None

    def _consider_web_seed(
        self, handle: SwarmTorrent, resource: Resource, elapsed: float, since_piece: float
    ) -> None:
        owner = self._owner
        moved = handle.transfer()
        progress = SwarmProgress(
            elapsed, since_piece, moved.peers, moved.seeds, moved.peer_rate, moved.done_bytes,
            handle.size,
        )  # fmt: skip
        reason = web_seed_reason(progress, owner.web_seed_policy)
        if reason is None:
            return
        for url in resource.upstream_urls():
            handle.add_web_seed(url)
        owner.metrics.fell_back(reason, resource.path)
        log.info(
            "web_seed_added",
            path=resource.path,
            reason=reason.value,
            elapsed=round(elapsed, 2),
            peers=moved.peers,
            seeds=moved.seeds,
            peer_rate=moved.peer_rate,
        )


class EdgeSwarm:
    """Owns the edge's libtorrent session and its torrents (downloading, seeding), the records
    the tracker's index gave, and this edge's share of the site's work."""

    def __init__(
        self,
        swarm: Swarm,
        tracker: TrackerClient,
        *,
        scratch_dir: Path,
        announce: tuple[str, ...],
        can_publish: bool,
        extra_trackers: tuple[str, ...] = (),
        metrics: EdgeMetrics,
        first_piece_timeout: float,
        stall_seconds: float,
        self_url: Callable[[], str] = str,
        web_seed_policy: WebSeedPolicy | None = None,
    ) -> None:
        self.swarm = swarm
        self.tracker = tracker
        self.scratch_dir = scratch_dir
        self.trackers = [*announce, *extra_trackers]
        self.can_publish = can_publish
        self.metrics = metrics
        self.first_piece_timeout = first_piece_timeout
        self.stall_seconds = stall_seconds
        self.self_url = self_url
        self.web_seed_policy = web_seed_policy or WebSeedPolicy()
        self._records: dict[str, PackageRecord] = {}
        # (rank, count) of this edge among the site's live edges, by id: which pieces of every
        # torrent are its own to ask the seeder for (`SwarmTorrent.share_work`). None while
        # this edge is not in the registry (no publish token, or not yet): then it shares no
        # work and libtorrent picks rarest-first, since unranked edges would all ask for the
        # same pieces.
        self.site: tuple[int, int] | None = None
        # Whether the site's seed boxes are its bottleneck (`swarm.seed_bound` of the uplinks
        # in the registry): then edges ask the seeder for their home pieces only.
        self.seed_bound = False
        self.downloading: dict[str, SwarmTorrent] = {}
        self.seeding: dict[str, SwarmTorrent] = {}
        self._uploaded = 0
        self._downloaded = 0
        self._tasks: set[asyncio.Task[None]] = set()

    def set_site(self, self_id: str, edges: Sequence[Edge], seed_capacity: int = 0) -> None:
        """The live edges of the registry (this edge among them, once registered) and the
        summed uplink of the live seed boxes (0: unknown)."""
        ids = sorted({edge.id for edge in edges})
        self.site = (ids.index(self_id), len(ids)) if self_id in ids else None
        uplinks = [edge.upload_capacity for edge in edges]
        self.seed_bound = bool(seed_bound(seed_capacity, uplinks))

    def open(self) -> None:
        if self.scratch_dir.exists():
            shutil.rmtree(self.scratch_dir)  # partial swarm downloads: the cache has what counts
        self.scratch_dir.mkdir(parents=True)

    async def lookup(self, expected: FileHash) -> TorrentState:
        try:
            record = await self.tracker.get(expected.sha256)
        except NotFound:
            return TorrentState.ABSENT
        except (IndexUnavailable, Rejected) as exc:
            log.warning("tracker_lookup_failed", sha256=expected.sha256, error=str(exc))
            return TorrentState.TRACKER_UNREACHABLE
        if record.sha256 != expected.sha256 or record.size != expected.size:
            return TorrentState.ABSENT
        self._records[expected.sha256] = record
        return TorrentState.FOUND

    def source_for(self, expected: FileHash) -> SwarmSource:
        return SwarmSource(self, self._records[expected.sha256], expected)

    def drop_download(self, sha256: str) -> None:
        torrent = self.downloading.pop(sha256, None)
        if torrent is not None:
            self.swarm.remove(torrent, delete_files=True)
        shutil.rmtree(self.scratch_dir / sha256, ignore_errors=True)

    def _web_seeds(self, resource: Resource) -> list[str]:
        seeds = resource.upstream_urls()
        if self_url := self.self_url():
            seeds.append(self_url + resource.prefix_url())
        return seeds

    def _seed(
        self, resource: Resource, expected: FileHash, blob_path: Path, metainfo: bytes
    ) -> None:
        if expected.sha256 in self.seeding:
            return
        trackers = self.trackers
        try:
            self.seeding[expected.sha256] = self.swarm.add(
                metainfo,
                blob_path.parent,
                file_name=blob_path.name,
                seed=True,
                trackers=trackers,
                web_seeds=self._web_seeds(resource),
            )
        except SwarmError as exc:
            log.warning("seeding_failed", path=resource.path, error=str(exc))

    async def seed_cached(self, resource: Resource, expected: FileHash, blob_path: str) -> None:
        record = self._records.get(expected.sha256)
        self.drop_download(expected.sha256)
        if record is not None:
            self._seed(resource, expected, Path(blob_path), record.torrent)

    async def after_upstream(self, resource: Resource, expected: FileHash, blob_path: str) -> None:
        path = Path(blob_path)
        name = resource.path.rsplit("/", 1)[-1]
        try:
            hashed = await asyncio.to_thread(make_torrent, path, name)
        except (OSError, TorrentError) as exc:
            log.warning("torrent_not_made", path=resource.path, error=str(exc))
            return
        if hashed.sha256 != expected.sha256:
            return  # the blob changed under us (evicted and replaced): nothing to publish
        torrent = hashed.torrent
        if self.can_publish:
            record = PackageRecord(
                sha256=expected.sha256,
                size=expected.size,
                name=name,
                info_hash_v1=torrent.info_hash_v1,
                info_hash_v2=torrent.info_hash_v2,
                piece_length=torrent.piece_length,
                torrent=torrent.metainfo,
                upstream_urls=tuple(resource.upstream_urls()),
            )
            try:
                created = await self.tracker.publish(record)
                log.info("torrent_published", path=resource.path, created=created)
            except (IndexUnavailable, Rejected) as exc:
                log.warning("publish_failed", path=resource.path, error=str(exc))
        self._seed(resource, expected, path, torrent.metainfo)

    def evicted(self, sha256: str) -> None:
        torrent = self.seeding.pop(sha256, None)
        if torrent is not None:
            self.swarm.remove(torrent)

    def update_metrics(self) -> None:
        stats = self.swarm.stats()
        self.metrics.swarm_peers.set(stats.peers)
        self.metrics.swarm_torrents.set(stats.torrents)
        payload = self.metrics.torrent_payload
        from_peers = stats.payload_downloaded_bytes - stats.web_seed_downloaded_bytes
        if stats.payload_uploaded_bytes > self._uploaded:
            payload.labels(service="edge", direction="upload").inc(
                stats.payload_uploaded_bytes - self._uploaded
            )
            self._uploaded = stats.payload_uploaded_bytes
        if from_peers > self._downloaded:
            payload.labels(service="edge", direction="download").inc(from_peers - self._downloaded)
            self._downloaded = from_peers

    def close(self) -> None:
        for sha256 in list(self.downloading):
            with contextlib.suppress(SwarmError, RuntimeError):
                self.drop_download(sha256)
