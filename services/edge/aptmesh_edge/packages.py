"""The package logic: which source a package file comes from, in what order, with what fallback.

A blob whose SHA-256 the verified index names is served from the cache;
otherwise one `Download` per file is started and every client joins it
(downloads.py). The sources, in order:

1. a verified file below `swarm_min_size` is first asked of this edge's parent
   for it in the zone's tree (site.py), for a client or for another edge;
2. then the swarm, when `sources.choose_source` says so (a large verified file
   whose torrent the tracker's index knows);
3. then the upstream over HTTP, resuming where the others stopped; every
   fall back to it is counted with its `FallbackReason`. A file whose hash the
   index gives is asked again when the upstream fails (5xx, a reset or short
   body, a hang), resuming with `Range` + `If-Range` (`upstream.fetch_retrying`,
   the rule for indexes of known hash too; its bytes are verified whole all
   the same); any other file gets the clean error at once.

Every source writes through the download's check (checked.py), which alone
decides what its readers get; a download is committed to the cache only after
it verified (or, with verification off, by the hash of its bytes), and only a
committed file is seeded. A file the disk has no room for is passed through
from the upstream, checked the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine, Sequence
from typing import Any

from aptmesh import logs
from aptmesh.debian import FileClass, FileHash
from aptmesh_edge.body import Body, content_type, http_date
from aptmesh_edge.cache import BlobStore, PathIndex, PathRecord
from aptmesh_edge.checked import DownloadFailed
from aptmesh_edge.decisions import FallbackReason, Outcome, SourceKind
from aptmesh_edge.downloads import DiskFull, Download, is_disk_full
from aptmesh_edge.metrics import EdgeMetrics
from aptmesh_edge.site import SiteFetch
from aptmesh_edge.sources import (
    AfterCommit,
    Facts,
    Source,
    SourceUnavailable,
    Step,
    SwarmFetcher,
    after_fetch,
    choose_source,
)
from aptmesh_edge.trust import Verifier
from aptmesh_edge.upstream import PassThrough, UpstreamClient, fetch_retrying
from aptmesh_edge.urls import Resource

log = logs.get(__name__)

# Free space kept beyond a download's size before the edge writes it to the cache.
DISK_RESERVE = 256 * 1024


class PackageService:
    """Owns the downloads in flight (one per cache key), the downloads waiting for a parent
    edge, the background swarm tasks, and the hit and miss counts; the files themselves are
    the `BlobStore`'s and the `PathIndex`'s."""

    def __init__(
        self,
        *,
        blobs: BlobStore,
        paths: PathIndex,
        upstream: UpstreamClient,
        http: Source,
        verifier: Verifier,
        metrics: EdgeMetrics,
        swarm_min_size: int,
        swarm: SwarmFetcher | None = None,
        site: SiteFetch | None = None,
    ) -> None:
        self._blobs = blobs
        self._paths = paths
        self._upstream = upstream
        self._http = http
        self._verifier = verifier
        self._metrics = metrics
        self._swarm_min_size = swarm_min_size
        self._swarm = swarm
        self._site = site
        self._downloads: dict[str, Download] = {}
        # Downloads waiting for a parent edge, by key: (set to make them use the upstream,
        # the parent's id).
        self._site_waits: dict[str, tuple[asyncio.Event, str]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._counts = {Outcome.HIT: 0, Outcome.MISS: 0}

    def in_flight(self, key: str) -> Download | None:
        """The running download of a cache key, if any (metrics, tests)."""
        return self._downloads.get(key)

    def counts(self) -> tuple[int, int]:
        """(hits, misses) of package requests since start-up."""
        return self._counts[Outcome.HIT], self._counts[Outcome.MISS]

    # -- hits ---------------------------------------------------------------------

    def cached(self, resource: Resource, expected: FileHash | None = None) -> Body | None:
        """`expected`: a collection's plain file's size and SHA-256 (no index lists it)."""
        expected = expected or self._verifier.expected(resource)
        record = self._paths.get(resource.key)
        sha256 = expected.sha256 if expected else (record.sha256 if record else None)
        blob = self._blobs.get(sha256) if sha256 else None
        if blob is None:
            return None
        data = self._blobs.memory(blob)
        last_modified = record.last_modified if record and record.sha256 == blob.sha256 else ""
        if not last_modified:
            with contextlib.suppress(OSError):
                last_modified = http_date(blob.path.stat().st_mtime)
        return Body(
            payload=blob.path if data is None else data,
            size=blob.size,
            last_modified=last_modified,
            source=SourceKind.CACHE,
            outcome=Outcome.HIT,
            content_type=content_type(resource.path),
            sha256=blob.sha256,
        )

    def hit_hot(self, resource: Resource, sha256: str) -> bool:
        """Whether a package answered from memory before still may be: the index still names
        that blob and the memory tier still holds it (counted as a hit)."""
        expected = self._verifier.expected(resource)
        if expected is not None and expected.sha256 != sha256:
            return False
        if not self._blobs.in_memory(sha256):
            return False
        self._counts[Outcome.HIT] += 1
        return True

    # -- requests -----------------------------------------------------------------

    async def get(
        self, resource: Resource, *, via: Sequence[str] = (), expected: FileHash | None = None
    ) -> Body:
        """A package file; `via`: the edges that asked, in order (empty for a client);
        `expected`: what a collection says a plain file is (else the verified index says)."""
        expected = expected or self._verifier.expected(resource)
        cached = self.cached(resource, expected)
        if cached is not None:
            self._counts[Outcome.HIT] += 1
            return cached
        self._counts[Outcome.MISS] += 1
        keep = expected is not None or self._verifier.keeps_unverified()
        return await self._join(
            resource, expected, keep=keep, outcome=Outcome.MISS if keep else Outcome.BYPASS, via=via
        )

    async def get_other(self, resource: Resource) -> Body:
        """A file that is neither index nor package: passed through, never cached."""
        return await self._join(resource, None, keep=False, outcome=Outcome.BYPASS)

    async def _join(
        self,
        resource: Resource,
        expected: FileHash | None,
        *,
        keep: bool,
        outcome: Outcome,
        via: Sequence[str] = (),
    ) -> Body:
        download = self._downloads.get(resource.key)
        waiting = self._site_waits.get(resource.key) if via else None
        if (
            waiting is not None
            and self._site is not None
            and self._site.closes_circle(via, waiting[1])
        ):
            # The edges' lists disagree: the edge this one waits for, or this one, asked
            # already, and waiting for it would close a circle.
            waiting[0].set()
        if (
            download is None
            and expected is not None
            and not self._room_for(self._disk_need(expected))
        ):
            return await self._pass_through(resource, expected)
        if download is None:
            download = Download(
                resource.key,
                self._blobs.new_tmp(),
                expected,
                memory_max=self._blobs.memory_file_max_bytes,
            )
            self._downloads[resource.key] = download
            self._metrics.downloads_active.inc()
            task = asyncio.create_task(self._run(resource, download, keep, via))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        # Another edge gets the bytes as they arrive, before this edge has them all (it checks
        # them itself; the last byte still waits for this edge's check): a file relayed along
        # the site's tree is not held back at every hop. Clients wait for `begin`.
        relay = bool(via) and download.expected is not None  # its size is known
        reader = download.open_reader(relay=relay)
        try:
            if not relay:
                await asyncio.shield(download.started)
        except BaseException:
            reader.close()
            raise
        return Body(
            payload=reader,
            size=download.size,
            last_modified=download.last_modified,
            source=download.source,
            outcome=outcome,
            content_type=content_type(resource.path),
        )

    def _disk_need(self, expected: FileHash) -> int:
        """Bytes a file takes on the cache's disk while it is fetched: twice its size when
        it may come through the swarm (libtorrent's scratch copy beside the checked one)."""
        swarmed = self._swarm is not None and expected.size >= self._swarm_min_size
        return expected.size * (2 if swarmed else 1)

    def _room_for(self, size: int) -> bool:
        """Whether the cache's disk has room for `size` more bytes besides the downloads
        already running, evicting least recently used blobs to make it (ahead of ENOSPC: a
        cache limit larger than the disk must not fill it)."""
        pending = sum(max(0, (d.size or 0) - d.written) for d in self._downloads.values())
        return self._blobs.make_room(size + pending, DISK_RESERVE)

    async def _pass_through(self, resource: Resource, expected: FileHash) -> Body:
        """The file does not fit on the cache's disk: stream it from upstream, uncached."""
        self._metrics.disk_full.labels(
            file_class=resource.file_class.value, action="pass_through"
        ).inc()
        log.warning("cache_full_pass_through", key=resource.key, size=expected.size)
        stream = await PassThrough.open(
            self._upstream, resource, expected, self._blobs.memory_file_max_bytes
        )
        return Body(
            payload=stream,
            size=stream.size,
            last_modified=stream.last_modified,
            source=SourceKind.UPSTREAM,
            outcome=Outcome.BYPASS,
            content_type=content_type(resource.path),
        )

    # -- the download -------------------------------------------------------------

    async def _run(
        self, resource: Resource, download: Download, keep: bool, via: Sequence[str]
    ) -> None:
        try:
            await self._fill(resource, download, via)
            await download.finish()
        except DownloadFailed as exc:
            self._end(resource, download)
            if isinstance(exc, DiskFull):
                self._metrics.disk_full.labels(
                    file_class=resource.file_class.value, action="failed"
                ).inc()
                log.error("download_not_stored", key=resource.key, reason=exc.text)
            if exc.failure is not None:
                kind = exc.failure.value
                self._metrics.verification_failures.labels(
                    service="edge", kind=f"package_{kind}"
                ).inc()
                log.warning("package_refused", key=resource.key, kind=kind, reason=exc.text)
            download.fail(exc)
            return
        except Exception:
            self._end(resource, download)
            log.exception("download_failed", key=resource.key)
            download.fail(DownloadFailed(502, f"fetching {resource.path}: internal error"))
            return
        self._end(resource, download, keep=keep)
        download.succeed()

    async def _fill(self, resource: Resource, download: Download, via: Sequence[str]) -> None:
        """Tries the sources in order (see the module's docstring)."""
        site = self._site_source(resource, download, via)
        if site is not None:
            try:
                await site.fetch(resource, download)
                return
            except SourceUnavailable:
                pass  # counted by the site; the download was rewound to nothing
            finally:
                self._site_waits.pop(resource.key, None)
        expected, swarm = download.expected, self._swarm
        choice = choose_source(Facts(swarm is not None, self._swarm_min_size, expected))
        if choice.step is Step.LOOKUP and swarm is not None and expected is not None:
            state = await swarm.lookup(expected)
            choice = choose_source(Facts(True, self._swarm_min_size, expected, state))
        reason = choice.fallback_reason
        if choice.step is Step.SWARM and swarm is not None and expected is not None:
            try:
                await swarm.source_for(expected).fetch(resource, download)
                return
            except SourceUnavailable as exc:
                reason = exc.reason
                log.info("swarm_fallback", key=resource.key, reason=_label(reason), error=exc.text)
        self._count_fallback(resource, reason)
        await self._from_upstream(resource, download)

    async def _from_upstream(self, resource: Resource, download: Download) -> None:
        await fetch_retrying(
            self._http, resource, download, self._metrics, known=download.expected is not None
        )

    def _site_source(
        self, resource: Resource, download: Download, via: Sequence[str]
    ) -> Source | None:
        """This edge's parent for the file in the zone (a small, verified package file that
        this edge does not own; `site.site_parent`), for a request through the edges `via`."""
        site, expected = self._site, download.expected
        if site is None or expected is None or expected.size >= self._swarm_min_size:
            return None
        if resource.file_class is not FileClass.PACKAGE:
            return None
        parent = site.parent_for(expected.sha256, via)
        if parent is None:
            return None
        abandon = asyncio.Event()
        self._site_waits[resource.key] = (abandon, parent.id)
        return site.source(parent, abandon, via)

    def _count_fallback(self, resource: Resource, reason: FallbackReason | None) -> None:
        if reason is not None and resource.file_class is FileClass.PACKAGE:
            self._metrics.fell_back(reason, resource.path)

    def _end(self, resource: Resource, download: Download, *, keep: bool = False) -> None:
        """Removes the download from the table and commits or drops its file, in one step."""
        self._downloads.pop(resource.key, None)
        self._metrics.downloads_active.dec()
        if not keep or download.size is None:
            download.tmp.unlink(missing_ok=True)
            return
        try:
            blob = self._blobs.commit(download.tmp, download.sha256, download.size)
            self._paths.put(
                resource.key, PathRecord(download.sha256, download.size, download.last_modified)
            )
        except OSError as exc:
            # Verified, but not storable (a new directory or journal line needs a block):
            # readers still get it through their open descriptors; the cache forgets it.
            if not is_disk_full(exc):
                log.exception("commit_failed", key=resource.key)
            else:
                self._metrics.disk_full.labels(
                    file_class=resource.file_class.value, action="not_cached"
                ).inc()
                log.error("download_not_stored", key=resource.key, reason=exc.strerror)
            self._blobs.discard(download.sha256)
            download.tmp.unlink(missing_ok=True)
            self._metrics.show_cache(self._blobs.stats())
            return
        self._metrics.show_cache(self._blobs.stats())
        self._after_commit(resource, download, str(blob.path))

    def _after_commit(self, resource: Resource, download: Download, blob_path: str) -> None:
        swarm, expected = self._swarm, download.expected
        if swarm is None or expected is None:
            return
        action = after_fetch(download.source, expected, self._swarm_min_size)
        if action is AfterCommit.SEED:
            self._background(swarm.seed_cached(resource, expected, blob_path))
        elif action is AfterCommit.MAKE_TORRENT:
            self._background(swarm.after_upstream(resource, expected, blob_path))

    def _background(self, work: Coroutine[Any, Any, None]) -> None:
        async def guarded() -> None:
            try:
                await work
            except Exception:
                log.exception("swarm_task_failed")

        task = asyncio.create_task(guarded())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def wait_idle(self) -> None:
        """Waits for downloads and swarm tasks in flight (tests, prefetch)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def close(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task
        for download in list(self._downloads.values()):
            download.fail(DownloadFailed(503, "the edge is shutting down"))
            download.tmp.unlink(missing_ok=True)
        self._downloads.clear()


def _label(reason: FallbackReason | None) -> str:
    return reason.value if reason is not None else ""
