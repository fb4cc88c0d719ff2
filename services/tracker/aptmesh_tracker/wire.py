"""The BitTorrent HTTP tracker protocol, pure: query strings in, dataclasses out, and back.

BEP 3 (announce), BEP 23 (compact peers), BEP 7 (`peers6`), BEP 48 (scrape),
BEP 21 (`event=paused`). No I/O here: the HTTP frontend hands over the raw
query string and writes the bytes this module returns; the benchmark's load
generator and the tests use the same functions from the client side.

Theory of operation. `info_hash` and `peer_id` are 20 arbitrary bytes,
percent-encoded; they are decoded straight to bytes, never through text. `+`
is taken literally (RFC 3986 queries have no "+ means space", and clients
percent-encode every byte outside the unreserved set). Every rule a client can
break raises `TrackerRequestError`, whose text is safe to send back in a
`failure reason` and whose `reason` is a bounded label for metrics. Integers
are bounded in digits before `int()` sees them, so no input is expensive.
"""

from __future__ import annotations

import codecs
import contextlib
import ipaddress
import socket
from dataclasses import dataclass
from typing import Literal, get_args
from urllib.parse import quote_from_bytes, unquote, unquote_to_bytes

from aptmesh import bencode

Event = Literal["none", "started", "completed", "stopped", "paused"]
EVENTS: tuple[Event, ...] = get_args(Event)

Reason = Literal[
    "too_large",
    "info_hash",
    "peer_id",
    "port",
    "number",
    "event",
    "compact",
    "missing",
    "untracked",
    "scrape",
    "http",
    "internal",
]
REASONS: tuple[Reason, ...] = get_args(Reason)

MAX_QUERY = 2048  # an announce is ~250 bytes; anything this long is not a real client
MAX_SCRAPE_QUERY = 8000  # aiohttp refuses request lines over 8190 bytes itself
MAX_SCRAPE_HASHES = 100
_MAX_DIGITS = 20  # 2**64 has 20 digits
_V4_MAPPED = bytes(10) + b"\xff\xff"

_EVENT_OF: dict[str, Event] = {
    "": "none",
    "started": "started",
    "completed": "completed",
    "stopped": "stopped",
    "paused": "paused",
}


class TrackerRequestError(ValueError):
    """The client's request is wrong. `str(self)` is safe to send in a `failure reason`."""

    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(message)
        self.reason: Reason = reason


class TrackerFailure(Exception):
    """A tracker answered with a `failure reason` (client side)."""


# The two records made per announce are not `frozen`: a frozen dataclass sets each field
# through object.__setattr__, which made their construction 4-5x slower (0.9 against 0.2
# us for AnnounceRequest), a tenth of the tracker's own time per announce. Treat them as
# values all the same: nothing changes one after it is made.
@dataclass(slots=True)
class AnnounceRequest:
    info_hash: bytes
    peer_id: bytes
    port: int
    left: int
    uploaded: int = 0
    downloaded: int = 0
    event: Event = "none"
    numwant: int | None = None  # None: the tracker's default
    compact: bool = True


@dataclass(frozen=True, slots=True)
class Peer:
    """A peer as a tracker hands it out: `address` is 6 (IPv4) or 18 (IPv6) compact bytes."""

    peer_id: bytes
    address: bytes


@dataclass(slots=True)  # not frozen: made per announce (see AnnounceRequest)
class AnnounceResponse:
    interval: int
    min_interval: int
    complete: int
    incomplete: int
    peers: tuple[Peer, ...]


@dataclass(frozen=True, slots=True)
class ScrapeRequest:
    info_hashes: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class ScrapeStats:
    complete: int
    incomplete: int
    downloaded: int


@dataclass(frozen=True, slots=True)
class ScrapeResponse:
    files: tuple[tuple[bytes, ScrapeStats], ...]


# --- addresses -----------------------------------------------------------------------------


