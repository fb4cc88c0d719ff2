"""The integrity gate alone (checked.py): what may be released of a file's bytes, and when."""

from __future__ import annotations

import hashlib

import pytest

from aptmesh.debian import FileHash
from aptmesh_edge.checked import PIECE_DIGEST, CheckedBytes, DownloadFailed, Failure, Pieces

PIECE = 1024
DATA = bytes(range(256)) * 16  # 4 pieces
EXPECTED = FileHash(len(DATA), hashlib.sha256(DATA).hexdigest())


def pieces_of(data: bytes) -> Pieces:
    digests = b"".join(
        hashlib.sha1(data[i : i + PIECE], usedforsecurity=False).digest()
        for i in range(0, len(data), PIECE)
    )
    assert len(digests) == PIECE_DIGEST * 4
    return Pieces(PIECE, digests)


def test_a_small_file_is_released_only_once_verified_whole() -> None:
    check = CheckedBytes("f", EXPECTED, memory_max=len(DATA))
    check.update(DATA[:-1])
    assert check.releasable(check.received) == 0
    assert check.releasable(check.received, relay=True) == len(DATA) - 2  # an edge checks itself
    check.update(DATA[-1:])
    assert check.releasable(check.received) == 0
    assert check.finish() == EXPECTED.sha256
    assert check.releasable(check.received) == len(DATA)


def test_a_large_file_without_its_torrent_holds_back_its_tail() -> None:
    check = CheckedBytes("f", EXPECTED, memory_max=0)
    check.update(DATA)
    assert check.releasable(check.received) == len(DATA) - 1


def test_with_its_torrent_only_matching_pieces_are_released() -> None:
    check = CheckedBytes("f", EXPECTED, memory_max=0)
    check.know_pieces(pieces_of(DATA))
    check.update(DATA[: PIECE + 100])
    assert check.releasable(check.received) == PIECE  # the second piece is not whole yet
    check.update(DATA[PIECE + 100 : 3 * PIECE])
    assert check.releasable(check.received) == 3 * PIECE - 1  # never the last byte received
    check.update(DATA[3 * PIECE :])
    assert check.releasable(check.received) == len(DATA) - 1  # the tail waits for finish
    check.finish()
    assert check.releasable(check.received) == len(DATA)


def test_a_wrong_piece_is_refused_before_any_byte_of_it_is_released() -> None:
    bad = DATA[: 2 * PIECE + 5] + bytes([DATA[2 * PIECE + 5] ^ 1]) + DATA[2 * PIECE + 6 :]
    check = CheckedBytes("f", EXPECTED, memory_max=0)
    check.know_pieces(pieces_of(DATA))
    check.update(bad[: 2 * PIECE + 500])
    assert check.releasable(check.received) == 2 * PIECE
    with pytest.raises(DownloadFailed) as refused:
        check.update(bad[2 * PIECE + 500 :])
    assert refused.value.failure is Failure.PIECE
    assert check.releasable(check.received) == 0
    check.reset()  # another source starts the file again: checked from its first byte
    check.update(DATA)
    assert check.finish() == EXPECTED.sha256


def test_a_piece_the_swarm_verified_is_not_hashed_again_and_the_file_still_is() -> None:
    other = bytes(PIECE)  # not piece 1 of DATA: libtorrent's word is taken for it
    check = CheckedBytes("f", EXPECTED, memory_max=0)
    check.know_pieces(pieces_of(DATA))
    check.update(DATA[:PIECE], verified_piece=True)
    check.update(other, verified_piece=True)
    assert check.releasable(check.received) == 2 * PIECE - 1
    check.update(DATA[2 * PIECE :], verified_piece=True)
    with pytest.raises(DownloadFailed) as refused:  # the index's SHA-256 still decides
        check.finish()
    assert refused.value.failure is Failure.SHA256
    assert check.releasable(check.received) == 0


def test_a_verified_piece_whose_start_another_source_wrote_is_hashed() -> None:
    check = CheckedBytes("f", EXPECTED, memory_max=0)
    check.know_pieces(pieces_of(DATA))
    check.update(DATA[:100])  # a fallback's bytes
    with pytest.raises(DownloadFailed) as refused:
        check.update(bytes(PIECE - 100), verified_piece=True)
    assert refused.value.failure is Failure.PIECE


@pytest.mark.parametrize(
    ("data", "failure"),
    [(DATA[:-1], Failure.SIZE), (DATA + b"x", Failure.SIZE), (b"x" + DATA[1:], Failure.SHA256)],
)
def test_the_whole_file_is_checked_against_the_index(data: bytes, failure: Failure) -> None:
    check = CheckedBytes("f", EXPECTED, memory_max=0)
    with pytest.raises(DownloadFailed) as refused:
        check.update(data)
        check.finish()
    assert refused.value.failure is failure
    assert check.releasable(check.received) == 0
