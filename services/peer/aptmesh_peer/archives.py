"""Names in apt's archive cache: the peer seeds those files that match a verified index.

apt keeps what it downloaded in /var/cache/apt/archives, named after the package, with an
epoch's colon written `%3a` (`pkg_1%3a2.0-1_amd64.deb`), while the pool's file name in a
`Packages` index has no epoch (`pool/main/p/pkg/pkg_2.0-1_amd64.deb`). A file is seeded when
its SHA-256 is listed by an index the peer verified, with its size, under this pool name
(aptmesh_cli.peer.RunningPeer.seed_archives); it is seeded where it lies, never copied, so
apt's `clean` and `autoclean` stay in charge of the space. Partial downloads (`partial/`)
and anything that is not a `.deb` are never candidates.
"""

from __future__ import annotations

import re
from urllib.parse import unquote

_EPOCH = re.compile(r"^(?P<name>[^_]+)_(?:\d+:)?(?P<rest>[^_]+_[^_]+\.deb)$")


def pool_name(archive_name: str) -> str | None:
    """The pool file name of an archive-cache file (epoch dropped), or None if not a .deb."""
    match = _EPOCH.match(unquote(archive_name))
    if match is None:
        return None
    return f"{match.group('name')}_{match.group('rest')}"
