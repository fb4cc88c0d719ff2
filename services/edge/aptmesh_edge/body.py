"""What the logic hands the HTTP front end to send: a `Body`, its payload in three forms."""

from __future__ import annotations

import email.utils
import functools
import os
from dataclasses import dataclass
from pathlib import Path

from aptmesh_edge.decisions import Outcome, SourceKind
from aptmesh_edge.downloads import BodyReader

# bytes: in memory, sent in one write; Path: a cached file, sent with sendfile; BodyReader: a
# running download (or a pass-through), streamed as its check releases bytes.
Payload = bytes | Path | BodyReader


@dataclass(frozen=True)
class Body:
    """A response body: its payload, and what the headers and metrics say about it."""

    payload: Payload
    size: int | None
    last_modified: str
    source: SourceKind  # the served-bytes label of a payload not streamed from a reader
    outcome: Outcome
    content_type: str = "application/octet-stream"
    sha256: str = ""  # of a cached package file

    async def drain(self) -> None:
        """Reads a streamed payload to its end (a prefetch: the download commits it)."""
        if not isinstance(self.payload, bytes | Path):
            async for _ in self.payload.chunks(0, None):
                pass


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
