"""A small HTTP/1.1 client for GETs from the edges: what the method needs, nothing more.

Why not http.client: importing it (and the email package it parses headers
with) is most of the method's start-up, which apt pays once per run, for
every run. This client is a socket and a buffered reader.

Contract. `Connection` sends one GET at a time on one kept-alive connection
(TLS for https, through ssl, imported only then). `Response.read(n)` returns
at most n body bytes and b"" at the end of the body; the body is framed by
`Transfer-Encoding: chunked`, else `Content-Length`, else the end of the
connection, and 1xx, 204 and 304 answers have none. A malformed or
truncated answer raises `HttpError`; socket trouble (refused, reset,
timeout) raises OSError as the socket does. The connection may carry the
next request only when `will_close` is false and the body was read to its
end. Limits keep a hostile peer from making us buffer: a status or header
line of at most MAX_LINE bytes, at most MAX_HEADERS headers.
"""

from __future__ import annotations

import io
import socket

MAX_LINE = 8192
MAX_HEADERS = 128
MAX_CHUNK_LINE = 1024
MAX_INTERIM = 8
NO_BODY = frozenset({204, 304})
READ_BUFFER = 1 << 16
_HEX = b"0123456789abcdefABCDEF"


class HttpError(Exception):
    """The peer's answer is not HTTP/1.x we can frame (or it stopped mid-answer)."""


def _line(stream: io.BufferedIOBase, limit: int, what: str) -> bytes:
    line = stream.readline(limit + 1)
    if len(line) > limit:
        raise HttpError(f"{what} longer than {limit} bytes")
    if not line.endswith(b"\n"):
        raise HttpError(f"connection closed in the {what}")
    return line


def parse_status_line(line: bytes) -> tuple[int, int]:
    """(minor version, status) of `HTTP/1.x NNN reason`."""
    version, _, rest = line.rstrip(b"\r\n").partition(b" ")
    code = rest[:3]
    if version not in (b"HTTP/1.0", b"HTTP/1.1") or len(code) != 3 or not code.isdigit():
        raise HttpError(f"not an HTTP/1.x status line: {line[:80]!r}")
    if rest[3:4] not in (b"", b" "):
        raise HttpError(f"not an HTTP/1.x status line: {line[:80]!r}")
    return version[-1] - ord("0"), int(code)


def parse_header_line(line: bytes) -> tuple[str, str]:
    """(lower-case name, value) of `Name: value`."""
    name, colon, value = line.partition(b":")
    if not colon or not name or name != name.strip() or b" " in name or b"\t" in name:
        raise HttpError(f"malformed header line: {line[:80]!r}")
    return name.decode("latin-1").lower(), value.strip().decode("latin-1")


