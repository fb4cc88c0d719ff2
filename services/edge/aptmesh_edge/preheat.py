"""Collections on an edge: what the collections targeting its zone hold, fetched before anyone
asks, pinned while they hold it, and kept current as the repositories move on.

Theory of operation. Every `poll_seconds` (and whenever a test calls `run_once`)
the `Preheater` reads the collections that target its zone from the tracker and
plans each one: the sources' InRelease and Packages indexes go through the
edge's own index logic (so they are verified exactly as for apt, and the
verifier learns the package hashes), the package requests are resolved over
them (`aptmesh.resolve`), and plain files are taken as the collection names
them (SHA-256 and size). A new repository generation gives a new plan without
any command: the administrator "just updates" nothing.

A plan is applied only when it is whole: a plan with an error (an unknown
package, a constraint nothing meets, an unverifiable index, a set larger than
`CACHE_SHARE` of the cache) is reported as the collection's status lines and
the edge keeps what it held (bad input changes nothing else).

Applying pins every wanted file (pins are the cache's, `cache.BlobStore`)
and then fetches the missing ones through the edge's package logic, at most
`concurrency` at a time so preheating never takes all of the edge's downloads:
a small file through its owner in the zone, a large one through the swarm, the
upstream last (`packages.py`). A file no applied plan wants any more (an old
version) stays pinned for `grace_seconds` on the injected clock, then is
unpinned (and evicted as the cache's LRU decides). The preheater's pins and
their release times persist in `collections.json` beside the cache, so a
restart neither leaks nor drops them.

Plain files' URLs come from the collection, which only an administrator can
change (the tracker's admin token), so fetching them is not an open proxy; their
bytes are checked against the collection's SHA-256 and size by the same gate
as package files (`checked.py`).

State has one writer: the loop's task (and the tests' `run_once`, never both).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from aptmesh import debian, logs
from aptmesh.collection import Collection, EdgeStatus, PlainFile, SourceLine, status_to_json
from aptmesh.debian import FileHash, PackageEntry
from aptmesh.debversion import VersionError, parse_relation
from aptmesh.files import write_atomic
from aptmesh.resolve import Universe, resolve
from aptmesh_edge.body import Body
from aptmesh_edge.cache import BlobStore, TooManyPins
from aptmesh_edge.checked import DownloadFailed
from aptmesh_edge.files import FileService
from aptmesh_edge.metrics import EdgeMetrics
from aptmesh_edge.urls import Resource, Upstreams, UrlError, parse_target

log = logs.get(__name__)

# The most of the cache the collections of a zone may hold together: the rest stays for
# what clients ask that no collection names.
CACHE_SHARE = 0.8
REPORT_EVERY = 1.0  # seconds between progress reports while files arrive
STATE_FILE = "collections.json"
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


class CollectionSource(Protocol):
    """What the preheater asks of the tracker (`aptmesh_tracker.client.TrackerClient`)."""

    async def list_collections(self, zone: str = "") -> list[Collection]: ...

    async def report_collection(self, status: EdgeStatus) -> None: ...


class PlanError(Exception):
    """A collection cannot be planned as it stands; `lines` are its status lines."""

    def __init__(self, *lines: str) -> None:
        super().__init__("; ".join(lines))
        self.lines = list(lines)


@dataclass(frozen=True)
class WantedFile:
    sha256: str
    size: int
    resource: Resource
    plain: str = ""  # the plain file's name in its collection; "" for a package file

    @property
    def expected(self) -> FileHash:
        return FileHash(self.size, self.sha256)


@dataclass
class Plan:
    version: int
    files: dict[str, WantedFile]  # by SHA-256
    generations: tuple[str, ...]


@dataclass
class Held:
    """One collection on this edge: the plan applied, and what its status says."""

    collection: Collection
    plan: Plan | None = None
    errors: tuple[str, ...] = ()
    changed_at: float = 0.0
    complete_at: float = 0.0


@dataclass
class PinState:
    """The preheater's pins (persisted): pinned hashes and when released ones are unpinned."""

    pinned: set[str] = field(default_factory=set)
    releasing: dict[str, float] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path) -> PinState:
        with contextlib.suppress(OSError, ValueError, TypeError, AttributeError):
            data = json.loads(path.read_text())
            pinned = {p for p in data.get("pinned", []) if _HEX64.match(p)}
            releasing = {
                k: float(v) for k, v in dict(data.get("releasing", {})).items() if k in pinned
            }
            return cls(pinned, releasing)
        return cls()

    def dump(self) -> bytes:
        return json.dumps({"pinned": sorted(self.pinned), "releasing": self.releasing}).encode()


