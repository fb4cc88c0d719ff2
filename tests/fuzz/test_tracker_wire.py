"""Fuzz targets for the tracker's pure parsers: bencode, announce and scrape queries.

Each accepts its input or refuses it with its own error type (whose text is safe to
send back); nothing else may escape, and nothing may cost more than the input's size.
"""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from aptmesh import bencode
from aptmesh.torrent import TorrentError, parse_torrent
from aptmesh_tracker import wire

pytestmark = pytest.mark.fuzz

# Bytes that look like bencoding more often than random bytes do.
bencodish = st.lists(
    st.sampled_from([b"i", b"e", b"l", b"d", b":", b"-", b"0", b"1", b"9", b"4:spam", b"x"])
    | st.binary(max_size=8),
    max_size=40,
).map(b"".join)


@given(st.binary(max_size=300) | bencodish)
@example(b"i" + b"9" * 100_000 + b"e")
@example(b"l" * 10_000)
@example(b"9" * 5000 + b":")
def test_bencode_decodes_or_refuses(data: bytes) -> None:
    try:
        value = bencode.decode(data)
    except bencode.BencodeError:
        return
    assert bencode.encode(value) == data  # canonical: what decodes re-encodes to itself


@given(st.binary(max_size=400) | bencodish)
@example(b"d4:infod6:lengthi" + b"9" * 100_000 + b"eee")
@example(b"d4:infod6:lengthi10e4:name1:x12:piece lengthi0e6:pieces0:ee")
def test_torrents_parse_or_refuse(data: bytes) -> None:
    with contextlib.suppress(TorrentError):
        parse_torrent(data)


keys = st.sampled_from(
    ["info_hash", "peer_id", "port", "left", "uploaded", "downloaded", "event", "numwant"]
    + ["compact", "key", "", "=", "%"]
)
values = st.text(max_size=70) | st.sampled_from(["", "0", "1", "65536", "%", "%zz", "9" * 30])
queries = st.lists(st.tuples(keys, values), max_size=12).map(
    lambda pairs: "&".join(f"{k}={v}" for k, v in pairs)
)


@given(queries | st.text(max_size=3000))
@example("info_hash=" + "%41" * 20 + "&peer_id=" + "a" * 20 + "&port=1&left=" + "9" * 10**4)
def test_announce_queries_parse_or_refuse(query: str) -> None:
    try:
        request = wire.parse_announce(query)
    except wire.TrackerRequestError as exc:
        assert exc.reason in wire.REASONS
        assert len(str(exc)) < 200
        return
    assert len(request.info_hash) == len(request.peer_id) == 20
    assert 1 <= request.port <= 65535


@given(queries | st.text(max_size=9000))
@example("&".join(["info_hash=" + "%41" * 20] * 1000))
def test_scrape_queries_parse_or_refuse(query: str) -> None:
    try:
        request = wire.parse_scrape(query)
    except wire.TrackerRequestError as exc:
        assert exc.reason in wire.REASONS
        return
    assert 1 <= len(request.info_hashes) <= wire.MAX_SCRAPE_HASHES
