"""One repository sync: verify, select, fetch, hash, seed, publish.

Theory of operation. A sync of repository R runs in two phases, so a failure
anywhere leaves nothing of R's new index published or seeded:

1. Verify and gather. For each suite, poll its signed Release conditionally
   (the validators of R's last good sync): `InRelease`, or, where the archive
   has none (404), `Release` with its detached `Release.gpg`, as apt does.
   If every suite answers "not modified" (HTTP 304, or the same bytes), the
   last good sync still holds: the sync is `unchanged`, and only re-publishes
   records the index lost. Otherwise each Release is verified with gpgv, and
   each index it lists for R's components and architectures (`Packages`, or
   `Sources` for the architecture `source`; one `Packages` in a flat
   repository) is fetched in its best listed compression (its `by-hash` copy
   when Release says `Acquire-By-Hash`; the next variant when one is not
   there), checked against the verified hash, parsed, and the selection
   policy (`select.plan`) picks the files to seed. An index R asks for that
   Release does not list is skipped as apt skips it (one `indexes_absent`
   line, the `aptmesh_seeder_absent_indexes` gauge), never a failed sync.
   Each picked file not already held is fetched to a temporary name in the data directory,
   fsynced, hashed once (`make_torrent` gives its SHA-256 and its torrent),
   checked against `Packages`, and renamed to its content address; a local
   mirror's file is hashed in place instead. While a body streams in only
   its length is checked (a body longer than `Packages` says is cut at
   once); its SHA-256 comes from the one hashing pass after the fsync, which
   reads the file back from the page cache. Verified files are recorded in
   the state at once (a later sync will not fetch them again) but are not
   yet wanted by R, so nothing seeds or publishes them; if no good sync ever
   wants them, they are deleted after the grace period like any unwanted file.
2. Commit. Only when every file of the plan verified: publish the records the
   index lacks (before seeding, so the tracker knows the torrent when
   libtorrent announces it), seed every planned file, and record R's new
   wanted set and validators in one transaction.

A Release must also name the suite it was fetched as (no replay of another
suite; flat repositories name none), be within its `Valid-Until` and not be
dated in the future, as apt insists, and must not be older (by `Date`) than
the newest generation the seeder has verified for that suite
(`aptmesh.debian.Generation`, kept in the state across restarts): an older
one is a replay or a mirror behind, and is never believed.

A signature, index hash or package hash failure stops R's sync in phase 1,
is counted in `aptmesh_verification_failures_total{kind}` and logged; R's
previous wanted set keeps being seeded. An unreachable upstream or tracker
fails the sync the same way, without counting as a verification failure.
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import hashlib
import os
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

from aptmesh import logs
from aptmesh.debian import (
    DebianIndexError,
    Generation,
    PackageHashError,
    Release,
    ReleaseForm,
    SignatureError,
    by_hash_path,
    check_fresh,
    check_suite,
    index_variants,
    is_flat,
    load_packages,
    load_sources,
    newest,
    parse_release,
    suite_path,
    verify_release,
)
from aptmesh.files import fsync_dir
from aptmesh.swarm import SwarmError
from aptmesh.torrent import HashedFile, TorrentError, make_torrent
from aptmesh_seeder.config import RepositorySpec
from aptmesh_seeder.metrics import SeederMetrics
from aptmesh_seeder.progress import NullProgress, Progress
from aptmesh_seeder.publish import Publisher, PublishError, record_of
from aptmesh_seeder.seeding import Seeding
from aptmesh_seeder.select import Candidate, Plan, Policy, plan
from aptmesh_seeder.sources import Source, SourceError
from aptmesh_seeder.state import HeldFile, State, StateError, Validator

log = logs.get(__name__)

Clock = Callable[[], float]
T = TypeVar("T")


@dataclass(frozen=True)
class SyncResult:
    repository: str
    result: str  # "ok", "unchanged" or "failed"
    error: str = ""
    kind: str = ""  # of a failure: signature, index_hash, package_hash, malformed, fetch, ...
    plan: Plan | None = None
    fetched_files: int = 0
    fetched_bytes: int = 0
    hashed_bytes: int = 0
    published: int = 0
    duration: float = 0.0

    @property
    def ok(self) -> bool:
        return self.result != "failed"


@dataclass
class _Counts:
    fetched_files: int = 0
    fetched_bytes: int = 0
    hashed_bytes: int = 0
    published: int = 0


class _IndexKind(enum.Enum):
    PACKAGES = "Packages"
    SOURCES = "Sources"


@dataclass(frozen=True)
class _Polled:
    """A suite's signed Release as polled; `data` None: not modified since the last sync."""

    form: ReleaseForm
    data: bytes | None
    validator: Validator