class Response:
    """One answer's status, headers and body; read the body to its end to reuse the connection."""

    def __init__(self, stream: io.BufferedIOBase, *, head: bool = False) -> None:
        self._stream = stream
        for _ in range(MAX_INTERIM + 1):  # 1xx answers (100 Continue) come before the real one
            minor, self.status = parse_status_line(_line(stream, MAX_LINE, "status line"))
            self.headers = self._read_headers()
            if not 100 <= self.status < 200:
                break
        else:
            raise HttpError(f"more than {MAX_INTERIM} interim (1xx) answers")
        connection = self.headers.get("connection", "").lower()
        self.will_close = "close" in connection or (minor == 0 and "keep-alive" not in connection)
        self._chunked = False
        self._left: int | None = None  # body bytes to come (chunked: in this chunk)
        self._done = False
        encoding = self.headers.get("transfer-encoding")
        length = self.headers.get("content-length")
        if head or self.status in NO_BODY:
            self._done = True
        elif encoding is not None:
            if encoding.lower().rsplit(",", 1)[-1].strip() != "chunked":
                raise HttpError(f"unsupported Transfer-Encoding: {encoding}")
            self._chunked, self._left = True, 0
            if length is not None:  # both framings: a smuggling shape, never reuse
                self.will_close = True
        elif length is not None:
            if not length.isdigit() or not length.isascii():
                raise HttpError(f"bad Content-Length: {length!r}")
            self._left = int(length)
            self._done = self._left == 0
        else:
            self.will_close = True  # the body ends with the connection

    def _read_headers(self) -> dict[str, str]:
        headers: dict[str, str] = {}
        for _ in range(MAX_HEADERS + 1):
            line = _line(self._stream, MAX_LINE, "headers")
            if line in (b"\r\n", b"\n"):
                return headers
            name, value = parse_header_line(line)
            if name in headers and name == "content-length":
                if headers[name] != value:
                    raise HttpError("conflicting Content-Length headers")
                continue  # the same length twice is one length
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        raise HttpError(f"more than {MAX_HEADERS} headers")

    def getheader(self, name: str) -> str | None:
        return self.headers.get(name.lower())

    @property
    def complete(self) -> bool:
        """The whole body has been read."""
        return self._done

    def read(self, amount: int | None = None) -> bytes:
        """At most `amount` body bytes (all that is left without it); b"" at the end."""
        if amount is None:
            parts = []
            while chunk := self.read(READ_BUFFER):
                parts.append(chunk)
            return b"".join(parts)
        if self._done or amount <= 0:
            return b""
        if self._chunked:
            return self._read_chunked(amount)
        if self._left is None:  # to the end of the connection
            data = self._stream.read1(amount)
            self._done = not data
            return bytes(data)
        data = self._stream.read(min(amount, self._left))
        if not data:
            raise HttpError(f"connection closed with {self._left} body bytes to come")
        self._left -= len(data)
        self._done = self._left == 0
        return data

    def _read_chunked(self, amount: int) -> bytes:
        assert self._left is not None
        if self._left == 0:
            size_line = _line(self._stream, MAX_CHUNK_LINE, "chunk size")
            digits = size_line.split(b";", 1)[0].strip()
            if not digits or len(digits) > 16 or digits.strip(_HEX):
                raise HttpError(f"bad chunk size: {size_line[:40]!r}")
            self._left = int(digits, 16)
            if self._left == 0:  # the last chunk: trailers, then the blank line
                self._read_headers()
                self._done = True
                return b""
        data = self._stream.read(min(amount, self._left))
        if not data:
            raise HttpError("connection closed inside a chunk")
        self._left -= len(data)
        if self._left == 0 and _line(self._stream, 2, "chunk end") not in (b"\r\n", b"\n"):
            raise HttpError("chunk not followed by CRLF")
        return data


class Connection:
    """One kept-alive connection to `scheme://host:port`; opened on the first request."""

    def __init__(
        self, scheme: str, host: str, port: int, connect_timeout: float, read_timeout: float
    ) -> None:
        if scheme not in ("http", "https"):
            raise ValueError(f"unsupported scheme {scheme!r}")
        self.scheme, self.host, self.port = scheme, host, port
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
        self._sock: socket.socket | None = None
        self._stream: io.BufferedIOBase | None = None
        default = 443 if scheme == "https" else 80
        name = f"[{host}]" if ":" in host else host
        self._host_header = name if port == default else f"{name}:{port}"

    @classmethod
    def for_url(cls, url: str, connect_timeout: float, read_timeout: float) -> Connection:
        from urllib.parse import urlsplit

        parts = urlsplit(url)
        if not parts.hostname:
            raise ValueError(f"no host in {url!r}")
        port = parts.port or (443 if parts.scheme == "https" else 80)
        return cls(parts.scheme, parts.hostname, port, connect_timeout, read_timeout)

    @property
    def connected(self) -> bool:
        return self._sock is not None

    def connect(self) -> None:
        sock = socket.create_connection((self.host, self.port), timeout=self._connect_timeout)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self.scheme == "https":
                import ssl  # only for https edges: it is slow to import

                sock = ssl.create_default_context().wrap_socket(sock, server_hostname=self.host)
            sock.settimeout(self._read_timeout)
        except BaseException:
            sock.close()
            raise
        self._sock = sock
        self._stream = io.BufferedReader(socket.SocketIO(sock, "rb"), READ_BUFFER)

    def get(self, path: str, headers: dict[str, str] | None = None) -> Response:
        """Sends `GET path` and reads the answer's head."""
        if any(c in path for c in " \r\n") or not path.startswith("/"):
            raise ValueError(f"not a request target: {path!r}")
        lines = [f"GET {path} HTTP/1.1", f"Host: {self._host_header}", "Accept-Encoding: identity"]
        for name, value in (headers or {}).items():
            if any(c in name + value for c in "\r\n"):
                raise ValueError(f"header {name!r} has a line break")
            lines.append(f"{name}: {value}")
        request = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        if self._sock is None:
            self.connect()
        assert self._sock is not None and self._stream is not None
        self._sock.sendall(request)
        return Response(self._stream)

    def close(self) -> None:
        if self._stream is not None:
            self._stream.close()
            self._stream = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None