def compact_address(ip: str, port: int) -> bytes:
    """BEP 23 / BEP 7 compact form; IPv4-mapped IPv6 addresses become IPv4."""
    if ":" in ip:
        packed = socket.inet_pton(socket.AF_INET6, ip.split("%", 1)[0])
        if packed.startswith(_V4_MAPPED):
            packed = packed[12:]
        return packed + port.to_bytes(2, "big")
    return socket.inet_aton(ip) + port.to_bytes(2, "big")


def normal_ip(ip: str) -> str:
    """One spelling per address (IPv4-mapped IPv6 as IPv4, no zone); '' if not an address."""
    if "." in ip and ":" not in ip:  # the common case, in C: dotted IPv4 already canonical
        with contextlib.suppress(OSError):
            if socket.inet_ntoa(socket.inet_aton(ip)) == ip:
                return ip
    try:
        parsed = ipaddress.ip_address(ip.split("%", 1)[0])
    except ValueError:
        return ""
    if isinstance(parsed, ipaddress.IPv6Address) and parsed.ipv4_mapped is not None:
        return str(parsed.ipv4_mapped)
    return str(parsed)


def grpc_peer_ip(peer: str) -> str:
    """The IP of a gRPC `context.peer()` ("ipv4:1.2.3.4:5", "ipv6:[::1]:5"); '' if none."""
    kind, _, rest = unquote(peer).partition(":")
    if kind not in ("ipv4", "ipv6"):
        return ""
    return normal_ip(rest.rsplit(":", 1)[0].strip("[]"))


def split_address(address: bytes) -> tuple[str, int]:
    if len(address) == 6:
        return socket.inet_ntoa(address[:4]), int.from_bytes(address[4:], "big")
    if len(address) == 18:
        return socket.inet_ntop(socket.AF_INET6, address[:16]), int.from_bytes(address[16:], "big")
    raise ValueError(f"compact address must be 6 or 18 bytes, not {len(address)}")


# --- parsing requests (server side) ----------------------------------------------------------


def _unquote(value: str) -> bytes:
    """`urllib.parse.unquote_to_bytes`, ~8x faster: `%XX` becomes `\\xXX` and one C call
    decodes the lot (every backslash of the input doubled first, so no other escape can
    form); a malformed `%` sequence takes urllib's path, which keeps it literally."""
    raw = value.encode()
    if b"%" not in raw:
        return raw
    try:
        decoded: bytes = codecs.escape_decode(raw.replace(b"\\", b"\\\\").replace(b"%", b"\\x"))[0]
    except ValueError:
        return unquote_to_bytes(raw)
    return decoded


def _hash20(value: str, name: Reason) -> bytes:
    raw = _unquote(value)
    if len(raw) != 20:
        raise TrackerRequestError(
            name, f"{name} must be 20 bytes (percent-encoded), got {len(raw)}"
        )
    return raw


def _uint(value: str, name: str) -> int:
    if not (value.isascii() and value.isdigit()):
        raise TrackerRequestError("number", f"{name} must be a non-negative integer")
    if len(value) > _MAX_DIGITS:
        raise TrackerRequestError("number", f"{name} is too large")
    return int(value)


