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

One generation per suite (DESIGN integrity rule 5), applied in one place,
`_vouched`, on every path that serves a cached copy (hit, 304, stale): an
index is served only if the verifier vouches for it against the generation
whose InRelease the edge serves now, re-checked whenever that generation
changed. A verified index by name is current exactly while that InRelease
lists its hash, so it is not revalidated on its own; when it is not, it is
fetched by the hash the InRelease names (`by-hash/`, if Release offers it),
else by name. A fetched index that disagrees with the InRelease means the
upstream moved on: the InRelease is marked for revalidation at once, so the
client's retry gets the new generation instead of waiting out the freeze. A
replayed older InRelease is refused (the verifier counts it) and the newer
cached one is served. An index a new generation replaces is kept as its
`by-hash/` file for `GENERATION_GRACE` (clients that read the previous
InRelease a moment ago ask for it so), even where the upstream has
already removed it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from aptmesh import logs
from aptmesh.debian import by_hash_path
from aptmesh_edge.body import Body, content_type, http_date
from aptmesh_edge.cache import BlobStore, IndexEntry, IndexMeta, IndexStore
from aptmesh_edge.checked import DownloadFailed
from aptmesh_edge.decisions import Outcome, SourceKind
from aptmesh_edge.downloads import DiskFull, Download, is_disk_full
from aptmesh_edge.metrics import EdgeMetrics
from aptmesh_edge.sources import Source
from aptmesh_edge.trust import (
    GENERATION_GRACE,
    REPLAY,
    ROOT_NAMES,
    VerificationFailed,
    Verifier,
    is_release_file,
    split_suite,
)
from aptmesh_edge.upstream import NotModified, UpstreamFailure, fetch_retrying
from aptmesh_edge.urls import Resource

log = logs.get(__name__)

# Indexes at most this size are read into memory and sent in one write.
INDEX_MEMORY_MIN = 64 * 1024


