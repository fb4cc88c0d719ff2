"""The announce/scrape protocol: literal transcripts, round trips, and what it refuses."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aptmesh import bencode
from aptmesh_tracker import wire
from aptmesh_tracker.wire import (
    AnnounceRequest,
    AnnounceResponse,
    Peer,
    ScrapeRequest,
    ScrapeResponse,
    ScrapeStats,
    TrackerRequestError,
)

IH = bytes(range(20))
PID = b"-LT2110-" + bytes(range(200, 212))
BASE = "info_hash=%00%01%02%03%04%05%06%07%08%09%0A%0B%0C%0D%0E%0F%10%11%12%13"
BASE += "&peer_id=-LT2110-%C8%C9%CA%CB%CC%CD%CE%CF%D0%D1%D2%D3"


def test_parses_a_libtorrent_style_announce() -> None:
    query = BASE + "&port=6881&uploaded=1&downloaded=2&left=3&corrupt=0&key=abc"
    query += "&event=started&numwant=200&compact=1&no_peer_id=1&supportcrypto=1&redundant=0"
    assert wire.parse_announce(query) == AnnounceRequest(
        IH, PID, 6881, 3, uploaded=1, downloaded=2, event="started", numwant=200, compact=True
    )


def test_bytes_that_are_not_utf8_and_literal_plus_survive() -> None:
    raw = b"+" + b"\xff" * 19
    query = "info_hash=+" + "%FF" * 19 + "&peer_id=" + "%fe" * 20 + "&port=1&left=0"
    parsed = wire.parse_announce(query)
    assert parsed.info_hash == raw
    assert parsed.peer_id == b"\xfe" * 20


def test_encodes_a_compact_response_exactly() -> None:
    response = AnnounceResponse(
        1800,
        60,
        complete=1,
        incomplete=2,
        peers=(
            Peer(b"x" * 20, wire.compact_address("10.0.0.1", 6881)),
            Peer(b"y" * 20, wire.compact_address("::1", 6882)),
        ),
    )
    body = wire.encode_announce(response)
    assert body == (
        b"d8:completei1e10:incompletei2e8:intervali1800e12:min intervali60e"
        b"5:peers6:\x0a\x00\x00\x01\x1a\xe1"
        b"6:peers618:" + b"\x00" * 15 + b"\x01\x1a\xe2" + b"e"
    )
    assert bencode.decode(body)  # canonical: keys sorted, decodes strictly


def test_ipv4_mapped_addresses_are_ipv4() -> None:
    assert wire.compact_address("::ffff:127.0.0.1", 80) == b"\x7f\x00\x00\x01\x00\x50"


@pytest.mark.parametrize(
    ("query", "reason", "text"),
    [
        ("peer_id=" + "a" * 20 + "&port=1&left=0", "missing", "info_hash is missing"),
        ("info_hash=" + "a" * 20 + "&port=1&left=0", "missing", "peer_id is missing"),
        ("info_hash=" + "a" * 20 + "&peer_id=" + "a" * 20 + "&left=0", "missing", "port"),
        ("info_hash=" + "a" * 20 + "&peer_id=" + "a" * 20 + "&port=1", "missing", "left"),
        ("info_hash=abc&peer_id=" + "a" * 20 + "&port=1&left=0", "info_hash", "got 3"),
        ("info_hash=" + "a" * 21 + "&peer_id=" + "a" * 20 + "&port=1&left=0", "info_hash", "21"),
        ("info_hash=" + "a" * 20 + "&peer_id=%zz&port=1&left=0", "peer_id", "20 bytes"),
        ("info_hash=" + "a" * 20 + "&peer_id=" + "a" * 20 + "&port=0&left=0", "port", "1 and"),
        ("info_hash=" + "a" * 20 + "&peer_id=" + "a" * 20 + "&port=65536&left=0", "port", ""),
        ("info_hash=" + "a" * 20 + "&peer_id=" + "a" * 20 + "&port=-1&left=0", "number", "port"),
        ("info_hash=" + "a" * 20 + "&peer_id=" + "a" * 20 + "&port=http&left=0", "number", ""),
        ("info_hash=" + "a" * 20 + "&peer_id=" + "a" * 20 + "&port=1&left=1e9", "number", "left"),
        (
            "info_hash=" + "a" * 20 + "&peer_id=" + "a" * 20 + "&port=1&left=" + "9" * 21,
            "number",
            "too large",
        ),
        ("info_hash=" + "a" * 20 + "&peer_id=" + "a" * 20 + "&port=\u0661&left=0", "number", ""),
        ("info_hash=" + "a" * 20 + "&peer_id=" + "a" * 20 + "&port=1&left=0&event=x", "event", ""),
        (
            "info_hash=" + "a" * 20 + "&peer_id=" + "a" * 20 + "&port=1&left=0&numwant=-5",
            "number",
            "numwant",
        ),
        (
            "info_hash=" + "a" * 20 + "&peer_id=" + "a" * 20 + "&port=1&left=0&compact=yes",
            "compact",
            "",
        ),
        (
            "info_hash="
            + "a" * 20
            + "&info_hash="
            + "b" * 20
            + "&peer_id="
            + "a" * 20
            + "&port=1&left=0",
            "info_hash",
            "exactly one",
        ),
        ("x=" + "y" * wire.MAX_QUERY, "too_large", "request too large"),
        ("", "missing", ""),
        ("&&&===&", "missing", ""),
    ],
)
def test_refuses_bad_announces_with_client_safe_text(query: str, reason: str, text: str) -> None:
    with pytest.raises(TrackerRequestError) as caught:
        wire.parse_announce(query)
    assert caught.value.reason == reason
    assert text in str(caught.value)
    assert caught.value.reason in wire.REASONS


def test_absurd_numwant_is_a_hint_not_an_error() -> None:
    query = BASE + "&port=1&left=0&numwant=" + "9" * 400
    assert (wire.parse_announce(query).numwant or 0) >= 2**63


def test_scrape_refusals() -> None:
    with pytest.raises(TrackerRequestError, match="at least one"):
        wire.parse_scrape("")
    with pytest.raises(TrackerRequestError, match="at most"):
        wire.parse_scrape("&".join(["info_hash=" + "a" * 20] * (wire.MAX_SCRAPE_HASHES + 1)))
    with pytest.raises(TrackerRequestError, match="20 bytes"):
        wire.parse_scrape("info_hash=short")


def test_failure_is_bencoded() -> None:
    assert wire.encode_failure("no") == b"d14:failure reason2:noe"
    with pytest.raises(wire.TrackerFailure, match="no"):
        wire.decode_announce_response(wire.encode_failure("no"))


hashes = st.binary(min_size=20, max_size=20)
requests = st.builds(
    AnnounceRequest,
    info_hash=hashes,
    peer_id=hashes,
    port=st.integers(1, 65535),
    left=st.integers(0, 2**64 - 1),
    uploaded=st.integers(0, 2**64 - 1),
    downloaded=st.integers(0, 2**64 - 1),
    event=st.sampled_from(wire.EVENTS),
    numwant=st.none() | st.integers(0, 10**6),
    compact=st.booleans(),
)
addresses = st.builds(wire.compact_address, st.ip_addresses().map(str), st.integers(0, 65535))
counts = st.integers(0, 2**31)


@given(requests)
def test_announce_request_round_trips(request: AnnounceRequest) -> None:
    assert wire.parse_announce(wire.encode_announce_request(request)) == request


@given(st.lists(hashes, min_size=1, max_size=wire.MAX_SCRAPE_HASHES, unique=True))
def test_scrape_request_round_trips(info_hashes: list[bytes]) -> None:
    request = ScrapeRequest(tuple(info_hashes))
    assert wire.parse_scrape(wire.encode_scrape_request(request)) == request


@given(
    counts,
    counts,
    counts,
    counts,
    st.lists(st.tuples(hashes, addresses), max_size=30),
    st.booleans(),
)
def test_announce_response_round_trips(
    interval: int,
    min_interval: int,
    complete: int,
    incomplete: int,
    peers: list[tuple[bytes, bytes]],
    compact: bool,
) -> None:
    sent = AnnounceResponse(
        interval, min_interval, complete, incomplete, tuple(Peer(p, a) for p, a in peers)
    )
    got = wire.decode_announce_response(wire.encode_announce(sent, compact))
    if compact:  # compact peers carry no peer id; IPv4 come before IPv6
        v4 = [p.address for p in sent.peers if len(p.address) == 6]
        v6 = [p.address for p in sent.peers if len(p.address) == 18]
        assert [p.address for p in got.peers] == v4 + v6
        assert got == AnnounceResponse(interval, min_interval, complete, incomplete, got.peers)
    else:
        assert got == sent


@given(st.dictionaries(hashes, st.builds(ScrapeStats, counts, counts, counts), max_size=20))
def test_scrape_response_round_trips(files: dict[bytes, ScrapeStats]) -> None:
    sent = ScrapeResponse(tuple(sorted(files.items())))
    assert wire.decode_scrape_response(wire.encode_scrape(sent)) == sent


@given(st.text(max_size=300) | st.binary(max_size=300).map(lambda b: b.decode("latin-1")))
def test_any_query_parses_or_is_refused_cleanly(query: str) -> None:
    for parse in (wire.parse_announce, wire.parse_scrape):
        try:
            parse(query)
        except TrackerRequestError as exc:
            assert exc.reason in wire.REASONS


def test_addresses_have_one_spelling() -> None:
    assert wire.normal_ip("::ffff:192.0.2.7") == "192.0.2.7"
    assert wire.normal_ip("2001:DB8::1%eth0") == "2001:db8::1"
    assert wire.normal_ip("not an address") == ""
    assert wire.grpc_peer_ip("ipv4:127.0.0.1:50000") == "127.0.0.1"
    assert wire.grpc_peer_ip("ipv6:[::1]:50000") == "::1"
    assert wire.grpc_peer_ip("ipv6:%5B::ffff:10.0.0.1%5D:5") == "10.0.0.1"
    assert wire.grpc_peer_ip("unix:/tmp/s") == ""