def parse_announce(query: str) -> AnnounceRequest:
    """Parses the query string of `GET /announce?...` (without the `?`)."""
    if len(query) > MAX_QUERY:
        raise TrackerRequestError("too_large", "request too large")
    info_hash = peer_id = None
    port = left = None
    uploaded = downloaded = 0
    event: Event = "none"
    numwant: int | None = None
    compact = True
    for part in query.split("&"):
        key, _, value = part.partition("=")
        if key == "info_hash":
            if info_hash is not None:
                raise TrackerRequestError("info_hash", "announce takes exactly one info_hash")
            info_hash = _hash20(value, "info_hash")
        elif key == "peer_id":
            peer_id = _hash20(value, "peer_id")
        elif key == "port":
            port = _uint(value, "port")
            if not 1 <= port <= 65535:
                raise TrackerRequestError("port", "port must be between 1 and 65535")
        elif key == "left":
            left = _uint(value, "left")
        elif key == "uploaded":
            uploaded = _uint(value, "uploaded")
        elif key == "downloaded":
            downloaded = _uint(value, "downloaded")
        elif key == "event":
            found = _EVENT_OF.get(value)
            if found is None:
                raise TrackerRequestError(
                    "event", "event must be started, completed, stopped, paused or empty"
                )
            event = found
        elif key == "numwant":
            # A hint: absurdly large values are clamped by the tracker, not refused.
            if value.isascii() and value.isdigit() and len(value) > _MAX_DIGITS:
                numwant = 1 << 64
            else:
                numwant = _uint(value, "numwant")
        elif key == "compact":
            if value not in ("0", "1"):
                raise TrackerRequestError("compact", "compact must be 0 or 1")
            compact = value == "1"
    if info_hash is None:
        raise TrackerRequestError("missing", "info_hash is missing")
    if peer_id is None:
        raise TrackerRequestError("missing", "peer_id is missing")
    if port is None:
        raise TrackerRequestError("missing", "port is missing")
    if left is None:
        raise TrackerRequestError("missing", "left is missing")
    return AnnounceRequest(
        info_hash, peer_id, port, left, uploaded, downloaded, event, numwant, compact
    )


def parse_scrape(query: str) -> ScrapeRequest:
    """Parses the query string of `GET /scrape?info_hash=...&info_hash=...`."""
    if len(query) > MAX_SCRAPE_QUERY:
        raise TrackerRequestError(
            "too_large", f"request too large: scrape takes at most {MAX_SCRAPE_HASHES} info_hash"
        )
    hashes: list[bytes] = []
    for part in query.split("&"):
        key, _, value = part.partition("=")
        if key == "info_hash":
            hashes.append(_hash20(value, "info_hash"))
    if not hashes:
        raise TrackerRequestError("scrape", "scrape needs at least one info_hash")
    if len(hashes) > MAX_SCRAPE_HASHES:
        raise TrackerRequestError("scrape", f"scrape takes at most {MAX_SCRAPE_HASHES} info_hash")
    return ScrapeRequest(tuple(dict.fromkeys(hashes)))


# --- encoding responses (server side) --------------------------------------------------------


def encode_failure(message: str) -> bytes:
    return bencode.encode({b"failure reason": message.encode()})


def encode_announce(response: AnnounceResponse, compact: bool = True) -> bytes:
    if compact:
        return _encode_compact(response)
    head = b"d8:completei%de10:incompletei%de8:intervali%de12:min intervali%de" % (
        response.complete,
        response.incomplete,
        response.interval,
        response.min_interval,
    )
    peers: list[bencode.Value] = []
    for peer in response.peers:
        ip, port = split_address(peer.address)
        peers.append({b"ip": ip.encode(), b"peer id": peer.peer_id, b"port": port})
    return head + b"5:peers" + bencode.encode(peers) + b"e"


def _encode_compact(response: AnnounceResponse) -> bytes:
    """`encode_announce` of a compact answer in one format operation (the hot path)."""
    peers = response.peers
    v4 = b"".join([p.address for p in peers if len(p.address) == 6])
    v6 = b""
    if len(v4) != 6 * len(peers):
        v6 = b"".join([p.address for p in peers if len(p.address) == 18])
    return b"d8:completei%de10:incompletei%de8:intervali%de12:min intervali%de5:peers%d:%b%be" % (
        response.complete,
        response.incomplete,
        response.interval,
        response.min_interval,
        len(v4),
        v4,
        b"6:peers6%d:%b" % (len(v6), v6) if v6 else b"",
    )


def encode_scrape(response: ScrapeResponse) -> bytes:
    files: dict[bytes, bencode.Value] = {
        info_hash: {
            b"complete": stats.complete,
            b"downloaded": stats.downloaded,
            b"incomplete": stats.incomplete,
        }
        for info_hash, stats in response.files
    }
    return bencode.encode({b"files": files})