class Refused(DownloadFailed):
    """A fetched index the verifier refused (502); `kind` is the verification failure's."""

    def __init__(self, kind: str, text: str) -> None:
        super().__init__(502, text)
        self.kind = kind


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
        # index key -> (the generation it was last checked against, whether it verified)
        self._fed: dict[str, tuple[str | None, bool]] = {}
        self._expired: set[str] = set()  # InRelease keys to revalidate on the next request
        # by-hash keys of replaced generations' indexes, kept until then (wall clock)
        self._kept: dict[str, float] = {}

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
        if entry is not None:
            await self._ensure_release(resource)
            verdict = await self._vouched(resource, entry)
            frozen = (
                self._clock() - entry.meta.fetched_at < self._freeze_seconds
                and resource.key not in self._expired
            )
            # A verified index of a suite is as fresh as the InRelease that lists it.
            by_release = verdict and self.verifier.generation(resource) is not None
            if verdict is None:
                entry = None  # the cached copy cannot be vouched for any more: fetch it whole
            elif resource.immutable or frozen or (by_release and not self._is_release(resource)):
                return entry, Outcome.HIT
        task = self._tasks.get(resource.key)
        if task is None:
            task = asyncio.create_task(self._refresh(resource, entry))
            self._tasks[resource.key] = task
            task.add_done_callback(lambda _: self._tasks.pop(resource.key, None))
        return await asyncio.shield(task)

    async def _ensure_release(self, resource: Resource) -> None:
        """The verifier holds the InRelease that vouches for `resource` (fetched if need be);
        for a suite without one (404), Release with its Release.gpg, as apt falls back."""
        release = self.verifier.release_for(resource)
        if release is None or release.key == resource.key or release.key in self._fed:
            return
        try:
            await self._index(release)
        except UpstreamFailure as exc:
            if exc.status != 404 or not release.path.endswith("InRelease"):
                raise
            detached = replace(release, path=release.path.removesuffix("InRelease") + "Release")
            log.info("inrelease_missing", key=release.key, trying=detached.path)
            await self._index(detached)

    async def _fetch_signature(self, resource: Resource) -> None:
        """Before a Release is fetched, its Release.gpg is revalidated (the verifier checks
        the pair); a missing one leaves the Release unverifiable, which the verifier judges."""
        if not resource.path.endswith("/Release") and resource.path != "Release":
            return
        signature = replace(resource, path=resource.path + ".gpg")
        self._expired.add(signature.key)
        try:
            await self._index(signature)
        except DownloadFailed as exc:
            log.info("release_signature_missing", key=signature.key, reason=exc.text)

    @staticmethod
    def _is_release(resource: Resource) -> bool:
        return is_release_file(resource)

    async def _vouched(self, resource: Resource, entry: IndexEntry) -> bool | None:
        """The one serving rule: whether the cached `entry` may be served with the generation
        served now. True: verified against it; False: accepted unverified (verify_mode auto,
        no suite); None: it must not be served (another generation, a replay, changed keys).
        Checked again only when the generation changed since the last check."""
        fed = self._fed.get(resource.key)
        if fed is not None and fed[0] == self.verifier.generation(resource):
            return fed[1]
        try:
            verified = await self.verifier.check_index(
                resource, entry.path, entry.meta.sha256, entry.meta.size
            )
        except VerificationFailed as exc:
            log.info("cached_index_not_verified", key=resource.key, reason=exc.text)
            self._fed.pop(resource.key, None)
            return None
        self._fed[resource.key] = (self.verifier.generation(resource), verified)
        return verified

    async def _feed(self, resource: Resource, entry: IndexEntry) -> bool:
        """Tells the verifier about an index loaded from disk (after a restart); False if it
        does not verify any more (a newer InRelease moved on, the key changed)."""
        await self._ensure_release(resource)
        return await self._vouched(resource, entry) is not None

    async def revalidate(self, release: Resource) -> None:
        """Revalidates a suite's InRelease now, frozen or not (another edge of the zone serves
        a newer generation: aptmesh_edge.convergence); failures are logged, not raised."""
        self._expired.add(release.key)
        try:
            await self._index(release)
        except DownloadFailed as exc:
            log.info("release_revalidation_failed", key=release.key, reason=exc.text)

    def _expire_release(self, resource: Resource) -> None:
        """The upstream's indexes moved past the InRelease served: revalidate it now."""
        release = self.verifier.release_for(resource)
        if release is not None and release.key not in self._expired:
            self._expired.add(release.key)
            log.info("release_expired", key=release.key, because=resource.key)

    async def _refresh(
        self, resource: Resource, entry: IndexEntry | None
    ) -> tuple[IndexEntry, Outcome]:
        await self._ensure_release(resource)
        await self._fetch_signature(resource)
        by_hash = self.verifier.by_hash(resource)
        fetched = resource if by_hash is None else replace(resource, path=by_hash)
        tmp = self._blobs.new_tmp()
        try:
            download = Download(resource.key, tmp, None)
            if entry is not None and not resource.immutable:
                download.conditional = entry.meta.validators()
            try:
                try:
                    await self._fetch(fetched, download)
                except UpstreamFailure as exc:
                    if fetched is resource or exc.status != 404 or download.written:
                        raise
                    # The archive cleaned that by-hash copy already: the name may still match.
                    log.info("by_hash_missing", key=resource.key, path=fetched.path)
                    fetched = resource
                    await self._fetch(fetched, download)
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
                if await self._vouched(resource, entry) is None:
                    raise  # another generation's copy: a clean error, never a mix
                self._metrics.stale_served.inc()
                log.warning("serving_stale_index", key=resource.key, reason=exc.text)
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
        except Refused as exc:
            tmp.unlink(missing_ok=True)
            if exc.kind == REPLAY and entry is not None and await self._vouched(resource, entry):
                return entry, Outcome.STALE  # the newer generation, still ours
            if exc.kind == "index_hash" and fetched is resource:
                self._expire_release(resource)
            raise
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return self._store(resource, download, verified), Outcome.MISS

    async def _fetch(self, resource: Resource, download: Download) -> None:
        """A by-hash copy is named by its hash: its faults are retried like a package's."""
        known = "/by-hash/" in f"/{resource.path}"
        await fetch_retrying(self._source, resource, download, self._metrics, known=known)

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
        self._expired.discard(resource.key)
        if await self._vouched(resource, touched) is None:
            if self._is_release(resource):
                raise DownloadFailed(502, f"cached {resource.path} no longer verifies")
            # 304 for a copy the served InRelease does not list: the upstream is behind it.
            self._expire_release(resource)
            raise DownloadFailed(502, f"{resource.path} does not match its InRelease yet")
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
            raise Refused(exc.kind, exc.text) from None

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
        kept = self._previous_by_hash(resource, download.sha256) if verified else None
        try:
            stored = self._indexes.put(resource.key, download.tmp, meta)
            if kept is not None:
                self._keep(*kept)
        except OSError as exc:
            download.tmp.unlink(missing_ok=True)
            if kept is not None:
                kept[1].unlink(missing_ok=True)
            if is_disk_full(exc):
                raise self._disk_full(resource, exc.strerror or "no space") from None
            raise
        self._fed[resource.key] = (self.verifier.generation(resource), verified)
        self._expired.discard(resource.key)
        self._forget_kept()
        return stored

    def _previous_by_hash(
        self, resource: Resource, sha256: str
    ) -> tuple[str, Path, IndexMeta] | None:
        """The verified copy a new generation's index replaces, linked under a temporary name
        before it is replaced, to be kept as its `by-hash/` file (clients that read the
        previous InRelease a moment ago ask for it by that hash)."""
        previous = self._indexes.get(resource.key)
        where = split_suite(resource.path)
        if (
            previous is None
            or not previous.meta.verified
            or previous.meta.sha256 == sha256
            or where is None
            or where.rest in ROOT_NAMES
            or "/by-hash/" in f"/{where.rest}"
        ):
            return None
        path = where.file(by_hash_path(where.rest, previous.meta.sha256))
        kept = replace(resource, path=path)
        if self._indexes.get(kept.key) is not None:
            return None
        tmp = self._blobs.new_tmp()
        try:
            os.link(previous.path, tmp)
        except OSError as exc:
            log.info("previous_index_not_kept", key=resource.key, reason=exc.strerror)
            return None
        origin = resource.origin
        url = f"{origin.scheme}://{origin.host}:{origin.port}/{path}"
        return kept.key, tmp, replace(previous.meta, url=url, fetched_at=self._clock())

    def _keep(self, key: str, tmp: Path, meta: IndexMeta) -> None:
        self._indexes.put(key, tmp, meta)
        self._kept[key] = self._clock() + GENERATION_GRACE
        log.info("previous_index_kept", key=key)

    def _forget_kept(self) -> None:
        """Kept copies of replaced generations go once their grace is over."""
        now = self._clock()
        for key in [k for k, until in self._kept.items() if until <= now]:
            del self._kept[key]
            self._fed.pop(key, None)
            try:
                self._indexes.remove(key)
            except OSError as exc:
                log.warning("previous_index_not_removed", key=key, reason=exc.strerror)

    def _disk_full(self, resource: Resource, reason: str) -> DiskFull:
        self._metrics.disk_full.labels(file_class="index", action="failed").inc()
        log.error("index_not_stored", key=resource.key, reason=reason)
        return DiskFull(reason, f"cannot store {resource.path}: ")

    async def warm(self, resolve: Callable[[str], Resource | None]) -> int:
        """Teaches the verifier the verified indexes on disk (after a restart), InRelease
        first, so package files they name are cached and served without a new update."""
        entries = [
            e
            for e in self._indexes.all()
            if e.meta.url and (e.meta.verified or e.key.endswith("/Release.gpg"))
        ]
        # What vouches first: a Release.gpg before its Release, both before the indexes.
        order = {"Release.gpg": 0, "InRelease": 1, "Release": 1}
        entries.sort(key=lambda e: order.get(e.key.rsplit("/", 1)[-1], 2))
        learned = 0
        for entry in entries:
            resource = resolve(entry.meta.url)
            if resource is None or resource.key != entry.key or resource.key in self._fed:
                continue
            try:
                fed = await self._feed(resource, entry)
            except DownloadFailed as exc:
                log.info("warm_skipped", key=entry.key, reason=exc.text)
                continue
            learned += fed
            if not fed and "/by-hash/" in entry.key:
                # A replaced generation's copy: its grace ended with the last process.
                with contextlib.suppress(OSError):
                    self._indexes.remove(entry.key)
        return learned

    async def close(self) -> None:
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task