@dataclass(frozen=True)
class _Picked:
    candidate: Candidate
    upstream_urls: tuple[str, ...]
    web_seeds: tuple[str, ...]


@dataclass
class SyncContext:
    """What every repository sync of one seeder shares (built by the composition root)."""

    state: State
    seeding: Seeding
    publisher: Publisher
    metrics: SeederMetrics
    policy: Policy
    data_dir: Path
    keyring: Path | None
    clock: Clock = time.time
    concurrency: int = 4
    progress: Progress = field(default_factory=NullProgress)

    @property
    def files_dir(self) -> Path:
        return self.data_dir / "files"

    @property
    def tmp_dir(self) -> Path:
        return self.data_dir / "tmp"

    def owned_path(self, sha256: str) -> Path:
        """Downloaded files live under their content address."""
        return self.files_dir / sha256[:2] / sha256


async def _bounded(jobs: Sequence[Callable[[], Awaitable[T]]], limit: int) -> list[T]:
    """Runs `jobs` at most `limit` at a time; the first failure cancels the rest and is raised."""
    semaphore = asyncio.Semaphore(limit)

    async def run(job: Callable[[], Awaitable[T]]) -> T:
        async with semaphore:
            return await job()

    tasks = [asyncio.create_task(run(job)) for job in jobs]
    try:
        return [await task for task in tasks]
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


_FAILURES = (
    DebianIndexError,
    SourceError,
    PublishError,
    SwarmError,
    StateError,
    TorrentError,
    OSError,
)


def _failure_kind(exc: BaseException) -> str:
    """The `kind` of a failed sync; verification kinds are those of `aptmesh.debian`."""
    if isinstance(exc, DebianIndexError):
        return exc.kind
    if isinstance(exc, SourceError):
        return "fetch"
    if isinstance(exc, PublishError):
        return "publish"
    if isinstance(exc, SwarmError | TorrentError):
        return "seed"
    if isinstance(exc, StateError):
        return "state"
    return "io"  # the data directory: full disk, permissions


