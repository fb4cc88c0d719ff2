"""Fuzz targets for the apt method's untrusted inputs: apt's messages, edge listings and
edges' HTTP answers.

Bounded (the `default` profile) in `make test`, deep in `make fuzz`.
"""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aptmesh_apt_method.config import MAX_EDGES, MeshConfig
from aptmesh_apt_method.edges import ListingError, decode_cache, parse_listing
from aptmesh_apt_method.httpclient import HttpError, Response
from aptmesh_apt_method.message import Message, MessageError, Parser, parse
from aptmesh_apt_method.method import Method

pytestmark = pytest.mark.fuzz

FIELD_NAMES = st.sampled_from(
    ["URI", "Filename", "Config-Item", "Last-Modified", "Expected-SHA256", "Maximum-Size", "X"]
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=30,
)


@given(st.binary(max_size=2000))
def test_parser_takes_any_bytes(data: bytes) -> None:
    parser = Parser()
    for line in data.split(b"\n"):
        try:
            message = parser.feed(line + b"\n")
        except MessageError:
            continue
        if message is not None:
            assert 100 <= message.code <= 999
            assert parse(message.encode()) == [message.normalize()]


@given(
    st.integers(100, 999),
    st.text(max_size=30),
    st.lists(st.tuples(FIELD_NAMES, st.text(max_size=80)), max_size=6),
)
def test_encode_parse_round_trip(code: int, text: str, fields: list[tuple[str, str]]) -> None:
    message = Message(code, text, tuple(fields))
    assert parse(message.encode()) == [message.normalize()]


def edges_of(urls: list[str]) -> Callable[[MeshConfig, Callable[[str], None]], list[str]]:
    return lambda config, log: list(urls)


@given(
    st.lists(
        st.tuples(
            st.sampled_from([600, 601, 602, 777]),
            st.lists(st.tuples(FIELD_NAMES, st.text(max_size=60)), max_size=5),
        ),
        max_size=5,
    )
)
def test_method_answers_any_messages_with_well_formed_ones(
    messages: list[tuple[int, list[tuple[str, str]]]],
) -> None:
    method = Method("mesh+http", edges_of(["http://e1:3142"]), stderr=lambda _: None)
    method.handle(
        Message(601, "Configuration", (("Config-Item", "Acquire::mesh::Delivery=redirect"),))
    )
    for code, fields in messages:
        for reply in method.handle(Message(code, "Anything", tuple(fields))):
            assert reply.code in (101, 103, 104, 400)
            [again] = parse(reply.encode())
            assert again == reply.normalize()
            assert "\n" not in (reply.get("URI") or "") and "\n" not in (reply.get("New-URI") or "")


@given(st.binary(max_size=3000))
def test_listing_parser_takes_any_bytes(body: bytes) -> None:
    try:
        edges = parse_listing(body)
    except ListingError:
        return
    assert len(edges) <= MAX_EDGES


@given(json_values)
def test_listing_parser_takes_any_json(document: object) -> None:
    body = json.dumps({"edges": document} if isinstance(document, list) else document).encode()
    try:
        edges = parse_listing(body)
    except ListingError:
        return
    assert len({e.url for e in edges}) == len(edges) <= MAX_EDGES
    for edge in edges:
        assert edge.url.startswith(("http://", "https://")) and "\n" not in edge.url


@given(st.text(max_size=3000) | json_values.map(json.dumps))
def test_cache_decoder_takes_any_text(text: str) -> None:
    decode_cache(text)  # None or an entry: never an exception


HTTP_PIECES = st.sampled_from(
    [
        b"HTTP/1.1 200 OK\r\n",
        b"HTTP/1.0 304 x\r\n",
        b"HTTP/1.1 100 Continue\r\n\r\n",
        b"Transfer-Encoding: chunked\r\n",
        b"Content-Length: 5\r\n",
        b"Connection: close\r\n",
        b"\r\n",
        b"5\r\nabcde\r\n",
        b"0\r\n\r\n",
        b"ffffffffffffffff\r\n",
    ]
)


@given(st.lists(HTTP_PIECES | st.binary(max_size=20), max_size=12), st.integers(1, 9))
def test_http_answers_of_any_shape_give_bytes_or_http_error(pieces: list[bytes], step: int) -> None:
    stream = io.BufferedReader(io.BytesIO(b"".join(pieces)))
    for _ in range(3):  # kept alive: each answer leaves the stream at the next one
        with contextlib.suppress(HttpError):
            response = Response(stream)
            while response.read(step):
                pass
            if response.will_close:
                return
            continue
        return
