"""Torrent identity: deterministic, the piece-size rule, libtorrent agrees, the checker refuses."""

from __future__ import annotations

import io
import os
from pathlib import Path

import libtorrent as lt
import pytest
from hypothesis import given
from hypothesis import strategies as st

from aptmesh import bencode
from aptmesh.torrent import (
    MAX_PIECE,
    MIN_PIECE,
    TorrentError,
    hash_stream,
    make_torrent,
    parse_torrent,
    piece_length_for,
)

SIZES = [1, 16383, 16384, 65536, 65537, 1_048_576, 1_500_000, 3 * 1024 * 1024 + 7]


@pytest.mark.parametrize(
    ("size", "expected"),
    [
        (0, MIN_PIECE),
        (1, MIN_PIECE),
        (64 * 1024 * 1024, 64 * 1024),
        (64 * 1024 * 1024 + 1, 128 * 1024),
        (200 * 1024 * 1024, 256 * 1024),
        (4 * 1024**3, MAX_PIECE),
        (40 * 1024**3, MAX_PIECE),
    ],
)
def test_piece_size_rule(size: int, expected: int) -> None:
    assert piece_length_for(size) == expected


@given(st.integers(min_value=0, max_value=1 << 44))
def test_piece_size_is_a_bounded_power_of_two(size: int) -> None:
    plen = piece_length_for(size)
    assert MIN_PIECE <= plen <= MAX_PIECE and plen & (plen - 1) == 0
    # At most about 1024 pieces until the 4 MiB cap.
    assert plen == MAX_PIECE or -(-size // plen) <= 1024


@pytest.mark.parametrize("size", SIZES)
def test_same_bytes_same_infohashes_and_libtorrent_agrees(tmp_path: Path, size: int) -> None:
    data = os.urandom(size)
    path = tmp_path / "pkg_1.2~rc1+dfsg-1_amd64.deb"
    path.write_bytes(data)
    first = make_torrent(path)
    second = hash_stream(io.BytesIO(data), path.name, size)
    assert first == second
    # An independent implementation (libtorrent) makes the same hybrid torrent.
    ct = lt.create_torrent(lt.list_files(str(path)), piece_length_for(size), 0)
    lt.set_piece_hashes(ct, str(tmp_path))
    theirs = lt.torrent_info(lt.bencode(ct.generate())).info_hashes()
    assert str(theirs.v1) == first.torrent.info_hash_v1
    assert str(theirs.v2) == first.torrent.info_hash_v2
    # libtorrent accepts ours, piece layers included.
    ours = lt.torrent_info(first.torrent.metainfo)
    assert ours.num_pieces() == -(-size // first.torrent.piece_length)
    assert parse_torrent(first.torrent.metainfo) == first.torrent


def test_trackers_and_web_seeds_stay_outside_info(tmp_path: Path) -> None:
    path = tmp_path / "a.deb"
    path.write_bytes(os.urandom(100_000))
    torrent = make_torrent(path).torrent
    meta = torrent.with_trackers(["http://127.0.0.1:6969/announce"], ["http://127.0.0.1/a.deb"])
    assert parse_torrent(meta).info_hash_v1 == torrent.info_hash_v1
    decoded = bencode.decode(meta)
    assert isinstance(decoded, dict) and decoded[b"url-list"] == [b"http://127.0.0.1/a.deb"]


def test_wrong_size_is_refused() -> None:
    with pytest.raises(TorrentError, match="shorter"):
        hash_stream(io.BytesIO(b"abc"), "x.deb", 4)
    with pytest.raises(TorrentError, match="longer"):
        hash_stream(io.BytesIO(b"abcde"), "x.deb", 4)
    with pytest.raises(TorrentError, match="bad file name"):
        hash_stream(io.BytesIO(b"abc"), "../x.deb", 3)


def _meta(tmp_path: Path, size: int = 200_000) -> dict[bytes, bencode.Value]:
    path = tmp_path / "p.deb"
    path.write_bytes(os.urandom(size))
    decoded = bencode.decode(make_torrent(path).torrent.metainfo)
    assert isinstance(decoded, dict)
    return decoded


def test_checker_refuses_v1_only(tmp_path: Path) -> None:
    meta = _meta(tmp_path)
    info = meta[b"info"]
    assert isinstance(info, dict)
    del info[b"meta version"], info[b"file tree"]
    with pytest.raises(TorrentError, match="not hybrid"):
        parse_torrent(bencode.encode(meta))


def test_checker_refuses_extra_info_fields(tmp_path: Path) -> None:
    meta = _meta(tmp_path)
    info = meta[b"info"]
    assert isinstance(info, dict)
    info[b"private"] = 1
    with pytest.raises(TorrentError, match="forbids"):
        parse_torrent(bencode.encode(meta))


def test_checker_refuses_missing_piece_layers(tmp_path: Path) -> None:
    meta = _meta(tmp_path)
    del meta[b"piece layers"]
    with pytest.raises(TorrentError, match="piece layers"):
        parse_torrent(bencode.encode(meta))


def test_checker_refuses_garbage() -> None:
    with pytest.raises(TorrentError, match="bencoding"):
        parse_torrent(b"d4:infoi1e")
    with pytest.raises(TorrentError, match="no info"):
        parse_torrent(b"de")
