"""Bencoding (BEP 3): pure encode and decode, strict about what it accepts.

Decoding rejects what a canonical encoder never writes (leading zeros, `-0`,
unsorted or duplicate dictionary keys, trailing bytes), so the bytes of an
info dictionary decoded here re-encode to themselves and infohashes are stable.
"""

from __future__ import annotations

from typing import TypeAlias

Value: TypeAlias = int | bytes | list["Value"] | dict[bytes, "Value"]


# Most digits of an integer or a string length: 2**64 has 20; no real torrent or tracker
# answer needs more, and a longer run of digits is refused before int() costs anything.
MAX_DIGITS = 32


class BencodeError(ValueError):
    """The input is not canonical bencoding; the text says where."""


def encode(value: Value) -> bytes:
    out: list[bytes] = []
    _encode(value, out)
    return b"".join(out)


def _encode(value: Value, out: list[bytes]) -> None:
    if isinstance(value, bool):
        raise TypeError("bencode has no booleans")
    if isinstance(value, int):
        out.append(b"i%de" % value)
    elif isinstance(value, bytes):
        out.append(b"%d:" % len(value))
        out.append(value)
    elif isinstance(value, list):
        out.append(b"l")
        for item in value:
            _encode(item, out)
        out.append(b"e")
    elif isinstance(value, dict):
        out.append(b"d")
        for key in sorted(value):
            if not isinstance(key, bytes):
                raise TypeError("bencode dictionary keys must be bytes")
            _encode(key, out)
            _encode(value[key], out)
        out.append(b"e")
    else:
        raise TypeError(f"cannot bencode {type(value).__name__}")


def decode(data: bytes, *, max_depth: int = 64) -> Value:
    value, end = _decode(data, 0, max_depth)
    if end != len(data):
        raise BencodeError(f"trailing data at offset {end}")
    return value


def decode_prefix(data: bytes, start: int) -> tuple[Value, int]:
    """Decodes one value at `start`; returns it and the offset after it."""
    return _decode(data, start, 64)


def _decode(data: bytes, i: int, depth: int) -> tuple[Value, int]:
    if depth < 0:
        raise BencodeError("nesting too deep")
    if i >= len(data):
        raise BencodeError("unexpected end of data")
    lead = data[i : i + 1]
    if lead == b"i":
        end = data.find(b"e", i, i + MAX_DIGITS + 3)  # bounded: no quadratic scans
        if end < 0:
            raise BencodeError(f"unterminated or too long integer at offset {i}")
        digits = data[i + 1 : end]
        if not _canonical_int(digits):
            raise BencodeError(f"bad integer {digits[:20]!r} at offset {i}")
        return int(digits), end + 1
    if lead == b"l":
        items: list[Value] = []
        i += 1
        while data[i : i + 1] != b"e":
            item, i = _decode(data, i, depth - 1)
            items.append(item)
        return items, i + 1
    if lead == b"d":
        result: dict[bytes, Value] = {}
        previous: bytes | None = None
        i += 1
        while data[i : i + 1] != b"e":
            key, i = _decode(data, i, depth - 1)
            if not isinstance(key, bytes):
                raise BencodeError(f"dictionary key is not a string at offset {i}")
            if previous is not None and key <= previous:
                raise BencodeError(f"dictionary keys unsorted or repeated at {key[:40]!r}")
            result[key], i = _decode(data, i, depth - 1)
            previous = key
        return result, i + 1
    if lead.isdigit():
        colon = data.find(b":", i, i + MAX_DIGITS + 1)
        if colon < 0 or not _canonical_int(data[i:colon]) or data[i:colon].startswith(b"-"):
            raise BencodeError(f"bad string length at offset {i}")
        length = int(data[i:colon])
        end = colon + 1 + length
        if end > len(data):
            raise BencodeError(f"string at offset {i} runs past the end")
        return data[colon + 1 : end], end
    raise BencodeError(f"unexpected byte {lead!r} at offset {i}")


def _canonical_int(digits: bytes) -> bool:
    if not digits or digits in (b"-", b"-0"):
        return False
    body = digits[1:] if digits.startswith(b"-") else digits
    if len(body) > MAX_DIGITS:
        return False
    return body.isdigit() and not (len(body) > 1 and body.startswith(b"0"))