class RepositorySync:
    def __init__(self, spec: RepositorySpec, source: Source, context: SyncContext) -> None:
        self.spec = spec
        self.source = source
        self.ctx = context
        self._lock = asyncio.Lock()

    @property
    def keyring(self) -> Path | None:
        return self.spec.keyring or self.ctx.keyring

    async def run(self) -> SyncResult:
        """One sync; never raises for the repository's, the upstream's or the tracker's faults."""
        async with self._lock:
            return await self._run()

    async def _run(self) -> SyncResult:
        ctx, name = self.ctx, self.spec.name
        started = time.perf_counter()
        counts = _Counts()
        structured = log.bind(repository=name)
        try:
            result = await self._sync(counts)
        except _FAILURES as exc:
            kind = _failure_kind(exc)
            if isinstance(exc, DebianIndexError):
                ctx.metrics.verification_failure(kind)
            result = SyncResult(name, "failed", str(exc), kind)
            structured.error("sync_failed", kind=kind, error=str(exc))
            try:
                ctx.state.record_sync(name, ctx.clock(), ok=False, error=f"{kind}: {exc}")
            except StateError as state_exc:
                structured.error("state_failed", error=str(state_exc))
        duration = time.perf_counter() - started
        ctx.metrics.syncs.labels(name, result.result).inc()
        ctx.metrics.sync_duration.labels(name).observe(duration)
        if result.ok:
            good = ctx.state.repository(name).last_good_sync_time
            ctx.metrics.last_good_sync.labels(name).set(good or 0)
        if result.plan is not None:
            ctx.metrics.selected_packages.labels(name).set(len(result.plan.selected))
            ctx.metrics.selected_bytes.labels(name).set(result.plan.selected_bytes)
            ctx.metrics.budget_cut_bytes.labels(name).set(result.plan.budget_cut_bytes)
        result = dataclasses.replace(
            result,
            fetched_files=counts.fetched_files,
            fetched_bytes=counts.fetched_bytes,
            hashed_bytes=counts.hashed_bytes,
            published=counts.published,
            duration=duration,
        )
        if result.ok:
            structured.info(
                "sync_finished",
                result=result.result,
                fetched_files=result.fetched_files,
                fetched_bytes=result.fetched_bytes,
                hashed_bytes=result.hashed_bytes,
                published=result.published,
                seconds=round(duration, 3),
            )
        return result

    # --- phase 1: verify and gather ---------------------------------------------------------

    async def _poll_suite(self, suite: str, old: Validator) -> _Polled:
        """The suite's signed Release: the form the last good sync used first (with its
        validators), then the others, moving on only when a file is not there."""
        known = ReleaseForm(old.form) if old.sha256 else None
        forms = sorted(ReleaseForm, key=lambda f: f is not known)  # stable: InRelease first
        for form in forms:
            path = suite_path(suite, form.files[0])
            etag, modified = (old.etag, old.last_modified) if form is known else ("", "")
            try:
                fetched = await self.source.poll(path, etag, modified)
            except SourceError as exc:
                if exc.missing and form is not forms[-1]:
                    continue
                if exc.missing:
                    raise SourceError(
                        f"polling {suite}: the archive has neither InRelease nor Release ({exc})",
                        missing=True,
                    ) from None
                raise
            if fetched.data is None:
                if form is not known:
                    raise SourceError(f"polling {path}: 304 without a previous copy")
                return _Polled(form, None, old)
            validator = Validator(
                fetched.etag, fetched.last_modified, _sha256(fetched.data), form.value
            )
            return _Polled(form, fetched.data, validator)
        raise AssertionError("unreachable: ReleaseForm has members")

    async def _poll(self) -> tuple[dict[str, _Polled], bool]:
        """Every suite's signed Release; `changed`: did any change since the last good sync."""
        stored = self.ctx.state.repository(self.spec.name).validators
        polled: dict[str, _Polled] = {}
        changed = False
        for suite in self.spec.suites:
            old = stored.get(suite, Validator())
            polled[suite] = found = await self._poll_suite(suite, old)
            changed = changed or (found.data is not None and found.validator.sha256 != old.sha256)
        return polled, changed

    async def _release(self, suite: str, polled: _Polled) -> Release:
        """Verifies a suite's Release; the seeder never believes one older than it has."""
        form, data = polled.form, polled.data
        what = f"verifying {suite_path(suite, form.value)}"
        keyring = self.keyring
        if keyring is None:
            raise SignatureError(f"{what}: no keyring configured")
        assert data is not None
        signature = None
        if form is ReleaseForm.DETACHED:
            signature = await self.source.index(suite_path(suite, "Release.gpg"))
        signed = await asyncio.to_thread(verify_release, form, data, keyring, signature)
        release = parse_release(signed)
        check_suite(release, suite, what)
        check_fresh(release, _utc(self.ctx.clock()), what)
        state, name = self.ctx.state, self.spec.name
        known = state.generation(name, suite)
        generation = newest(Generation.of(release, signed), known, what)
        if generation != known:
            state.set_generation(name, suite, generation)
        return release

    def _wanted_indexes(self, suite: str) -> list[tuple[str, _IndexKind]]:
        """The indexes (paths inside the suite's directory) the configuration asks for."""
        arches = self.spec.architectures
        binary = [a for a in arches if a != "source"]
        if is_flat(suite):
            wanted = [("Packages", _IndexKind.PACKAGES)] if binary else []
            if "source" in arches:
                wanted.append(("Sources", _IndexKind.SOURCES))
            return wanted
        wanted = []
        for component in self.spec.components:
            wanted += [(f"{component}/binary-{a}/Packages", _IndexKind.PACKAGES) for a in binary]
            if "source" in arches:
                wanted.append((f"{component}/source/Sources", _IndexKind.SOURCES))
        return wanted

    async def _fetch_index(self, suite: str, release: Release, base: str) -> tuple[str, bytes]:
        """The best listed variant of `base` that the archive has: by hash when Release
        offers it, else by name; the next variant when neither is there (apt does so)."""
        failure: SourceError | None = None
        for variant in index_variants(release, base):
            paths = [suite_path(suite, variant)]
            if release.acquire_by_hash:
                by_hash = by_hash_path(variant, release.files[variant].sha256)
                paths.insert(0, suite_path(suite, by_hash))
            for path in paths:
                try:
                    return variant, await self.source.index(path)
                except SourceError as exc:  # mid-update, or a variant the mirror lacks
                    failure = exc
        assert failure is not None, "only listed indexes are fetched"
        raise failure

    async def _indexes(self, suite: str, release: Release, absent: list[str]) -> list[_Picked]:
        picked: list[_Picked] = []
        for base, kind in self._wanted_indexes(suite):
            if not index_variants(release, base):
                if not base.endswith("/binary-all/Packages"):  # most archives have none
                    absent.append(suite_path(suite, base))
                continue
            variant, data = await self._fetch_index(suite, release, base)
            candidates: list[Candidate]
            if kind is _IndexKind.PACKAGES:
                entries = await asyncio.to_thread(load_packages, release, variant, data)
                candidates = [
                    Candidate(e.sha256, e.size, e.package, e.filename, e.section) for e in entries
                ]
            else:
                sources = await asyncio.to_thread(load_sources, release, variant, data)
                candidates = [
                    Candidate(f.sha256, f.size, e.package, f.filename, e.section)
                    for e in sources
                    for f in e.files
                ]
            picked += [self._picked(c) for c in candidates]
        return picked

    def _picked(self, candidate: Candidate) -> _Picked:
        url = self.source.url(candidate.filename)
        webseed = f"{self.spec.webseed}/{candidate.filename}" if self.spec.webseed else None
        return _Picked(candidate, (url,) if url else (), (webseed,) if webseed else ())

    def _held(self, sha256: str, size: int) -> HeldFile | None:
        """A held file that is still on disk as it was verified (checked by stat, not hashed)."""
        held = self.ctx.state.file(sha256)
        if held is None:
            return None
        try:
            st = held.path.stat()
        except OSError:
            return None
        if st.st_size != size or st.st_mtime_ns != held.mtime_ns:
            return None
        return held

    async def _verify(self, item: _Picked, counts: _Counts) -> HeldFile:
        ctx, c = self.ctx, item.candidate
        held = self._held(c.sha256, c.size)
        if held is not None:
            return held
        local = self.source.local_path(c.filename)
        if local is not None:
            path, owned = local, False
            try:
                size = path.stat().st_size
            except OSError as exc:
                raise SourceError(f"reading {path}: {exc.strerror}") from None
            if size != c.size:
                raise PackageHashError(f"checking {c.filename}: size {size}, expected {c.size}")
            hashed = await self._hash(path, c, counts)
        else:
            ctx.tmp_dir.mkdir(parents=True, exist_ok=True)
            tmp = ctx.tmp_dir / f"{c.sha256}.{uuid.uuid4().hex[:8]}.part"
            try:
                received = 0

                def advance(n: int) -> None:
                    nonlocal received
                    received += n
                    counts.fetched_bytes += n
                    ctx.progress.advance(n)

                try:
                    await self.source.download(c.filename, tmp, c.size, advance)
                except OSError as exc:  # the data directory's disk: say which file and where
                    raise OSError(
                        exc.errno, f"storing {c.filename} in {ctx.data_dir}: {exc.strerror}"
                    ) from None
                if received != c.size:
                    raise PackageHashError(
                        f"checking {c.filename}: size {received}, expected {c.size}"
                    )
                hashed = await self._hash(tmp, c, counts)
                path, owned = ctx.owned_path(c.sha256), True
                path.parent.mkdir(parents=True, exist_ok=True)
                os.replace(tmp, path)
                await asyncio.to_thread(fsync_dir, path.parent)
            finally:
                tmp.unlink(missing_ok=True)
            counts.fetched_files += 1
            ctx.metrics.fetched_files.inc()
        ctx.progress.file_done()
        torrent = hashed.torrent
        held = HeldFile(
            sha256=c.sha256,
            size=c.size,
            name=c.basename,
            path=path,
            owned=owned,
            mtime_ns=path.stat().st_mtime_ns,
            info_hash_v1=torrent.info_hash_v1,
            info_hash_v2=torrent.info_hash_v2,
            piece_length=torrent.piece_length,
            torrent=torrent.metainfo,
            upstream_urls=item.upstream_urls,
            web_seeds=item.web_seeds,
        )
        ctx.state.put_file(held, ctx.clock())
        return held

    async def _hash(self, path: Path, c: Candidate, counts: _Counts) -> HashedFile:
        """One pass over the file: its SHA-256 (checked against Packages) and its torrent."""
        try:
            hashed = await asyncio.to_thread(make_torrent, path, c.basename)
        except OSError as exc:
            raise SourceError(f"reading {path}: {exc.strerror}") from None
        except TorrentError as exc:  # the file changed size under us
            raise PackageHashError(f"checking {c.filename}: {exc}") from None
        counts.hashed_bytes += c.size
        self.ctx.metrics.hashed_bytes.inc(c.size)
        if hashed.sha256 != c.sha256:
            raise PackageHashError(
                f"checking {c.filename}: SHA-256 {hashed.sha256}, expected {c.sha256}"
            )
        return hashed

    # --- the sync ---------------------------------------------------------------------------

    async def _sync(self, counts: _Counts) -> SyncResult:
        ctx, name = self.ctx, self.spec.name
        polled, changed = await self._poll()
        if not changed and ctx.state.repository(name).last_good_sync_time is not None:
            wanted = ctx.state.wanted(name)
            await self._commit(self._held_files(wanted), counts)
            ctx.state.record_sync(name, ctx.clock(), ok=True)
            return SyncResult(name, "unchanged")
        picked: list[_Picked] = []
        absent: list[str] = []
        for suite in self.spec.suites:
            found = polled[suite]
            if found.data is None:  # 304 for this suite while another changed: read it again
                path = suite_path(suite, found.form.files[0])
                fetched = await self.source.poll(path, "", "")
                assert fetched.data is not None
                validator = Validator(
                    fetched.etag, fetched.last_modified, _sha256(fetched.data), found.form.value
                )
                polled[suite] = found = _Polled(found.form, fetched.data, validator)
            release = await self._release(suite, found)
            picked += await self._indexes(suite, release, absent)
        ctx.metrics.absent_indexes.labels(name).set(len(absent))
        if absent:
            log.warning(
                "indexes_absent",
                repository=name,
                indexes=absent,
                hint="Release does not list them; skipped, as apt skips them",
            )
        validators = {suite: p.validator for suite, p in polled.items()}
        by_sha: dict[str, _Picked] = {}
        for item in picked:
            by_sha.setdefault(item.candidate.sha256, item)
        the_plan = plan((p.candidate for p in picked), ctx.policy)
        log.info("sync_planned", repository=name, **the_plan.summary())
        chosen = [by_sha[c.sha256] for c in the_plan.selected]
        to_fetch = [p for p in chosen if self._held(p.candidate.sha256, p.candidate.size) is None]
        ctx.progress.start(name, len(to_fetch), sum(p.candidate.size for p in to_fetch))
        try:
            held = await _bounded(
                [lambda p=p: self._verify(p, counts) for p in chosen],  # type: ignore[misc]
                ctx.concurrency,
            )
        finally:
            ctx.progress.finish()
        await self._commit(held, counts)
        ctx.state.record_sync(
            name,
            ctx.clock(),
            ok=True,
            validators=validators,
            wanted=[h.sha256 for h in held],
            total_bytes=the_plan.selected_bytes,
        )
        return SyncResult(name, "ok", plan=the_plan)

    def _held_files(self, shas: Iterable[str]) -> list[HeldFile]:
        files = [self.ctx.state.file(sha) for sha in sorted(shas)]
        return [f for f in files if f is not None]

    async def _commit(self, held: list[HeldFile], counts: _Counts) -> None:
        """Publishes what the index lacks, then seeds everything (phase 2)."""
        ctx = self.ctx
        missing = await ctx.publisher.missing([h.sha256 for h in held])
        for item in held:
            if item.sha256 in missing:
                await ctx.publisher.publish(record_of(item))
                counts.published += 1
                ctx.metrics.published.inc()
        already = ctx.seeding.seeding()
        for item in held:
            if item.sha256 in already:
                continue
            ctx.seeding.seed(item)
            if item.resume is None:
                resume = await ctx.seeding.resume_data(item.sha256)
                if resume is not None:
                    ctx.state.set_resume(item.sha256, resume)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _utc(timestamp: float) -> datetime:
    return datetime.fromtimestamp(timestamp, UTC)
