"""Plain files (installer images, preseed files, firmware) that collections name by SHA-256 and
size: served from a directory, seeded, and published to the tracker's index like packages.

Theory of operation. `files_dir` is the truth: every regular file directly in it
whose name a collection accepts (`aptmesh.collection`'s file-name rule) is hashed
once per (size, mtime) (`aptmesh.torrent.make_torrent`, in a thread), seeded from
where it lies (never copied, never deleted) and published with its URL on the
seeder's HTTP port, `BASE/files/SHA256/NAME`, as upstream URL and web seed. The
HTTP route serves a file only while its last scan gave that name that SHA-256, so
a URL never serves other bytes than it names (a file changed since is re-hashed at
the next scan; an edge checks the bytes anyway). A collection then lists the file
with that URL (`aptmesh collection define --file NAME=SHA256:SIZE:URL`); edges
fetch a large one through the swarm, with the seeder as its first peer.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from aptmesh import logs
from aptmesh.torrent import make_torrent
from aptmesh_seeder.publish import Publisher, PublishError, record_of
from aptmesh_seeder.seeding import Seeding
from aptmesh_seeder.state import HeldFile

log = logs.get(__name__)

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,254}$")


@dataclass(frozen=True)
class ServedFile:
    name: str
    sha256: str
    size: int
    url: str


class PlainFiles:
    """Owns what the directory's files hashed to, and which of them are seeded and published."""

    def __init__(
        self,
        directory: Path,
        seeding: Seeding,
        publisher: Publisher,
        base_url: Callable[[], str],
    ) -> None:
        self._dir = directory
        self._seeding = seeding
        self._publisher = publisher
        self._base_url = base_url
        self._held: dict[str, HeldFile] = {}  # by name

    def lookup(self, sha256: str, name: str) -> Path | None:
        held = self._held.get(name)
        return held.path if held is not None and held.sha256 == sha256 else None

    def served(self) -> list[ServedFile]:
        return [
            ServedFile(h.name, h.sha256, h.size, h.upstream_urls[0])
            for h in sorted(self._held.values(), key=lambda h: h.name)
        ]

    async def scan(self) -> list[ServedFile]:
        """Hashes new and changed files, seeds and publishes them; drops vanished ones."""
        try:
            paths = [p for p in self._dir.iterdir() if p.is_file() and _NAME.match(p.name)]
        except OSError as exc:
            log.warning("plain_files_unreadable", directory=str(self._dir), reason=exc.strerror)
            return self.served()
        names = {p.name for p in paths}
        for name in [n for n in self._held if n not in names]:
            self._seeding.unseed(self._held.pop(name))
        for path in paths:
            try:
                stat = path.stat()
            except OSError:
                continue
            held = self._held.get(path.name)
            if held is not None and (held.size, held.mtime_ns) == (stat.st_size, stat.st_mtime_ns):
                continue
            if held is not None:
                self._seeding.unseed(held)
            hashed = await asyncio.to_thread(make_torrent, path)
            url = f"{self._base_url().rstrip('/')}/files/{hashed.sha256}/{path.name}"
            t = hashed.torrent
            held = HeldFile(
                sha256=hashed.sha256,
                size=t.size,
                name=t.name,
                path=path,
                owned=False,
                mtime_ns=stat.st_mtime_ns,
                info_hash_v1=t.info_hash_v1,
                info_hash_v2=t.info_hash_v2,
                piece_length=t.piece_length,
                torrent=t.metainfo,
                upstream_urls=(url,),
                web_seeds=(url,),
            )
            self._held[path.name] = held
            try:
                # Published before it is seeded: the tracker answers announces only for
                # torrents its index holds, and the first announce goes out at once.
                await self._publisher.publish(record_of(held))
            except PublishError as exc:
                log.warning("plain_file_not_published", file=path.name, error=str(exc))
            else:
                log.info("plain_file_published", file=path.name, sha256=held.sha256, url=url)
            self._seeding.seed(held)
        return self.served()
