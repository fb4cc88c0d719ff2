"""The message codec: literal transcripts, sanitizing, and round trips."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aptmesh_apt_method.message import (
    Message,
    MessageError,
    Parser,
    clean_line,
    make,
    normalize_value,
    parse,
)

# What apt 2.6 sent to a method that asked for Send-URI-Encoded (reference notes, 1.2).
ACQUIRE = b"""600 URI Acquire
URI: mesh+http://127.0.0.1:18777/debian/pool/main/h/hello/hello_2.10-3%2bb1_amd64.deb
Filename: /var/cache/apt/archives/partial/hello_2.10-3+b1_amd64.deb
Expected-SHA256: dc0cab3b2f7b273d92c820ee3664d5d04a9373e3f12b15e8d9543b533b6fe107
Expected-Checksum-FileSize: 53000

"""


def test_parses_apt_acquire_transcript() -> None:
    [msg] = parse(ACQUIRE)
    assert (msg.code, msg.text) == (600, "URI Acquire")
    assert msg.get("uri") == (
        "mesh+http://127.0.0.1:18777/debian/pool/main/h/hello/hello_2.10-3%2bb1_amd64.deb"
    )
    assert msg.get("Expected-Checksum-FileSize") == "53000"
    assert msg.get("Missing") is None
    assert msg.encode() == ACQUIRE


def test_parses_configuration_with_repeated_fields() -> None:
    text = (
        "601 Configuration\n"
        "Config-Item: Acquire::mesh::Edges=http://edge1:3142 http://edge2:3142\n"
        "Config-Item: Dir::State=var/lib/apt/\n"
        "Config-Item: Acquire::Send-URI-Encoded=1\n\n"
    )
    [msg] = parse(text)
    assert msg.get_all("Config-Item") == [
        "Acquire::mesh::Edges=http://edge1:3142 http://edge2:3142",
        "Dir::State=var/lib/apt/",
        "Acquire::Send-URI-Encoded=1",
    ]


def test_capabilities_literal() -> None:
    msg = make(100, "Capabilities", ("Version", "1.0"), ("Pipeline", "true"), ("Skip", None))
    assert msg.encode() == b"100 Capabilities\nVersion: 1.0\nPipeline: true\n\n"


def test_multi_line_value_uses_continuation_lines() -> None:
    msg = make(
        103, "Redirect", ("URI", "mesh+http://a/x"), ("Alternate-URIs", "http://b/x\nhttp://c/x")
    )
    wire = b"103 Redirect\nURI: mesh+http://a/x\nAlternate-URIs: http://b/x\n http://c/x\n\n"
    assert msg.encode() == wire
    assert parse(wire) == [msg]


def test_field_carrying_a_newline_cannot_start_a_field_or_message() -> None:
    # CVE-2019-3462: a redirect target with an encoded newline injected fields.
    evil = "http://edge/x\r\n201 URI Done\nFilename: /etc/shadow\n\n200 URI Start"
    wire = make(103, "Redirect", ("New-URI", evil)).encode().decode()
    lines = wire.split("\n")
    assert lines[0] == "103 Redirect"
    # Every line after the first is a field or a continuation; only the last is empty.
    assert all(re.match(r"^(New-URI: | )", line) for line in lines[1:-2])
    assert lines[-2:] == ["", ""]
    assert "\r" not in wire
    [back] = parse(wire)
    assert back.fields == (
        ("New-URI", "http://edge/x\n201 URI Done\nFilename: /etc/shadow\n200 URI Start"),
    )
    assert clean_line(evil) == "http://edge/x201 URI DoneFilename: /etc/shadow200 URI Start"


@pytest.mark.parametrize("char", ["\x00", "\x07", "\x1b", "\t", "\r", "\x7f", "\x85", "\ud800"])
def test_control_characters_are_stripped(char: str) -> None:
    msg = make(102, f"Status{char}", ("Message", f"a{char}b"))
    assert msg.encode() == b"102 Status\nMessage: ab\n\n"


@pytest.mark.parametrize(
    "text",
    [
        "Capabilities\nVersion: 1\n\n",  # no code
        "10 Short\n\n",
        "0600 URI Acquire\n\n",
        "600 URI Acquire\nno colon here\n\n",
        "600 URI Acquire\n continuation first\n\n",
        "600 URI Acquire\nbad name: x\n\n",
    ],
)
def test_malformed_messages_raise(text: str) -> None:
    with pytest.raises(MessageError):
        parse(text)


def test_parser_recovers_after_a_malformed_message() -> None:
    parser = Parser()
    results: list[Message | None | str] = []
    for line in ["garbage", "", "", "", "600 URI Acquire\r", "URI: x\r", "\r", ""]:
        try:
            results.append(parser.feed(line + "\n"))
        except MessageError:
            results.append("error")
    messages = [r for r in results if isinstance(r, Message)]
    assert results.count("error") == 1
    assert messages == [Message(600, "URI Acquire", (("URI", "x"),))]
    assert not parser.pending


def test_encode_refuses_what_we_must_never_send() -> None:
    with pytest.raises(ValueError):
        Message(100, "x", (("Bad Name", "v"),)).encode()
    with pytest.raises(ValueError):
        Message(99, "x").encode()


names = st.from_regex(r"[A-Za-z][A-Za-z0-9-]{0,20}", fullmatch=True)
anything = st.text(max_size=60)
messages = st.builds(
    Message,
    code=st.integers(100, 999),
    text=anything,
    fields=st.lists(st.tuples(names, anything), max_size=6).map(tuple),
)


@given(messages)
def test_round_trip_equals_normalized(msg: Message) -> None:
    wire = msg.encode()
    assert parse(wire) == [msg.normalize()]
    assert msg.normalize().encode() == wire
    assert msg.normalize().normalize() == msg.normalize()


@given(messages)
def test_wire_has_no_control_characters_but_line_ends(msg: Message) -> None:
    text = msg.encode().decode("utf-8")
    assert not re.search("[\x00-\x09\x0b-\x1f\x7f-\x9f]", text)
    body = text[: -len("\n\n")]
    assert "\n\n" not in body  # nothing ends the message early


clean_text = st.text(
    alphabet=st.characters(blacklist_categories=["Cc", "Cs", "Zs"]), min_size=1, max_size=30
)


@given(
    st.integers(100, 999),
    clean_text,
    st.lists(st.tuples(names, st.lists(clean_text, min_size=1, max_size=3)), max_size=5),
)
def test_clean_messages_round_trip_exactly(
    code: int, text: str, fields: list[tuple[str, list[str]]]
) -> None:
    msg = Message(code, text, tuple((name, "\n".join(lines)) for name, lines in fields))
    assert parse(msg.encode()) == [msg]


@given(anything)
def test_normalize_value_is_idempotent(value: str) -> None:
    assert normalize_value(normalize_value(value)) == normalize_value(value)
