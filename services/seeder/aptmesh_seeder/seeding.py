"""The files being seeded: libtorrent through `aptmesh.swarm`, or nothing (`--once`).

Every file handed to `seed` is a `HeldFile`, verified against a signed index,
so it is added in seed mode: libtorrent trusts it instead of re-hashing it
(libtorrent still checks each piece's hash the first time it sends it).
"""

from __future__ import annotations

import asyncio
from typing import Protocol

from aptmesh import logs
from aptmesh.swarm import Swarm, SwarmError, SwarmStats, SwarmTorrent
from aptmesh_seeder.state import HeldFile

log = logs.get(__name__)


class Seeding(Protocol):
    def seed(self, held: HeldFile) -> None: ...

    def unseed(self, held: HeldFile) -> None: ...

    def seeding(self) -> set[str]:
        """SHA-256 of every file being seeded."""

    async def resume_data(self, sha256: str) -> bytes | None: ...

    def stats(self) -> SwarmStats: ...


class SwarmSeeding:
    """Seeds held files in one libtorrent session; trackers are the tracker's announce URLs."""

    def __init__(self, swarm: Swarm, trackers: tuple[str, ...]) -> None:
        self.swarm = swarm
        self.trackers = trackers
        self._torrents: dict[str, SwarmTorrent] = {}

    def seed(self, held: HeldFile) -> None:
        if held.sha256 in self._torrents:
            return

        def add(resume: bytes | None) -> SwarmTorrent:
            return self.swarm.add(
                held.torrent,
                held.path.parent,
                file_name=held.path.name,
                seed=True,
                trackers=list(self.trackers),
                web_seeds=list(held.web_seeds),
                resume_data=resume,
            )

        try:
            torrent = add(held.resume)
        except (SwarmError, RuntimeError) as exc:
            if held.resume is None:
                raise SwarmError(f"seeding {held.name}: {exc}") from None
            log.warning("resume_data_refused", file=held.name, error=str(exc))
            torrent = add(None)
        self._torrents[held.sha256] = torrent

    def unseed(self, held: HeldFile) -> None:
        torrent = self._torrents.pop(held.sha256, None)
        if torrent is not None:
            # The seeder deletes owned files itself, after the torrent is gone.
            self.swarm.remove(torrent, delete_files=False)

    def seeding(self) -> set[str]:
        return set(self._torrents)

    def held_sha256(self, torrent: SwarmTorrent) -> str | None:
        """The SHA-256 of the held file a torrent seeds (None: not one of ours)."""
        return next((sha for sha, t in self._torrents.items() if t is torrent), None)

    async def resume_data(self, sha256: str) -> bytes | None:
        torrent = self._torrents.get(sha256)
        if torrent is None:
            return None
        try:
            return await asyncio.wait_for(torrent.resume_data(), 10)
        except (SwarmError, TimeoutError) as exc:
            log.warning("resume_data_failed", sha256=sha256, error=str(exc))
            return None

    def stats(self) -> SwarmStats:
        return self.swarm.stats()


class NoSeeding:
    """For `--once`: files are verified, recorded and published, seeded by a later run."""

    def __init__(self) -> None:
        self._held: set[str] = set()

    def seed(self, held: HeldFile) -> None:
        self._held.add(held.sha256)

    def unseed(self, held: HeldFile) -> None:
        self._held.discard(held.sha256)

    def seeding(self) -> set[str]:
        return set(self._held)

    async def resume_data(self, sha256: str) -> bytes | None:
        return None

    def stats(self) -> SwarmStats:
        return SwarmStats(len(self._held), 0, 0, 0, 0, 0)
