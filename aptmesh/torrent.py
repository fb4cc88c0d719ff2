"""Torrent identity: the deterministic hybrid (v1+v2) torrent of one package file.

Theory of operation. DESIGN.md fixes the torrent of a package file as a pure
function of its bytes and its basename, so every seeder and edge that holds a
file computes the same infohashes without talking to each other:

- single file, `name` = the basename from the pool path;
- piece length = min(4 MiB, max(64 KiB, next_power_of_two(ceil(size / 1024))));
- hybrid: the v1 fields (`length`, `pieces` = SHA-1 per piece) and the v2
  fields (`meta version` 2, `file tree` with the BEP 52 SHA-256 merkle root of
  16 KiB blocks) in one info dictionary; `piece layers` beside it;
- nothing else in `info`: no creation date, no comment, not private.

`make_torrent` hashes the file in one pass (SHA-1 pieces, SHA-256 blocks and
the whole-file SHA-256 that Packages lists). `parse_torrent` is the checker
the tracker and edges run on torrents they are given. Neither imports
libtorrent; the tests prove libtorrent agrees on the infohashes.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from aptmesh import bencode

BLOCK = 16 * 1024
MIN_PIECE = 64 * 1024
MAX_PIECE = 4 * 1024 * 1024
_ZERO = bytes(32)


class TorrentError(ValueError):
    """A torrent is malformed, not hybrid, or disagrees with its record."""


def piece_length_for(size: int) -> int:
    """The piece-size rule of DESIGN.md."""
    if size < 0:
        raise ValueError("size must not be negative")
    wanted = max(1, math.ceil(size / 1024))
    return min(MAX_PIECE, max(MIN_PIECE, 1 << (wanted - 1).bit_length()))


@dataclass(frozen=True)
class Torrent:
    name: str
    size: int
    piece_length: int
    info_hash_v1: str  # hex SHA-1 of the bencoded info dictionary
    info_hash_v2: str  # hex SHA-256 of the bencoded info dictionary
    pieces_root: bytes
    metainfo: bytes = field(repr=False)  # the bencoded torrent: info + piece layers
    # The v1 SHA-1 of each piece, concatenated (20 bytes a piece): what bytes from elsewhere
    # (an HTTP fallback) are checked against piece by piece.
    v1_pieces: bytes = field(default=b"", repr=False)

    @property
    def info_hash_v2_truncated(self) -> str:
        """The 20-byte form v2 peers announce with (BEP 52)."""
        return self.info_hash_v2[:40]

    def with_trackers(self, announce: list[str], url_list: list[str]) -> bytes:
        """The metainfo with trackers and BEP 19 web seeds added (outside `info`)."""
        meta = bencode.decode(self.metainfo)
        assert isinstance(meta, dict)
        if announce:
            meta[b"announce"] = announce[0].encode()
            meta[b"announce-list"] = [[url.encode()] for url in announce]
        if url_list:
            meta[b"url-list"] = [url.encode() for url in url_list]
        return bencode.encode(meta)


@dataclass(frozen=True)
class HashedFile:
    torrent: Torrent
    sha256: str


def _merkle_root(leaves: list[bytes], pad: bytes) -> bytes:
    """Root of a tree whose leaf count is padded to a power of two with `pad`."""
    width = 1 << max(0, (len(leaves) - 1).bit_length())
    level = leaves + [pad] * (width - len(leaves))
    while len(level) > 1:
        level = [hashlib.sha256(level[i] + level[i + 1]).digest() for i in range(0, len(level), 2)]
    return level[0]


def _zero_piece_hash(blocks_per_piece: int) -> bytes:
    return _merkle_root([_ZERO] * blocks_per_piece, _ZERO)


def hash_stream(stream: BinaryIO, name: str, size: int) -> HashedFile:
    """Builds the torrent of `size` bytes read from `stream`; fails if the size is wrong."""
    if "/" in name or name in {"", ".", ".."}:
        raise TorrentError(f"making a torrent: bad file name {name!r}")
    plen = piece_length_for(size)
    blocks_per_piece = plen // BLOCK
    whole = hashlib.sha256()
    v1_pieces: list[bytes] = []
    leaf_lists: list[list[bytes]] = []  # SHA-256 of each 16 KiB block, per piece
    remaining = size
    while remaining > 0:
        chunk = stream.read(min(plen, remaining))
        if not chunk:
            raise TorrentError(f"making a torrent of {name}: file is shorter than {size} bytes")
        while len(chunk) < min(plen, remaining):
            more = stream.read(min(plen, remaining) - len(chunk))
            if not more:
                raise TorrentError(f"making a torrent of {name}: file is shorter than {size} bytes")
            chunk += more
        remaining -= len(chunk)
        whole.update(chunk)
        v1_pieces.append(hashlib.sha1(chunk).digest())  # noqa: S324 - BEP 3 mandates SHA-1
        leaves = [
            hashlib.sha256(chunk[i : i + BLOCK]).digest() for i in range(0, len(chunk), BLOCK)
        ]
        leaf_lists.append(leaves)
    if stream.read(1):
        raise TorrentError(f"making a torrent of {name}: file is longer than {size} bytes")

    # BEP 52: a file of one piece or less has its root over its own blocks only;
    # larger files pad every piece to a full subtree and list the piece layer.
    if size == 0:
        pieces_root = b""
        layer = b""
    elif len(leaf_lists) == 1:
        pieces_root = _merkle_root(leaf_lists[0], _ZERO)
        layer = b""
    else:
        roots = [
            _merkle_root(leaves + [_ZERO] * (blocks_per_piece - len(leaves)), _ZERO)
            for leaves in leaf_lists
        ]
        pieces_root = _merkle_root(roots, _zero_piece_hash(blocks_per_piece))
        layer = b"".join(roots)

    file_entry: dict[bytes, bencode.Value] = {b"length": size}
    if size:
        file_entry[b"pieces root"] = pieces_root
    info: dict[bytes, bencode.Value] = {
        b"file tree": {name.encode(): {b"": file_entry}},
        b"length": size,
        b"meta version": 2,
        b"name": name.encode(),
        b"piece length": plen,
        b"pieces": b"".join(v1_pieces),
    }
    info_bytes = bencode.encode(info)
    meta: dict[bytes, bencode.Value] = {b"info": info}
    if layer:
        meta[b"piece layers"] = {pieces_root: layer}
    torrent = Torrent(
        name=name,
        size=size,
        piece_length=plen,
        info_hash_v1=hashlib.sha1(info_bytes).hexdigest(),  # noqa: S324 - BEP 3
        info_hash_v2=hashlib.sha256(info_bytes).hexdigest(),
        pieces_root=pieces_root,
        metainfo=bencode.encode(meta),
        v1_pieces=b"".join(v1_pieces),
    )
    return HashedFile(torrent, whole.hexdigest())


def make_torrent(path: Path, name: str | None = None) -> HashedFile:
    """The torrent of the file at `path`, named `name` (default: its basename)."""
    with path.open("rb") as stream:
        size = path.stat().st_size
        return hash_stream(stream, name or path.name, size)


def parse_torrent(metainfo: bytes) -> Torrent:
    """Checks a bencoded torrent is a single-file hybrid torrent and returns its identity.

    Raises TorrentError saying what is wrong. Trackers and announce lists outside
    `info` are allowed and ignored.
    """
    try:
        meta = bencode.decode(metainfo)
    except bencode.BencodeError as exc:
        raise TorrentError(f"torrent is not valid bencoding: {exc}") from None
    if not isinstance(meta, dict) or not isinstance(meta.get(b"info"), dict):
        raise TorrentError("torrent has no info dictionary")
    info = meta[b"info"]
    assert isinstance(info, dict)
    name, size, plen = info.get(b"name"), info.get(b"length"), info.get(b"piece length")
    if not isinstance(name, bytes) or not isinstance(size, int) or not isinstance(plen, int):
        raise TorrentError("torrent is not a single-file v1 torrent (name, length, piece length)")
    if size < 0 or plen < 16 * 1024 or plen & (plen - 1):
        raise TorrentError("torrent's length is negative or its piece length is not a power of 2")
    if info.get(b"meta version") != 2 or not isinstance(info.get(b"file tree"), dict):
        raise TorrentError("torrent is not hybrid: it has no v2 part (meta version, file tree)")
    pieces = info.get(b"pieces")
    if not isinstance(pieces, bytes) or len(pieces) != 20 * -(-size // plen):
        raise TorrentError("torrent's v1 pieces do not match its length and piece length")
    tree = info[b"file tree"]
    assert isinstance(tree, dict)
    node = tree.get(name)
    entry = node.get(b"") if isinstance(node, dict) else None
    if len(tree) != 1 or not isinstance(entry, dict) or entry.get(b"length") != size:
        raise TorrentError("torrent's v2 file tree is not the single file its v1 part names")
    root = entry.get(b"pieces root", b"")
    if not isinstance(root, bytes) or (size > 0 and len(root) != 32):
        raise TorrentError("torrent's v2 pieces root is missing or malformed")
    if size > plen:
        layers = meta.get(b"piece layers")
        layer = layers.get(root) if isinstance(layers, dict) else None
        if not isinstance(layer, bytes) or len(layer) != 32 * -(-size // plen):
            raise TorrentError("torrent's piece layers are missing or the wrong length")
    extra = set(info) - {
        b"file tree",
        b"length",
        b"meta version",
        b"name",
        b"piece length",
        b"pieces",
    }
    if extra:
        raise TorrentError(f"torrent's info has fields the identity rule forbids: {sorted(extra)}")
    info_bytes = bencode.encode(info)
    try:
        text_name = name.decode()
    except UnicodeDecodeError:
        raise TorrentError("torrent's name is not UTF-8") from None
    return Torrent(
        name=text_name,
        size=size,
        piece_length=plen,
        info_hash_v1=hashlib.sha1(info_bytes).hexdigest(),  # noqa: S324 - BEP 3
        info_hash_v2=hashlib.sha256(info_bytes).hexdigest(),
        pieces_root=root,
        metainfo=metainfo,
        v1_pieces=pieces,
    )
