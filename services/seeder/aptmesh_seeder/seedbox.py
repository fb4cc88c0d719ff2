"""The seed box: restores what it held, polls its repositories, retires what left them.

Theory of operation. At start, `restore` re-adds every held file that a good
sync selected (still wanted, or within its grace period) to the swarm in seed
mode, with its libtorrent resume data: no download, no hash, only a `stat`
to see the file is still there as it was verified. A file that vanished or
changed is dropped from the state and its repositories' validators are
cleared, so their next poll is a full sync that fetches it again.

A `stat` cannot prove the bytes intact (a bad disk, a stray write, a kill
mid-write by something else keep size and mtime), and with resume data
libtorrent never hashes a piece again, so `reverify` re-hashes every held
file in the background after each start, at a bounded rate
(`reverify_rate`), and any one file as soon as a piece of it failed a hash
(`recheck`). A file whose bytes are not its SHA-256 is counted
(`aptmesh_verification_failures_total{kind="held_file"}`), dropped like a
changed one, and the poll loop is woken (`wake`) to fetch it again at once.

`run` then syncs every repository (in configuration order, one at a time,
which keeps upstream load and disk I/O predictable), retires expired files,
and waits for the poll interval or a "sync now". After a sync that failed
(the upstream or the tracker unreachable, say at start-up beside a tracker
still starting) it tries again sooner: RETRY_FIRST seconds, doubling up to
the poll interval. Retiring is the only place
files leave: a held file nobody has wanted for `grace_period` seconds (by the
injected clock) stops being seeded and, if the seeder downloaded it, is
deleted.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable, Iterable, Sequence
from pathlib import Path
from typing import BinaryIO

from aptmesh import logs
from aptmesh_seeder.state import HeldFile
from aptmesh_seeder.sync import RepositorySync, SyncContext, SyncResult

log = logs.get(__name__)

RETRY_FIRST = 5.0  # seconds before a failed sync is tried again; doubles up to the poll interval
REHASH_CHUNK = 1 << 20  # bytes read per step of a re-hash
HELD_FILE_KIND = "held_file"  # aptmesh_verification_failures_total{kind} of a corrupted held file


async def file_sha256(path: Path, rate: int = 0) -> str | None:
    """The SHA-256 of a file read at most `rate` bytes per second (0: unpaced) off the event
    loop; None when it cannot be read."""
    digest = hashlib.sha256()

    def step(f: BinaryIO) -> int:
        chunk = f.read(REHASH_CHUNK)
        digest.update(chunk)
        return len(chunk)

    try:
        with path.open("rb") as f:
            while n := await asyncio.to_thread(step, f):
                if rate:
                    await asyncio.sleep(n / rate)  # pacing, so a re-hash never starves seeding
    except OSError:
        return None
    return digest.hexdigest()


class UnknownRepository(KeyError):
    """A caller named a repository the configuration does not have."""


class SeedBox:
    def __init__(
        self,
        syncs: Sequence[RepositorySync],
        context: SyncContext,
        *,
        grace_period: float,
        poll_interval: float,
        on_synced: Callable[[list[SyncResult]], Awaitable[None]] | None = None,
        retry_first: float = RETRY_FIRST,
    ) -> None:
        self.syncs = {s.spec.name: s for s in syncs}
        self.ctx = context
        self.grace_period = grace_period
        self.poll_interval = poll_interval
        self.retry_first = retry_first
        self.on_synced = on_synced
        self.ready = False
        self._sync_lock = asyncio.Lock()
        self.wake = asyncio.Event()  # set: sync now (a held file was dropped)
        self._rechecks: dict[str, asyncio.Task[int]] = {}

    # --- start-up ---------------------------------------------------------------------------

    def _still_there(self, held: HeldFile) -> bool:
        try:
            st = held.path.stat()
        except OSError:
            return False
        return st.st_size == held.size and st.st_mtime_ns == held.mtime_ns

    def restore(self) -> int:
        """Seeds every held file a good sync selected; returns how many."""
        state = self.ctx.state
        state.forget_repositories_except(self.syncs, self.ctx.clock())
        restored = 0
        for held in state.files():
            if held.missing_since is not None and not held.was_wanted:
                continue  # verified by a sync that failed later: never seeded
            if not self._still_there(held):
                log.warning("held_file_changed", file=held.name, path=str(held.path))
                state.clear_validators(state.wanted_by(held.sha256))
                self._drop(held)
                continue
            self.ctx.seeding.seed(held)
            restored += 1
        for name in self.syncs:
            good = state.repository(name).last_good_sync_time
            self.ctx.metrics.last_good_sync.labels(name).set(good or 0)
        self.ready = True
        log.info("held_files_restored", files=restored)
        return restored

    async def reverify(self, files: Iterable[HeldFile] | None = None, *, rate: int = 0) -> int:
        """Re-hashes held files (every one when None) at `rate` bytes per second; drops each
        whose bytes are not its SHA-256 and wakes the poll loop. Returns how many it dropped."""
        dropped = 0
        checked = 0
        for held in list(self.ctx.state.files() if files is None else files):
            digest = await file_sha256(held.path, rate)
            checked += 1
            if digest == held.sha256:
                continue
            async with self._sync_lock:
                current = self.ctx.state.file(held.sha256)
                if current is None or (current.path, current.mtime_ns) != (
                    held.path,
                    held.mtime_ns,
                ):
                    continue  # retired, or stored again by a sync meanwhile
                log.warning(
                    "held_file_corrupted",
                    file=held.name,
                    path=str(held.path),
                    found=digest or "unreadable",
                )
                self.ctx.metrics.verification_failure(HELD_FILE_KIND)
                self.ctx.state.clear_validators(self.ctx.state.wanted_by(held.sha256))
                self._drop(held)
                dropped += 1
        if dropped:
            self.wake.set()
        if files is None:
            log.info("held_files_reverified", files=checked, dropped=dropped)
        return dropped

    def recheck(self, sha256: str) -> None:
        """Re-hashes one held file soon, unpaced (a piece of it failed a hash); once at a time."""
        held = self.ctx.state.file(sha256)
        if held is None or sha256 in self._rechecks:
            return
        task = asyncio.get_running_loop().create_task(self.reverify([held]))
        self._rechecks[sha256] = task
        task.add_done_callback(lambda _: self._rechecks.pop(sha256, None))

    def _drop(self, held: HeldFile) -> None:
        self.ctx.seeding.unseed(held)
        if held.owned:
            held.path.unlink(missing_ok=True)
        self.ctx.state.delete_file(held.sha256)

    # --- syncing ----------------------------------------------------------------------------

    async def sync(self, names: Sequence[str] = ()) -> list[SyncResult]:
        """Syncs the named repositories (all when empty), then retires expired files."""
        unknown = [n for n in names if n not in self.syncs]
        if unknown:
            raise UnknownRepository(unknown[0])
        chosen = [self.syncs[n] for n in names] if names else list(self.syncs.values())
        async with self._sync_lock:
            results = [await s.run() for s in chosen]
            self.retire()
        if self.on_synced is not None:
            await self.on_synced(results)
        return results

    def retire(self) -> int:
        """Stops seeding (and deletes, if owned) files unwanted for the grace period."""
        expired = self.ctx.state.expired(self.ctx.clock(), self.grace_period)
        for held in expired:
            log.info("held_file_retired", file=held.name, sha256=held.sha256, owned=held.owned)
            self._drop(held)
            self.ctx.metrics.retired.inc()
        return len(expired)

    async def run(self, stop: asyncio.Event) -> None:
        """Polls until `stop` is set ("sync now" calls `sync` directly, under the same lock)."""
        retry = self.retry_first
        while not stop.is_set():
            try:
                failed = not all(result.ok for result in await self.sync())
            except Exception:  # a bug must not stop the seeding; the next poll tries again
                log.exception("poll_failed")
                failed = True
            wait = min(retry, self.poll_interval) if failed else self.poll_interval
            retry = retry * 2 if failed else self.retry_first
            await self._sleep(stop, wait)

    async def _sleep(self, stop: asyncio.Event, seconds: float) -> None:
        """Waits `seconds`, or less if `stop` or `wake` is set (and clears `wake`)."""
        waits = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(self.wake.wait())]
        try:
            await asyncio.wait(waits, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waits:
                waiter.cancel()
        self.wake.clear()

    # --- status -----------------------------------------------------------------------------

    def healthy(self) -> bool:
        """False when the last sync of some repository failed."""
        return all(self.ctx.state.repository(n).last_sync_ok is not False for n in self.syncs)

    async def save_resume_data(self, budget: float = 10.0) -> int:
        """Refreshes the resume data of every seeded file (at shutdown); returns how many."""
        saved = 0
        loop = asyncio.get_running_loop()
        deadline = loop.time() + budget
        for sha in sorted(self.ctx.seeding.seeding()):
            if loop.time() > deadline:
                break
            data = await self.ctx.seeding.resume_data(sha)
            if data is not None and self.ctx.state.file(sha) is not None:
                self.ctx.state.set_resume(sha, data)
                saved += 1
        return saved
