"""What of apt's archive cache the peer may seed: the files that match a verified index.

apt keeps what it downloaded in /var/cache/apt/archives, named after the package, with an
epoch's colon written `%3a` (`pkg_1%3a2.0-1_amd64.deb`), while the pool's file name in a
`Packages` index has no epoch (`pool/main/p/pkg/pkg_2.0-1_amd64.deb`). A file is a seeding
candidate when its pool name, size and (checked by the caller, who reads the bytes) SHA-256
match an entry of an index the peer verified; it is seeded where it lies, never copied, so
apt's `clean` and `autoclean` stay in charge of the space. Partial downloads (`partial/`)
and anything that is not a `.deb` are never candidates.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from urllib.parse import unquote

_EPOCH = re.compile(r"^(?P<name>[^_]+)_(?:\d+:)?(?P<rest>[^_]+_[^_]+\.deb)$")


@dataclass(frozen=True)
class IndexedFile:
    """A package file of a verified `Packages` index."""

    pool_path: str  # Filename: pool/main/p/pkg/pkg_2.0-1_amd64.deb
    sha256: str
    size: int

    @property
    def pool_name(self) -> str:
        return self.pool_path.rsplit("/", 1)[-1]


@dataclass(frozen=True)
class Candidate:
    """A file of apt's cache that matches an index entry by name and size; its SHA-256
    must still be checked before it is seeded."""

    archive_name: str
    entry: IndexedFile


def pool_name(archive_name: str) -> str | None:
    """The pool file name of an archive-cache file (epoch dropped), or None if not a .deb."""
    match = _EPOCH.match(unquote(archive_name))
    if match is None:
        return None
    return f"{match.group('name')}_{match.group('rest')}"


def candidates(
    archive: Iterable[tuple[str, int]], index: Mapping[str, IndexedFile]
) -> list[Candidate]:
    """The (name, size) pairs of apt's cache that an index (by pool name) lists with that size."""
    found = []
    for name, size in archive:
        pool = pool_name(name)
        entry = index.get(pool) if pool is not None else None
        if entry is not None and entry.size == size:
            found.append(Candidate(name, entry))
    return sorted(found, key=lambda c: c.archive_name)
