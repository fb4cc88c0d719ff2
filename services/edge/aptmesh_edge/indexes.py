"""The index logic: freshness, revalidation, stale serving and trust of `InRelease`, `Packages*`,
`by-hash/`... files.

A cached copy fetched less than `freeze_seconds` ago is served as is
(apt-cacher-ng's FreshIndexMaxAge), so clients updating together see one
state; otherwise one conditional request per file goes upstream however many
clients wait (`_tasks`), through the upstream `Source` like any file. A fresh
index is believed only after the verifier accepts it (an InRelease's
signature; a Packages file's hash in that InRelease); the InRelease an index
depends on is fetched first. `by-hash/` files never change and are not
revalidated. If the upstream cannot be reached, the cached copy is served
(counted); with nothing cached the client gets 502 or 504.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

from aptmesh import logs
from aptmesh_edge.body import Body, content_type, http_date
from aptmesh_edge.cache import BlobStore, IndexEntry, IndexMeta, IndexStore
from aptmesh_edge.checked import DownloadFailed
from aptmesh_edge.decisions import Outcome, SourceKind
from aptmesh_edge.downloads import DiskFull, Download, is_disk_full
from aptmesh_edge.metrics import EdgeMetrics
from aptmesh_edge.sources import Source
from aptmesh_edge.trust import VerificationFailed, Verifier
from aptmesh_edge.upstream import NotModified, UpstreamFailure
from aptmesh_edge.urls import Resource

log = logs.get(__name__)

# Indexes at most this size are read into memory and sent in one write.
INDEX_MEMORY_MIN = 64 * 1024


class IndexService:
    """Owns the index fetches in flight (one per cache key) and which cached indexes the
    verifier has been taught in this process (`_fed`); the indexes themselves are the
    `IndexStore`'s."""

    def __init__(
        self,
        *,
        blobs: BlobStore,
        indexes: IndexStore,
        source: Source,
        verifier: Verifier,
        metrics: EdgeMetrics,
        freeze_seconds: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._blobs = blobs
        self._indexes = indexes
        self._source = source
        self.verifier = verifier
        self._metrics = metrics
        self._freeze_seconds = freeze_seconds
        self._clock = clock
        self._tasks: dict[str, asyncio.Task[tuple[IndexEntry, Outcome]]] = {}
        self._fed: set[str] = set()  # index keys the verifier has seen in this process

    async def get(self, resource: Resource) -> Body:
        entry, outcome = await self._index(resource)
        meta = entry.meta
        payload: bytes | None = None
        if meta.size <= max(self._blobs.memory_file_max_bytes, INDEX_MEMORY_MIN):
            payload = entry.path.read_bytes()
            if len(payload) != meta.size:
                raise DownloadFailed(502, "cached index changed on disk")
        return Body(
            payload=entry.path if payload is None else payload,
            size=meta.size,
            last_modified=meta.last_modified or http_date(meta.fetched_at),
            source=SourceKind.UPSTREAM if outcome is Outcome.MISS else SourceKind.CACHE,
            outcome=outcome,
            content_type=content_type(resource.path),
        )

    async def _index(self, resource: Resource) -> tuple[IndexEntry, Outcome]:
        entry = self._indexes.get(resource.key)
        fresh = entry is not None and (
            resource.immutable or self._clock() - entry.meta.fetched_at < self._freeze_seconds
        )
        if entry is not None and fresh:
            if resource.key in self._fed or await self._feed(resource, entry):
                return entry, Outcome.HIT
            entry = None  # the cached copy cannot be vouched for any more: fetch it whole
        task = self._tasks.get(resource.key)
        if task is None:
            task = asyncio.create_task(self._refresh(resource, entry))
            self._tasks[resource.key] = task
            task.add_done_callback(lambda _: self._tasks.pop(resource.key, None))
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

    async def _refresh(
        self, resource: Resource, entry: IndexEntry | None
    ) -> tuple[IndexEntry, Outcome]:
        await self._ensure_release(resource)
        tmp = self._blobs.new_tmp()
        try:
            download = Download(resource.key, tmp, None)
            if entry is not None and not resource.immutable:
                download.conditional = entry.meta.validators()
            try:
                await self._source.fetch(resource, download)
                await download.finish()
            finally:
                download.close()
        except NotModified:
            tmp.unlink(missing_ok=True)
            assert entry is not None  # only a held copy is asked for conditionally
            return await self._revalidated(resource, entry), Outcome.REVALIDATED
        except UpstreamFailure as exc:
            tmp.unlink(missing_ok=True)
            if entry is not None and exc.status in (502, 504):
                self._metrics.stale_served.inc()
                log.warning("serving_stale_index", key=resource.key, reason=exc.text)
                if resource.key not in self._fed and not await self._feed(resource, entry):
                    raise
                return entry, Outcome.STALE
            raise
        except DiskFull as exc:
            tmp.unlink(missing_ok=True)
            raise self._disk_full(resource, exc.reason) from None
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        try:
            verified = await self._check(resource, download)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return self._store(resource, download, verified), Outcome.MISS

    async def _revalidated(self, resource: Resource, entry: IndexEntry) -> IndexEntry:
        """The upstream says the cached copy is current (304): it is fresh again."""
        try:
            touched = self._indexes.touch(resource.key, self._clock())
        except OSError as exc:  # the new fetch time is kept in memory only
            if not is_disk_full(exc):
                raise
            log.warning("index_meta_not_stored", key=resource.key, reason=exc.strerror)
            touched = entry
        assert touched is not None
        if resource.key not in self._fed and not await self._feed(resource, touched):
            raise DownloadFailed(502, f"cached {resource.path} no longer verifies")
        return touched

    async def _check(self, resource: Resource, download: Download) -> bool:
        """Whether the verifier vouches for a fetched index (False: accepted unverified);
        raises DownloadFailed (and drops it) if it must be refused."""
        sha256, size = download.sha256, download.written
        try:
            named = "/by-hash/SHA256/" in f"/{resource.path}"
            if named and resource.path.rsplit("/", 1)[1] != sha256:
                self._metrics.verification_failures.labels(service="edge", kind="by_hash").inc()
                raise DownloadFailed(502, "by-hash file does not match its name")
            return await self.verifier.check_index(resource, download.tmp, sha256, size)
        except VerificationFailed as exc:
            self._metrics.verification_failures.labels(service="edge", kind=exc.kind).inc()
            log.warning("index_refused", key=resource.key, kind=exc.kind, reason=exc.text)
            raise DownloadFailed(502, exc.text) from None

    def _store(self, resource: Resource, download: Download, verified: bool) -> IndexEntry:
        origin = resource.origin
        url = f"{origin.scheme}://{origin.host}:{origin.port}/{resource.path}"
        meta = IndexMeta(
            download.sha256,
            download.written,
            download.last_modified,
            download.etag,
            self._clock(),
            verified,
            url,
        )
        try:
            stored = self._indexes.put(resource.key, download.tmp, meta)
        except OSError as exc:
            download.tmp.unlink(missing_ok=True)
            if is_disk_full(exc):
                raise self._disk_full(resource, exc.strerror or "no space") from None
            raise
        self._fed.add(resource.key)
        return stored

    def _disk_full(self, resource: Resource, reason: str) -> DiskFull:
        self._metrics.disk_full.labels(file_class="index", action="failed").inc()
        log.error("index_not_stored", key=resource.key, reason=reason)
        return DiskFull(reason, f"cannot store {resource.path}: ")

    async def warm(self, resolve: Callable[[str], Resource | None]) -> int:
        """Teaches the verifier the verified indexes on disk (after a restart), InRelease
        first, so package files they name are cached and served without a new update."""
        entries = [e for e in self._indexes.all() if e.meta.verified and e.meta.url]
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

    async def close(self) -> None:
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task