async def _bytes(body: Body) -> bytes:
    payload = body.payload
    if isinstance(payload, bytes):
        return payload
    if isinstance(payload, Path):
        return await asyncio.to_thread(payload.read_bytes)
    chunks = [chunk async for chunk in payload.chunks(0, None)]
    return b"".join(chunks)


class Preheater:
    """Owns the collections held on this edge, their plans and the preheater's pins."""

    def __init__(
        self,
        *,
        files: FileService,
        blobs: BlobStore,
        upstreams: Upstreams,
        tracker: CollectionSource,
        metrics: EdgeMetrics,
        keyring: Path | None,
        zone: str,
        edge_id: Callable[[], str],
        clock: Callable[[], float],
        grace_seconds: float,
        concurrency: int,
        report: bool,
        state_dir: Path,
    ) -> None:
        self._files = files
        self._blobs = blobs
        self._upstreams = upstreams
        self._tracker = tracker
        self._metrics = metrics
        self._keyring = keyring
        self._zone = zone
        self._edge_id = edge_id
        self._clock = clock
        self._grace = grace_seconds
        self._slots = asyncio.Semaphore(concurrency)
        self._report = report
        self._state_file = state_dir / STATE_FILE
        self._tmp_dir = blobs.tmp_dir
        self._pins = PinState.load(self._state_file)
        self._held: dict[str, Held] = {}
        self._last_report = 0.0

    # -- what the front ends ask ------------------------------------------------------

    def statuses(self) -> list[EdgeStatus]:
        return [
            self._status(h) for h in sorted(self._held.values(), key=lambda h: h.collection.name)
        ]

    def status_json(self) -> dict[str, Any]:
        return {
            "edge_id": self._edge_id(),
            "zone": self._zone,
            "collections": [status_to_json(s) for s in self.statuses()],
        }

    def find(self, path: str) -> WantedFile | None:
        """`COLLECTION/NAME` (a plain file) or `sha256/HASH` (any file a collection holds)."""
        first, _, rest = path.partition("/")
        if first == "sha256":
            for held in self._held.values():
                if held.plan is not None and rest in held.plan.files:
                    return held.plan.files[rest]
            return None
        named = self._held.get(first)
        if named is None or named.plan is None:
            return None
        return next((f for f in named.plan.files.values() if f.plain and f.plain == rest), None)

    async def body(self, path: str) -> Body:
        """A held file's body, through the same checks as every file; raises DownloadFailed."""
        wanted = self.find(path)
        if wanted is None:
            raise DownloadFailed(404, f"no collection on this edge holds {path[:200]}")
        return await self._fetch(wanted)

    async def _fetch(self, wanted: WantedFile) -> Body:
        if wanted.plain:
            return await self._files.get_expected(wanted.resource, wanted.expected)
        return await self._files.get(wanted.resource)

    # -- the loop ---------------------------------------------------------------------

    async def run_forever(self, every: float) -> None:
        while True:
            try:
                await self.run_once()
            except Exception:
                log.exception("preheat_failed")
            await asyncio.sleep(every)

    async def run_once(self) -> None:
        """Reads the collections, plans and applies them, fetches what is missing, reports."""
        from aptmesh_tracker.client import TrackerClientError

        try:
            collections = await self._tracker.list_collections(self._zone)
        except TrackerClientError as exc:
            log.info("collections_unavailable", error=str(exc))
            return
        self._forget_deleted({c.name for c in collections})
        for collection in collections:
            held = self._held.setdefault(collection.name, Held(collection))
            held.collection = collection
            try:
                plan = await self._plan(collection)
                self._check_room(collection.name, plan)
            except PlanError as exc:
                self._refuse(held, collection, exc.lines)
                continue
            self._apply(held, plan)
        self._release_due()
        self._save()
        await self._report_all(force=True)
        await self._fill()
        await self._report_all(force=True)

    def _refuse(self, held: Held, collection: Collection, lines: list[str]) -> None:
        if held.errors != tuple(lines):
            log.warning("collection_refused", collection=collection.name, errors=lines[:5])
        held.errors = tuple(lines)

    def _forget_deleted(self, names: set[str]) -> None:
        for name in [n for n in self._held if n not in names]:
            log.info("collection_dropped", collection=name)
            del self._held[name]
        self._schedule_releases()

    def _apply(self, held: Held, plan: Plan) -> None:
        old = held.plan
        held.errors = ()
        changed = (
            old is None or old.version != plan.version or old.files.keys() != plan.files.keys()
        )
        held.plan = plan
        if changed:
            held.changed_at = self._clock()
            held.complete_at = 0.0
            log.info(
                "collection_planned",
                collection=held.collection.name,
                version=plan.version,
                files=len(plan.files),
                bytes=sum(f.size for f in plan.files.values()),
                generations=list(plan.generations),
            )
        for sha256 in plan.files:
            self._pins.releasing.pop(sha256, None)
            if sha256 not in self._pins.pinned:
                try:
                    self._blobs.pin(sha256)
                except TooManyPins as exc:
                    held.errors = (str(exc),)
                    break
                self._pins.pinned.add(sha256)
        self._schedule_releases()

    def _wanted(self) -> dict[str, WantedFile]:
        out: dict[str, WantedFile] = {}
        for held in self._held.values():
            if held.plan is not None:
                out.update(held.plan.files)
        return out

    def _schedule_releases(self) -> None:
        wanted = self._wanted()
        due = self._clock() + self._grace
        for sha256 in self._pins.pinned:
            if sha256 not in wanted:
                self._pins.releasing.setdefault(sha256, due)

    def _release_due(self) -> None:
        now = self._clock()
        for sha256, when in list(self._pins.releasing.items()):
            if when <= now:
                self._blobs.unpin(sha256)
                self._pins.pinned.discard(sha256)
                del self._pins.releasing[sha256]
                log.info("collection_file_unpinned", sha256=sha256)

    def _save(self) -> None:
        try:
            write_atomic(self._state_file, self._pins.dump(), self._tmp_dir)
        except OSError as exc:
            log.warning("collection_pins_not_saved", reason=exc.strerror)

    def _check_room(self, name: str, plan: Plan) -> None:
        others = {
            sha: f
            for n, h in self._held.items()
            if n != name and h.plan is not None
            for sha, f in h.plan.files.items()
        }
        total = sum(f.size for f in {**others, **plan.files}.values())
        room = int(self._blobs.max_bytes * CACHE_SHARE)
        if total > room:
            raise PlanError(
                f"collection {name!r} needs {total} bytes with the others of this zone, more "
                f"than {CACHE_SHARE:.0%} of this edge's cache ({room} of {self._blobs.max_bytes}"
                " bytes): nothing of this version is fetched"
            )

    async def _fill(self) -> None:
        """Fetches every wanted file that the cache lacks, `concurrency` at a time."""
        missing = [f for f in self._wanted().values() if f.sha256 not in self._blobs]
        if missing:
            await asyncio.gather(*(self._one(f) for f in missing))

    async def _one(self, wanted: WantedFile) -> None:
        async with self._slots:
            if wanted.sha256 in self._blobs:
                return
            try:
                body = await self._fetch(wanted)
                await body.drain()
            except DownloadFailed as exc:
                self._file_failed(wanted, exc.text)
            else:
                if wanted.sha256 not in self._blobs:
                    self._file_failed(wanted, "fetched, but not kept (the cache has no room)")
        await self._report_all(force=False)

    def _file_failed(self, wanted: WantedFile, why: str) -> None:
        name = wanted.plain or wanted.resource.path.rsplit("/", 1)[-1]
        log.warning("collection_file_failed", file=name, sha256=wanted.sha256, reason=why)
        for held in self._held.values():
            if held.plan is not None and wanted.sha256 in held.plan.files:
                line = f"{name}: {why}"
                if line not in held.errors:
                    held.errors = (*held.errors, line)[:20]

    # -- status -----------------------------------------------------------------------

    def _status(self, held: Held) -> EdgeStatus:
        files = held.plan.files.values() if held.plan is not None else ()
        present = [f for f in files if f.sha256 in self._blobs]
        return EdgeStatus(
            edge_id=self._edge_id(),
            zone=self._zone,
            collection=held.collection.name,
            # The version held (0 while none is): never the newer one it could not take, so
            # a status is only complete for the version it was planned for.
            version=held.plan.version if held.plan is not None else 0,
            files_wanted=len(files),
            files_present=len(present),
            bytes_wanted=sum(f.size for f in files),
            bytes_present=sum(f.size for f in present),
            errors=held.errors,
            generations=held.plan.generations if held.plan is not None else (),
            changed_at=held.changed_at,
            complete_at=held.complete_at,
        )

    def _mark_completions(self) -> None:
        """Notes when each collection's current version became whole here (once)."""
        for held in self._held.values():
            if held.complete_at or held.plan is None:
                continue
            if held.plan.version != held.collection.version:
                continue  # an older version is held: never complete for the new one
            if self._status(held).complete:
                held.complete_at = self._clock()
                self._metrics.collection_complete_seconds.observe(
                    held.complete_at - held.changed_at
                )
                log.info(
                    "collection_completed",
                    collection=held.collection.name,
                    version=held.collection.version,
                    seconds=round(held.complete_at - held.changed_at, 3),
                )

    async def _report_all(self, *, force: bool) -> None:
        now = self._clock()
        self._mark_completions()
        statuses = self.statuses()
        self._show(statuses)
        if not self._report or (not force and now - self._last_report < REPORT_EVERY):
            return
        self._last_report = now
        from aptmesh_tracker.client import TrackerClientError

        for status in statuses:
            try:
                await self._tracker.report_collection(status)
            except TrackerClientError as exc:
                log.info("collection_report_failed", error=str(exc))
                return

    def _show(self, statuses: Iterable[EdgeStatus]) -> None:
        wanted = self._wanted()
        present = [f for f in wanted.values() if f.sha256 in self._blobs]
        m = self._metrics
        m.collection_files.labels(state="wanted").set(len(wanted))
        m.collection_files.labels(state="present").set(len(present))
        m.collection_files.labels(state="missing").set(len(wanted) - len(present))
        total = sum(f.size for f in wanted.values())
        have = sum(f.size for f in present)
        m.collection_bytes.labels(state="wanted").set(total)
        m.collection_bytes.labels(state="present").set(have)
        m.collection_bytes.labels(state="missing").set(total - have)

    # -- planning ---------------------------------------------------------------------

    async def _plan(self, collection: Collection) -> Plan:
        spec = collection.spec
        files: dict[str, WantedFile] = {}
        generations: list[str] = []
        if spec.packages or spec.sections or spec.priorities:
            entries: list[PackageEntry] = []
            base_of: dict[int, str] = {}
            lines: list[str] = []
            for line in spec.source_lines():
                try:
                    found, generation = await self._source_entries(line, spec.architectures)
                except PlanError as exc:
                    lines += exc.lines
                    continue
                generations.append(generation)
                for entry in found:
                    base_of[id(entry)] = line.url
                entries += found
            requests = []
            for text in spec.packages:
                try:
                    requests.append(parse_relation(text))
                except VersionError as exc:
                    lines.append(f"{text}: {exc}")
            result = resolve(
                requests,
                Universe(entries, spec.architectures),
                with_dependencies=spec.with_dependencies,
                sections=spec.sections,
                priorities=spec.priorities,
            )
            lines += result.errors
            if result.error_count > len(result.errors):
                lines.append(f"... and {result.error_count - len(result.errors)} more")
            if lines:
                raise PlanError(*lines)
            for entry in result.entries:
                resource = self._resource(f"{base_of[id(entry)]}/{entry.filename}")
                files[entry.sha256] = WantedFile(entry.sha256, entry.size, resource)
        for plain in spec.files:
            files[plain.sha256] = WantedFile(
                plain.sha256, plain.size, self._plain_resource(plain), plain.name
            )
        return Plan(collection.version, files, tuple(generations))

    def _resource(self, url: str) -> Resource:
        try:
            target = parse_target(url)
            if target is None:
                raise UrlError(400, "not a URL")
            return self._upstreams.resolve(target)
        except UrlError as exc:
            raise PlanError(f"{url[:200]}: {exc.text}") from None

    def _plain_resource(self, plain: PlainFile) -> Resource:
        first = plain.urls[0]
        try:
            target = parse_target(first)
        except UrlError as exc:
            raise PlanError(f"file {plain.name}: {first[:200]}: {exc.text}") from None
        if target is None:
            raise PlanError(f"file {plain.name}: {first[:200]} is not a URL")
        with contextlib.suppress(UrlError):
            return self._upstreams.resolve(target)  # a configured upstream: its backends
        backends = []
        for url in plain.urls:
            with contextlib.suppress(UrlError):
                other = parse_target(url)
                if other is not None and other.path == target.path:
                    o = other.origin
                    backends.append(f"{o.scheme}://{o.authority}")
        return Resource(target.origin, target.path, tuple(dict.fromkeys(backends)))

    async def _index(self, url: str) -> bytes:
        resource = self._resource(url)
        try:
            return await _bytes(await self._files.get(resource))
        except DownloadFailed as exc:
            raise PlanError(f"{url[:200]}: {exc.text}") from None

    async def _source_entries(
        self, line: SourceLine, architectures: tuple[str, ...]
    ) -> tuple[list[PackageEntry], str]:
        """The packages of one source's verified indexes, and its generation's label."""
        if self._keyring is None:
            raise PlanError(f"{line.url} {line.suite}: no keyring to verify its InRelease")
        inrelease = await self._index(f"{line.url}/{debian.suite_path(line.suite, 'InRelease')}")
        try:
            signed = await asyncio.to_thread(debian.verify_inrelease, inrelease, self._keyring)
            release = debian.parse_release(signed)
        except debian.DebianIndexError as exc:
            raise PlanError(f"{line.url} {line.suite}: {exc}") from None
        date = debian.format_date(release.date) if release.date else "no date"
        generation = f"{line.url} {line.suite} {date}"
        bases = (
            [f"{c}/binary-{a}/Packages" for c in line.components for a in architectures]
            if line.components
            else ["Packages"]
        )
        entries: list[PackageEntry] = []
        for base in bases:
            if not debian.index_variants(release, base):
                continue  # Release lists no such index (apt skips it too)
            variant = debian.pick_index_variant(release, base)
            data = await self._index(f"{line.url}/{debian.suite_path(line.suite, variant)}")
            try:
                entries += await asyncio.to_thread(debian.load_packages, release, variant, data)
            except debian.DebianIndexError as exc:
                raise PlanError(f"{line.url} {line.suite} {variant}: {exc}") from None
        return entries, generation
