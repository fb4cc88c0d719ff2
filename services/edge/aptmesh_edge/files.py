"""The edge's logic: answering an index or package request from cache, swarm or upstream.

Index files (`InRelease`, `Packages*`, `by-hash/`...): a cached copy fetched
less than `freeze_seconds` ago is served as is (apt-cacher-ng's
FreshIndexMaxAge), so clients updating together see one state; otherwise one
conditional request per file goes upstream however many clients wait
(`_index_tasks`). A fresh index is believed only after the verifier accepts it
(an InRelease's signature; a Packages file's hash in that InRelease); the
InRelease an index depends on is fetched first. `by-hash/` files never change
and are not revalidated. If the upstream cannot be reached, the cached copy is
served (counted); with nothing cached the client gets 502 or 504.

Package files: a blob whose SHA-256 the verified index names is served from
the cache; otherwise one `Download` per file is started and every client
joins it (see downloads.py). A verified file below `swarm_min_size` is first
asked of this edge's parent for it in the zone's tree (site.py), for a client
or for another edge; another edge gets its bytes as they arrive. Otherwise, or
if that fails, the source (swarm or upstream)
is chosen by `sources.choose_source`. A download is kept only if it matches the
index (or, with verification off, by the hash of its bytes).
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import functools
import hashlib
import os
import shutil
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aptmesh import logs
from aptmesh_edge.cache import BlobStore, IndexEntry, IndexMeta, IndexStore, PathIndex, PathRecord
from aptmesh_edge.downloads import (
    DISK_FULL_TEXT,
    BodyReader,
    DiskFull,
    Download,
    DownloadFailed,
    Expected,
    is_disk_full,
)
from aptmesh_edge.metrics import EdgeMetrics
from aptmesh_edge.site import SiteFetch
from aptmesh_edge.sources import (
    Choice,
    Facts,
    SwarmFetcher,
    SwarmUnavailable,
    after_fetch,
    choose_source,
)
from aptmesh_edge.upstream import HttpSource, PassThrough, UpstreamClient, UpstreamFailure
from aptmesh_edge.urls import FileClass, Resource
from aptmesh_edge.verify import VerificationFailed, Verifier

log = logs.get(__name__)

# Free space kept beyond a download's size before the edge writes it to the cache.
DISK_RESERVE = 256 * 1024


@dataclass
class Body:
    """A response body the HTTP layer sends: bytes in memory, a file, or a running download."""

    size: int | None
    last_modified: str
    source: str  # cache, upstream, swarm or edge (the served-bytes label)
    outcome: str  # hit, miss, revalidated, stale, bypass (the requests label)
    data: bytes | None = None
    path: Path | None = None
    reader: BodyReader | None = None
    content_type: str = "application/octet-stream"
    sha256: str = ""  # of a cached package file


def http_date(timestamp: float) -> str:
    return email.utils.formatdate(timestamp, usegmt=True)


_CONTENT_TYPES = {
    ".deb": "application/vnd.debian.binary-package",
    ".udeb": "application/vnd.debian.binary-package",
    ".gz": "application/gzip",
    ".xz": "application/x-xz",
    ".bz2": "application/x-bzip2",
}


@functools.lru_cache(maxsize=65536)
def content_type(path: str) -> str:
    name = path.rsplit("/", 1)[-1]
    if name in {"InRelease", "Release", "Packages", "Sources"} or name.startswith("Translation"):
        return "text/plain; charset=utf-8"
    return _CONTENT_TYPES.get(os.path.splitext(name)[1], "application/octet-stream")


class FileService:
    def __init__(
        self,
        *,
        blobs: BlobStore,
        paths: PathIndex,
        indexes: IndexStore,
        upstream: UpstreamClient,
        verifier: Verifier,
        metrics: EdgeMetrics,
        freeze_seconds: float,
        swarm_min_size: int,
        swarm: SwarmFetcher | None = None,
        site: SiteFetch | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.blobs = blobs
        self.paths = paths
        self.indexes = indexes
        self.upstream = upstream
        self.http_source = HttpSource(upstream)
        self.verifier = verifier
        self.metrics = metrics
        self.freeze_seconds = freeze_seconds
        self.swarm_min_size = swarm_min_size
        self.swarm = swarm
        self.site = site
        self.clock = clock
        self._index_tasks: dict[str, asyncio.Task[tuple[IndexEntry, str]]] = {}
        self._fed: set[str] = set()  # index keys the verifier has seen in this process
        self._downloads: dict[str, Download] = {}
        # Downloads waiting for a parent edge, by key: (set to make them use the upstream,
        # the parent's id).
        self._site_waits: dict[str, tuple[asyncio.Event, str]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._counts = {"hit": 0, "miss": 0}

    def in_flight(self, key: str) -> Download | None:
        """The running download of a cache key, if any (metrics, tests)."""
        return self._downloads.get(key)

    def counts(self) -> tuple[int, int]:
        """(hits, misses) of package requests since start-up."""
        return self._counts["hit"], self._counts["miss"]

    async def get(self, resource: Resource, *, via: Sequence[str] = ()) -> Body:
        """`via`: the edges that asked, in order (`X-Aptmesh-Via`; empty for a client)."""
        if resource.file_class is FileClass.INDEX:
            return await self.get_index(resource)
        if resource.file_class is FileClass.PACKAGE:
            return await self.get_package(resource, via=via)
        return await self.get_other(resource)

    # -- indexes ------------------------------------------------------------------

    async def get_index(self, resource: Resource) -> Body:
        entry, outcome = await self._index(resource)
        meta = entry.meta
        data = None
        if meta.size <= max(self.blobs.memory_file_max_bytes, 64 * 1024):
            data = entry.path.read_bytes()
            if len(data) != meta.size:
                raise DownloadFailed(502, "cached index changed on disk")
        return Body(
            size=meta.size,
            last_modified=meta.last_modified or http_date(meta.fetched_at),
            source="upstream" if outcome == "miss" else "cache",
            outcome=outcome,
            data=data,
            path=None if data is not None else entry.path,
            content_type=content_type(resource.path),
        )

    async def _index(self, resource: Resource) -> tuple[IndexEntry, str]:
        entry = self.indexes.get(resource.key)
        fresh = entry is not None and (
            resource.immutable or self.clock() - entry.meta.fetched_at < self.freeze_seconds
        )
        if entry is not None and fresh:
            if resource.key in self._fed or await self._feed(resource, entry):
                return entry, "hit"
            entry = None  # the cached copy cannot be vouched for any more: fetch it whole
        task = self._index_tasks.get(resource.key)
        if task is None:
            task = asyncio.create_task(self._refresh_index(resource, entry))
            self._index_tasks[resource.key] = task
            task.add_done_callback(lambda _: self._index_tasks.pop(resource.key, None))
        return await asyncio.shield(task)

    async def _ensure_release(self, resource: Resource) -> None:
        """The verifier holds the InRelease that vouches for `resource` (fetched if need be)."""
        release = self.verifier.release_for(resource)
        if release is None or release.key == resource.key or release.key in self._fed:
            return
        await self._index(release)

    async def _feed(self, resource: Resource, entry: IndexEntry) -> bool:
        """Tells the verifier about an index loaded from disk (after a restart); False if it
        does not verify any more (a newer InRelease moved on, the key changed)."""
        await self._ensure_release(resource)
        try:
            await self.verifier.check_index(
                resource, entry.path, entry.meta.sha256, entry.meta.size
            )
        except VerificationFailed as exc:
            log.info("cached_index_not_verified", key=resource.key, reason=exc.text)
            return False
        self._fed.add(resource.key)
        return True

    async def _refresh_index(
        self, resource: Resource, entry: IndexEntry | None
    ) -> tuple[IndexEntry, str]:
        await self._ensure_release(resource)
        headers = {}
        if entry is not None and not resource.immutable:
            if entry.meta.last_modified:
                headers["If-Modified-Since"] = entry.meta.last_modified
            if entry.meta.etag:
                headers["If-None-Match"] = entry.meta.etag
        tmp = self.blobs.new_tmp()
        try:
            async with self.upstream.get(resource.upstream_urls(), headers) as resp:
                if resp.status == 304 and entry is not None:
                    try:
                        touched = self.indexes.touch(resource.key, self.clock())
                    except OSError as exc:  # the new fetch time is kept in memory only
                        if not is_disk_full(exc):
                            raise
                        log.warning("index_meta_not_stored", key=resource.key, reason=exc.strerror)
                        touched = entry
                    assert touched is not None
                    if resource.key not in self._fed and not await self._feed(resource, touched):
                        raise DownloadFailed(502, f"cached {resource.path} no longer verifies")
                    return touched, "revalidated"
                if resp.status != 200:
                    raise UpstreamFailure(
                        resp.status if 400 <= resp.status < 500 else 502,
                        f"fetching {resource.path} from upstream: it answered {resp.status}",
                    )
                digest = hashlib.sha256()
                size = 0
                with tmp.open("wb") as out:
                    async for chunk in resp.chunks():
                        out.write(chunk)
                        digest.update(chunk)
                        size += len(chunk)
                    out.flush()
                    await asyncio.to_thread(os.fsync, out.fileno())
                last_modified = resp.headers.get("Last-Modified", "")
                etag = resp.headers.get("ETag", "")
        except UpstreamFailure as exc:
            tmp.unlink(missing_ok=True)
            if entry is not None and exc.status in (502, 504):
                self.metrics.stale_served.inc()
                log.warning("serving_stale_index", key=resource.key, reason=exc.text)
                if resource.key not in self._fed and not await self._feed(resource, entry):
                    raise
                return entry, "stale"
            raise
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            if is_disk_full(exc):
                raise self._index_disk_full(resource, exc) from None
            raise
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        sha256 = digest.hexdigest()
        if "/by-hash/SHA256/" in f"/{resource.path}" and resource.path.rsplit("/", 1)[1] != sha256:
            tmp.unlink(missing_ok=True)
            self.metrics.verification_failures.labels(service="edge", kind="by_hash").inc()
            raise DownloadFailed(502, "by-hash file does not match its name", kind="by_hash")
        try:
            verified = await self.verifier.check_index(resource, tmp, sha256, size)
        except VerificationFailed as exc:
            tmp.unlink(missing_ok=True)
            self.metrics.verification_failures.labels(service="edge", kind=exc.kind).inc()
            log.warning("index_refused", key=resource.key, kind=exc.kind, reason=exc.text)
            raise DownloadFailed(502, exc.text, kind=exc.kind) from None
        url = f"{resource.origin.scheme}://{resource.origin.host}:{resource.origin.port}/"
        meta = IndexMeta(
            sha256, size, last_modified, etag, self.clock(), verified, url + resource.path
        )
        try:
            stored = self.indexes.put(resource.key, tmp, meta)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            if is_disk_full(exc):
                raise self._index_disk_full(resource, exc) from None
            raise
        self._fed.add(resource.key)
        return stored, "miss"

    def _index_disk_full(self, resource: Resource, exc: OSError) -> DiskFull:
        self.metrics.disk_full.labels(file_class="index", action="failed").inc()
        log.error("index_not_stored", key=resource.key, reason=exc.strerror)
        return DiskFull(503, f"{DISK_FULL_TEXT}: cannot store {resource.path} ({exc.strerror})")

    async def warm(self, resolve: Callable[[str], Resource | None]) -> int:
        """Teaches the verifier the verified indexes on disk (after a restart), InRelease
        first, so package files they name are cached and served without a new update."""
        entries = [e for e in self.indexes.all() if e.meta.verified and e.meta.url]
        entries.sort(key=lambda e: not e.key.endswith("/InRelease"))
        learned = 0
        for entry in entries:
            resource = resolve(entry.meta.url)
            if resource is None or resource.key != entry.key or resource.key in self._fed:
                continue
            try:
                learned += await self._feed(resource, entry)
            except DownloadFailed as exc:
                log.info("warm_skipped", key=entry.key, reason=exc.text)
        return learned

    # -- other files: passed through, never cached ---------------------------------

    async def get_other(self, resource: Resource) -> Body:
        return await self._join(resource, None, keep=False, outcome="bypass")

    # -- package files ------------------------------------------------------------

    def cached_package(self, resource: Resource) -> tuple[Body, Expected] | None:
        expected = self.verifier.expected(resource)
        record = self.paths.get(resource.key)
        sha256 = expected.sha256 if expected else (record.sha256 if record else None)
        blob = self.blobs.get(sha256) if sha256 else None
        if blob is None:
            return None
        data = self.blobs.memory(blob)
        last_modified = record.last_modified if record and record.sha256 == blob.sha256 else ""
        if not last_modified:
            with contextlib.suppress(OSError):
                last_modified = http_date(blob.path.stat().st_mtime)
        body = Body(
            size=blob.size,
            last_modified=last_modified,
            source="cache",
            outcome="hit",
            data=data,
            path=None if data is not None else blob.path,
            content_type=content_type(resource.path),
            sha256=blob.sha256,
        )
        return body, Expected(blob.sha256, blob.size)

    def hit_hot(self, resource: Resource, sha256: str) -> bool:
        """Whether a package answered from memory before still may be: the index still names
        that blob and the memory tier still holds it (counted as a hit)."""
        expected = self.verifier.expected(resource)
        if expected is not None and expected.sha256 != sha256:
            return False
        if not self.blobs.in_memory(sha256):
            return False
        self._counts["hit"] += 1
        return True

    async def get_package(self, resource: Resource, *, via: Sequence[str] = ()) -> Body:
        cached = self.cached_package(resource)
        if cached is not None:
            self._counts["hit"] += 1
            return cached[0]
        self._counts["miss"] += 1
        expected = self.verifier.expected(resource)
        keep = expected is not None or self.verifier.keeps_unverified()
        return await self._join(
            resource,
            expected,
            keep=keep,
            outcome="miss" if keep else "bypass",
            via=via,
        )

    async def _join(
        self,
        resource: Resource,
        expected: Expected | None,
        *,
        keep: bool,
        outcome: str,
        via: Sequence[str] = (),
    ) -> Body:
        download = self._downloads.get(resource.key)
        waiting = self._site_waits.get(resource.key) if via else None
        if (
            waiting is not None
            and self.site is not None
            and self.site.closes_circle(via, waiting[1])
        ):
            # The edges' lists disagree: the edge this one waits for, or this one, asked
            # already, and waiting for it would close a circle.
            waiting[0].set()
        if download is None and expected is not None and not self._room_for(expected.size):
            return await self._pass_through(resource, expected, resource.file_class.value)
        if download is None:
            download = Download(resource.key, self.blobs.new_tmp(), expected)
            self._downloads[resource.key] = download
            self.metrics.downloads_active.inc()
            task = asyncio.create_task(self._run(resource, download, keep, via))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        reader = download.open_reader()
        # Another edge gets the bytes as they arrive, before this edge has them all (it checks
        # them itself; the last byte still waits for this edge's check): a file relayed along
        # the site's tree is not held back at every hop. Clients wait for `begin`.
        early = bool(via) and download.expected is not None  # its size is known
        try:
            if not early:
                await asyncio.shield(download.started)
        except BaseException:
            reader.close()
            raise
        return Body(
            size=download.size,
            last_modified=download.last_modified,
            source=download.source,
            outcome=outcome,
            reader=reader,
            content_type=content_type(resource.path),
        )

    def _room_for(self, size: int) -> bool:
        """Whether the cache's disk has room for `size` more bytes besides the downloads
        already running."""
        try:
            free = shutil.disk_usage(self.blobs.tmp_dir).free
        except OSError:
            return True  # let the write itself tell
        pending = sum(max(0, (d.size or 0) - d.written) for d in self._downloads.values())
        return free >= size + pending + DISK_RESERVE

    async def _pass_through(self, resource: Resource, expected: Expected, file_class: str) -> Body:
        """The file does not fit on the cache's disk: stream it from upstream, uncached."""
        self.metrics.disk_full.labels(file_class=file_class, action="pass_through").inc()
        log.warning("cache_full_pass_through", key=resource.key, size=expected.size)
        stream = await PassThrough.open(self.upstream, resource.upstream_urls(), expected)
        return Body(
            size=stream.size,
            last_modified=stream.last_modified,
            source="upstream",
            outcome="bypass",
            reader=stream,
            content_type=content_type(resource.path),
        )

    async def _run(
        self, resource: Resource, download: Download, keep: bool, via: Sequence[str]
    ) -> None:
        try:
            await self._fill(resource, download, via)
            await download.finish()
        except DownloadFailed as exc:
            self._end(resource, download)
            if isinstance(exc, DiskFull):
                self.metrics.disk_full.labels(
                    file_class=resource.file_class.value, action="failed"
                ).inc()
                log.error("download_not_stored", key=resource.key, reason=exc.text)
            if exc.kind:
                self.metrics.verification_failures.labels(
                    service="edge", kind=f"package_{exc.kind}"
                ).inc()
                log.warning("package_refused", key=resource.key, kind=exc.kind, reason=exc.text)
            download.fail(exc)
            return
        except Exception:
            self._end(resource, download)
            log.exception("download_failed", key=resource.key)
            download.fail(DownloadFailed(502, f"fetching {resource.path}: internal error"))
            return
        self._end(resource, download, keep=keep)
        download.succeed()

    def _end(self, resource: Resource, download: Download, *, keep: bool = False) -> None:
        """Removes the download from the table and commits or drops its file, in one step."""
        self._downloads.pop(resource.key, None)
        self.metrics.downloads_active.dec()
        if keep and download.size is not None:
            try:
                blob = self.blobs.commit(download.tmp, download.sha256, download.size)
                self.paths.put(
                    resource.key,
                    PathRecord(download.sha256, download.size, download.last_modified),
                )
            except OSError as exc:
                # Verified, but not storable (a new directory or journal line needs a block):
                # readers still get it through their open descriptors; the cache forgets it.
                if not is_disk_full(exc):
                    log.exception("commit_failed", key=resource.key)
                else:
                    self.metrics.disk_full.labels(
                        file_class=resource.file_class.value, action="not_cached"
                    ).inc()
                    log.error("download_not_stored", key=resource.key, reason=exc.strerror)
                self.blobs.discard(download.sha256)
                download.tmp.unlink(missing_ok=True)
                self.update_gauges()
                return
            self.update_gauges()
            self._after_commit(resource, download, str(blob.path))
        else:
            download.tmp.unlink(missing_ok=True)

    def _after_commit(self, resource: Resource, download: Download, blob_path: str) -> None:
        swarm, expected = self.swarm, download.expected
        if swarm is None or expected is None:
            return
        action = after_fetch(download.source, expected, self.swarm_min_size)
        if action == "seed":
            self._background(swarm.seed_cached(resource, expected, blob_path))
        elif action == "make_torrent":
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

    async def _fill(self, resource: Resource, download: Download, via: Sequence[str]) -> None:
        if await self._from_site(resource, download, via):
            return
        expected = download.expected
        swarm = self.swarm
        facts = Facts(swarm is not None, self.swarm_min_size, expected)
        choice = choose_source(facts)
        if choice.source == "lookup" and swarm is not None and expected is not None:
            state = await swarm.lookup(expected)
            choice = choose_source(Facts(True, self.swarm_min_size, expected, state))
        if choice.source == "swarm" and swarm is not None and expected is not None:
            try:
                await swarm.source_for(resource, expected).fetch(resource.upstream_urls(), download)
                return
            except SwarmUnavailable as exc:
                choice = Choice("upstream", exc.reason)
                log.info("swarm_fallback", key=resource.key, reason=exc.reason, error=exc.text)
        self._count_fallback(resource, choice)
        await self.http_source.fetch(resource.upstream_urls(), download)

    async def _from_site(self, resource: Resource, download: Download, via: Sequence[str]) -> bool:
        """Whether the file came from this edge's parent for it in the zone (a small, verified
        package file that this edge does not own; `site.site_parent`), for a request that
        came through the edges `via`; False: nothing was written or begun."""
        site, expected = self.site, download.expected
        if site is None or expected is None or expected.size >= self.swarm_min_size:
            return False
        if resource.file_class is not FileClass.PACKAGE:
            return False
        parent = site.parent_for(expected.sha256, via)
        if parent is None:
            return False
        abandon = asyncio.Event()
        self._site_waits[resource.key] = (abandon, parent.id)
        try:
            return await site.fetch(parent, resource, download, abandon, via)
        finally:
            self._site_waits.pop(resource.key, None)

    def _count_fallback(self, resource: Resource, choice: Choice) -> None:
        if choice.fallback_reason and resource.file_class is FileClass.PACKAGE:
            self.metrics.fallbacks.labels(reason=choice.fallback_reason).inc()

    def update_gauges(self) -> None:
        stats = self.blobs.stats()
        self.metrics.cache_size.set(stats.size_bytes)
        self.metrics.cache_limit.set(stats.limit_bytes)
        self.metrics.cache_entries.set(stats.entries)
        self.metrics.cache_pinned.set(stats.pinned_entries)
        self.metrics.memory_bytes.set(stats.memory_bytes)

    async def close(self) -> None:
        for task in list(self._tasks) + list(self._index_tasks.values()):
            task.cancel()
        for task in list(self._tasks) + list(self._index_tasks.values()):
            with contextlib.suppress(BaseException):
                await task
        for download in list(self._downloads.values()):
            download.fail(DownloadFailed(503, "the edge is shutting down"))
            download.tmp.unlink(missing_ok=True)
        self._downloads.clear()
