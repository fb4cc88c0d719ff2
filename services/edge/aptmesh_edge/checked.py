"""The edge's one integrity gate: which bytes of a file may leave the edge, and when.

Every source (the upstream over HTTP, the swarm, another edge of the zone)
writes through a `Download` (downloads.py), and a `Download`, like the
upstream pass-through used when the disk is full, feeds what it is given to a
`CheckedBytes`. Nothing else in the edge hashes a package file or decides
whether a client may read it. The rule (DESIGN.md, integrity rule 4):

- A file small enough for the memory cache (at most `memory_max` bytes) is
  verified whole before its first byte is released to a client.
- A larger file is released as it arrives with its tail held back. When its
  torrent is known (`know_pieces`, from the tracker's index) only whole
  pieces that matched the torrent's piece hashes are released, whichever
  source wrote them (the swarm's pieces, libtorrent checked them already and
  they are not hashed again; an HTTP fallback's are checked here); otherwise
  all but the last byte.
- Either way the last byte is released only once the whole file has the
  index's size and SHA-256 (`finish`): a client never holds a complete body
  that did not verify. When the file fails, readers raise `DownloadFailed`
  and the HTTP layer cuts the connection, never completes it.
- The cache commits and the swarm seeds only a file whose `finish` passed.

Another edge asking for the file (a relay, which checks the bytes itself)
gets a small file's bytes as they arrive too, with the tail held back, so a
file going down the zone's tree is not held whole at every hop.
"""

from __future__ import annotations

import enum
import hashlib
from dataclasses import dataclass

from aptmesh.debian import FileHash, PackageHashError, Sha256Checker

PIECE_DIGEST = 20  # bytes of a v1 piece hash (SHA-1, as BEP 3 has it)


@dataclass(frozen=True)
class Pieces:
    """A torrent's v1 piece hashes: `digests` holds PIECE_DIGEST bytes a piece."""

    length: int
    digests: bytes


class Failure(enum.Enum):
    """Why bytes were refused; the `kind` of `aptmesh_verification_failures_total`."""

    SIZE = "size"
    SHA256 = "sha256"
    PIECE = "piece"  # a piece differs from the torrent's piece hash


class Verdict(enum.Enum):
    """Where a file's check stands."""

    PENDING = "pending"  # bytes are still arriving
    VERIFIED = "verified"  # the whole file has the expected size and SHA-256
    REFUSED = "refused"  # it does not, and never will (a rewind starts a new check)


class DownloadFailed(Exception):
    """The download could not complete or did not verify; the text is safe for clients."""

    def __init__(self, status: int, text: str, *, failure: Failure | None = None) -> None:
        super().__init__(text)
        self.status = status
        self.text = text
        self.failure = failure  # set for bytes that did not verify, None for transport errors