# --- the client side: requests out, responses in ---------------------------------------------


def encode_announce_request(request: AnnounceRequest) -> str:
    parts = [
        "info_hash=" + quote_from_bytes(request.info_hash, safe=""),
        "peer_id=" + quote_from_bytes(request.peer_id, safe=""),
        f"port={request.port}",
        f"uploaded={request.uploaded}",
        f"downloaded={request.downloaded}",
        f"left={request.left}",
        f"compact={int(request.compact)}",
    ]
    if request.event != "none":
        parts.append(f"event={request.event}")
    if request.numwant is not None:
        parts.append(f"numwant={request.numwant}")
    return "&".join(parts)


def encode_scrape_request(request: ScrapeRequest) -> str:
    return "&".join("info_hash=" + quote_from_bytes(h, safe="") for h in request.info_hashes)


def _dict(body: bytes) -> dict[bytes, bencode.Value]:
    try:
        value = bencode.decode(body)
    except bencode.BencodeError as exc:
        raise ValueError(f"tracker response is not bencoded: {exc}") from None
    if not isinstance(value, dict):
        raise ValueError("tracker response is not a dictionary")
    failure = value.get(b"failure reason")
    if isinstance(failure, bytes):
        raise TrackerFailure(failure.decode(errors="replace"))
    return value


def _int(value: bencode.Value | None) -> int:
    if not isinstance(value, int):
        raise ValueError("tracker response lacks an integer field")
    return value


def decode_announce_response(body: bytes) -> AnnounceResponse:
    """Raises TrackerFailure for a `failure reason`, ValueError for garbage."""
    value = _dict(body)
    peers: list[Peer] = []
    raw = value.get(b"peers", b"")
    if isinstance(raw, bytes):
        if len(raw) % 6:
            raise ValueError("compact peers are not a multiple of 6 bytes")
        peers += [Peer(b"", raw[i : i + 6]) for i in range(0, len(raw), 6)]
    elif isinstance(raw, list):
        for item in raw:
            if not isinstance(item, dict):
                raise ValueError("peer entry is not a dictionary")
            ip, port, peer_id = item.get(b"ip"), item.get(b"port"), item.get(b"peer id", b"")
            if not isinstance(ip, bytes) or not isinstance(port, int):
                raise ValueError("peer entry lacks ip or port")
            if not isinstance(peer_id, bytes):
                raise ValueError("peer id is not a string")
            peers.append(Peer(peer_id, compact_address(ip.decode(), port)))
    raw6 = value.get(b"peers6", b"")
    if not isinstance(raw6, bytes) or len(raw6) % 18:
        raise ValueError("peers6 is not a multiple of 18 bytes")
    peers += [Peer(b"", raw6[i : i + 18]) for i in range(0, len(raw6), 18)]
    return AnnounceResponse(
        interval=_int(value.get(b"interval")),
        min_interval=_int(value.get(b"min interval", 0)),
        complete=_int(value.get(b"complete", 0)),
        incomplete=_int(value.get(b"incomplete", 0)),
        peers=tuple(peers),
    )


def decode_scrape_response(body: bytes) -> ScrapeResponse:
    value = _dict(body)
    files = value.get(b"files")
    if not isinstance(files, dict):
        raise ValueError("scrape response has no files dictionary")
    out: list[tuple[bytes, ScrapeStats]] = []
    for info_hash, stats in files.items():
        if not isinstance(stats, dict):
            raise ValueError("scrape entry is not a dictionary")
        out.append(
            (
                info_hash,
                ScrapeStats(
                    _int(stats.get(b"complete")),
                    _int(stats.get(b"incomplete")),
                    _int(stats.get(b"downloaded")),
                ),
            )
        )
    return ScrapeResponse(tuple(out))