class CheckedBytes:
    """Owns the check of one file's bytes as they arrive in order, and the offset up to which
    they may be released (`releasable`). With `expected` (the verified index's entry) it checks
    size and SHA-256 through the core's streaming `Sha256Checker`; without one (verify mode off,
    files no index names) only the announced size, and it still yields the SHA-256 that names
    the cached blob."""

    def __init__(self, name: str, expected: FileHash | None, memory_max: int) -> None:
        self.name = name
        self.expected = expected
        self.memory_max = memory_max
        self.size: int | None = expected.size if expected else None
        self.verdict = Verdict.PENDING
        self._pieces: Pieces | None = None
        self._start()

    def _start(self) -> None:
        self._checker = Sha256Checker(self.expected, self.name) if self.expected else None
        self._digest = hashlib.sha256()
        self.received = 0
        self._piece = hashlib.sha1(usedforsecurity=False)
        self._pieces_end = 0  # bytes from the start in pieces that matched

    def know_pieces(self, pieces: Pieces) -> None:
        """From now on bytes are released only in whole pieces that match (before any byte:
        the pieces are counted from the file's start)."""
        if self.received:
            raise ValueError("piece hashes are known only before the first byte")
        self._pieces = pieces

    def announce(self, size: int | None) -> None:
        """A source says how many bytes it will send (None: it does not say)."""
        if self.expected is not None and size is not None and size != self.expected.size:
            self._refuse(
                Failure.SIZE,
                f"checking {self.name}: the source announced {size} bytes, "
                f"the signed index says {self.expected.size}",
            )
        if self.size is None:
            self.size = size

    def update(self, data: bytes, *, verified_piece: bool = False) -> None:
        """Bytes in order; refuses them at once when there are more than the file has.

        `verified_piece`: `data` is one whole piece that libtorrent checked against this
        torrent's piece hash (the swarm's, read back after its check), so it counts as
        matched without a second SHA-1 pass; only when it starts a piece here, else (a
        fallback wrote the piece's start) it is hashed like any other bytes. The file's
        SHA-256 is computed over every byte either way."""
        if self.size is not None and self.received + len(data) > self.size:
            self._refuse(Failure.SIZE, f"checking {self.name}: more than {self.size} bytes")
        if self._pieces is not None:
            length = self._pieces.length
            end = self.received + len(data)
            if (
                verified_piece
                and self.received % length == 0
                and (len(data) == length or end == self.size)
            ):
                self._pieces_end = end
            else:
                self._check_pieces(data)
        if self._checker is not None:
            self._checker.update(data)
            self.received = self._checker.received
        else:
            self._digest.update(data)
            self.received += len(data)

    def _check_pieces(self, data: bytes) -> None:
        assert self._pieces is not None
        length, digests = self._pieces.length, self._pieces.digests
        pos, view = self.received, memoryview(data)
        while view:
            take = min(len(view), length - pos % length)
            self._piece.update(view[:take])
            pos, view = pos + take, view[take:]
            if pos % length and pos != self.size:
                continue
            index = (pos - 1) // length
            if self._piece.digest() != digests[index * PIECE_DIGEST : (index + 1) * PIECE_DIGEST]:
                self._refuse(
                    Failure.PIECE, f"checking {self.name}: piece {index} differs from the torrent's"
                )
            self._pieces_end = pos
            self._piece = hashlib.sha1(usedforsecurity=False)

    def reset(self) -> None:
        """Forgets every byte (a new source starts the file again)."""
        self.verdict = Verdict.PENDING
        self._start()

    def finish(self) -> str:
        """Checks the whole file; returns its SHA-256 or raises DownloadFailed."""
        if self._checker is None:
            if self.size is not None and self.received != self.size:
                self._refuse(
                    Failure.SIZE,
                    f"checking {self.name}: size {self.received}, expected {self.size}",
                )
            sha256 = self._digest.hexdigest()
        else:
            try:
                self._checker.finish()
            except PackageHashError as exc:
                assert self.expected is not None
                wrong = Failure.SIZE if self.received != self.expected.size else Failure.SHA256
                self._refuse(wrong, str(exc))
            sha256 = self._checker.hexdigest()
        self.size = self.received
        self.verdict = Verdict.VERIFIED
        return sha256

    def _refuse(self, failure: Failure, text: str) -> None:
        self.verdict = Verdict.REFUSED
        raise DownloadFailed(502, text, failure=failure)

    def small(self) -> bool:
        """Whether the file is held whole until verified (it fits the memory cache)."""
        return self.size is not None and self.size <= self.memory_max

    def releasable(self, received: int, *, relay: bool = False) -> int:
        """How many bytes from the file's start may be released of the `received` so far;
        `relay`: to another edge, which checks them itself."""
        if self.verdict is Verdict.VERIFIED:
            return received
        if self.verdict is Verdict.REFUSED or (self.small() and not relay):
            return 0
        if self._pieces is not None:
            return max(0, min(received - 1, self._pieces_end))
        return max(0, received - 1)
