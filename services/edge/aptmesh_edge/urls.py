"""Request targets: apt-cacher-ng's three URL forms, mapped onto configured upstreams.

Pure: text in, values out. The HTTP layer hands over the raw request target
and gets either a `Resource` (which upstream, which path, the cache key) or an
`UrlError` whose status and text are safe to send to the client.

The three forms (apt-cacher-ng's manual):
- forward proxy, absolute-form: `GET http://HOST[:PORT]/path`;
- path prefix: `GET /HOST[:PORT]/path`;
- HTTPS upstream through plain HTTP: `GET /HTTPS///HOST[:PORT]/path`.

Only hosts named in `upstreams`, or matching a pattern of `allowed_hosts`
(`*.example.org`: any name under example.org; `HOST:PORT`: that port only,
else the scheme's default port), are served, and `CONNECT` tunnels only to
allowed hosts on 443 or the port their pattern names: never an open proxy. The cache
key holds the scheme's host AND port, so two origins with the same paths
never share entries. A path is decoded once (`%xx`, `+` stays `+`) and then
refused if it holds `..` segments, empty segments, NUL or backslashes (`.`
segments, which flat repositories' URLs hold, are dropped): what reaches the
cache is a clean relative path under one upstream.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from aptmesh.debian import FileClass, classify_path

DEFAULT_PORTS = {"http": 80, "https": 443}
_HOST_RE = re.compile(r"^[a-z0-9]([a-z0-9.-]*[a-z0-9])?$|^\[[0-9a-f:.]+\]$")


class UpstreamError(ValueError):
    """An `upstreams` entry is malformed (a configuration error)."""


class UrlError(Exception):
    """A request target is refused; `status` and the text are safe to send back."""

    def __init__(self, status: int, text: str) -> None:
        super().__init__(text)
        self.status = status
        self.text = text


@dataclass(frozen=True)
class Origin:
    """One upstream as clients name it: scheme, host and port."""

    scheme: str
    host: str
    port: int

    @property
    def key(self) -> str:
        """The cache namespace: `host_port` (no characters a file name cannot hold)."""
        host = self.host.strip("[]").replace(":", "_")
        return f"{self.scheme}_{host}_{self.port}"

    @property
    def authority(self) -> str:
        if self.port == DEFAULT_PORTS[self.scheme]:
            return self.host
        return f"{self.host}:{self.port}"


@dataclass(frozen=True)
class Resource:
    origin: Origin
    path: str  # decoded, relative, no leading slash: "debian/dists/bookworm/InRelease"
    backends: tuple[str, ...]  # base URLs, tried in order
    # Served because an allowed_hosts pattern matches, not a configured upstream: what the
    # edge cannot verify there (a key it lacks) is passed through, never refused.
    by_pattern: bool = False

    @property
    def key(self) -> str:
        """Cache key: origin key / path; safe as a relative file path."""
        return f"{self.origin.key}/{self.path}"

    @property
    def file_class(self) -> FileClass:
        return classify(self.path)

    @property
    def immutable(self) -> bool:
        """`by-hash/` indexes and pool files never change under the same name."""
        return "/by-hash/" in f"/{self.path}" or self.file_class is FileClass.PACKAGE

    def upstream_urls(self) -> list[str]:
        return [f"{base}/{quote_path(self.path)}" for base in self.backends]

    def prefix_url(self) -> str:
        """The path-prefix form of this resource, as other edges would request it."""
        if self.origin.scheme == "https":
            return f"/HTTPS///{self.origin.authority}/{quote_path(self.path)}"
        return f"/{self.origin.authority}/{quote_path(self.path)}"


@functools.lru_cache(maxsize=65536)
def classify(path: str) -> FileClass:
    """The file class of a request's path (`aptmesh.debian.classify_path`, remembered)."""
    return classify_path(path)


_SAFE = frozenset(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~/+:@!$&'()*,;="
)


def quote_path(path: str) -> str:
    """Percent-encodes what a URL path cannot hold; keeps `+` and `:` (apt's `1:2.0+b1`)."""
    out = []
    for ch in path:
        if ch in _SAFE:
            out.append(ch)
        else:
            out.extend(f"%{b:02X}" for b in ch.encode())
    return "".join(out)


def _parse_authority(text: str, scheme: str) -> tuple[str, int]:
    text = text.lower()
    if "@" in text:
        raise UrlError(400, f"bad host {text!r}: user information is not accepted")
    if text.startswith("["):
        host, _, rest = text.partition("]")
        host += "]"
        port_text = rest[1:] if rest.startswith(":") else ""
        if rest and not rest.startswith(":"):
            raise UrlError(400, f"bad host {text!r}")
    else:
        host, _, port_text = text.partition(":")
    if not host or not _HOST_RE.match(host):
        raise UrlError(400, f"bad host {text!r}")
    if port_text:
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise UrlError(400, f"bad port in {text!r}")
        return host, int(port_text)
    return host, DEFAULT_PORTS[scheme]


_CONTROL = re.compile(r"[\x00-\x1f\x7f\\]")


def _clean_path(raw: str) -> str:
    """Decodes a raw path (without its leading slash) and refuses escapes."""
    raw = raw.split("?", 1)[0].split("#", 1)[0]
    try:
        path = unquote(raw, errors="strict")
    except UnicodeDecodeError:
        raise UrlError(400, "bad path: not UTF-8 after percent-decoding") from None
    if not path:
        raise UrlError(404, "no file named: the path after the host is empty")
    if _CONTROL.search(path):
        raise UrlError(400, "bad path: control characters or backslashes")
    segments = path.split("/")
    if path.startswith("/") or any(s in {"", ".."} for s in segments[:-1]):
        raise UrlError(400, "bad path: empty or '..' segments are not accepted")
    if segments[-1] in {".", ".."}:
        raise UrlError(400, "bad path: empty, '.' or '..' segments are not accepted")
    if path.endswith("/"):
        raise UrlError(404, "no file named: the path is a directory")
    # A flat repository's URLs hold `./` (`deb URL ./` makes apt ask for `URL/./InRelease`):
    # a '.' segment names nothing, so it goes, and one file has one cache key.
    return "/".join(s for s in segments if s != ".")


@dataclass(frozen=True)
class Target:
    """A parsed request target before it is matched with the configuration."""

    origin: Origin
    path: str


def parse_target(raw_target: str) -> Target | None:
    """Parses a raw request target; None when it is an edge-local path (`/metrics`, `/`...)."""
    if raw_target.startswith(("http://", "https://", "HTTP://", "HTTPS://")):
        split = urlsplit(raw_target)
        scheme = split.scheme.lower()
        rest = raw_target[len(scheme) + 3 :]
        authority, slash, path = rest.partition("/")
        if not slash:
            raise UrlError(404, "no file named: the URL has no path")
        host, port = _parse_authority(authority, scheme)
        return Target(Origin(scheme, host, port), _clean_path(path))
    if not raw_target.startswith("/"):
        raise UrlError(400, "bad request target: neither absolute-form nor a path")
    body = raw_target[1:]
    scheme = "http"
    if body.startswith("HTTPS///"):
        scheme, body = "https", body[len("HTTPS///") :]
    authority, slash, path = body.partition("/")
    authority = authority.split("?", 1)[0]
    if scheme == "http" and ("." not in authority and ":" not in authority):
        return None  # not a host name: `/`, `/metrics`, `/_aptmesh/edges`, ...
    if not slash:
        raise UrlError(404, "no file named: the path after the host is empty")
    host, port = _parse_authority(unquote(authority), scheme)
    return Target(Origin(scheme, host, port), _clean_path(path))


TUNNEL_PORT = 443  # CONNECT goes to this port of an allowed host, unless its pattern names one
REFUSED_HINT = (
    "add it to the edge's upstreams (--upstreams, APTMESH_EDGE_UPSTREAMS) or allow it by "
    "pattern (--allowed-hosts, APTMESH_EDGE_ALLOWED_HOSTS)"
)
_PATTERN_RE = re.compile(r"^(\*\.)?[a-z0-9]([a-z0-9.-]*[a-z0-9])?(:[0-9]{1,5})?$")


@dataclass(frozen=True)
class HostPattern:
    """One `allowed_hosts` entry: `*.example.org` (any name under it) or an exact name, on
    `port` or (None) the default port (80 for http, 443 for https and CONNECT)."""

    host: str
    port: int | None

    def matches(self, host: str, port: int) -> bool:
        if self.port is not None and port != self.port:
            return False
        if self.port is None and port not in DEFAULT_PORTS.values():
            return False
        if self.host.startswith("*."):
            return host.endswith(self.host[1:])
        return host == self.host


def parse_host_patterns(entries: tuple[str, ...] | list[str]) -> tuple[HostPattern, ...]:
    patterns = []
    for entry in entries:
        text = entry.strip().lower()
        if not _PATTERN_RE.match(text):
            raise UpstreamError(
                f"allowed host {entry!r}: expected NAME, *.DOMAIN or either with :PORT"
            )
        host, _, port = text.partition(":")
        if port and not 0 < int(port) < 65536:
            raise UpstreamError(f"allowed host {entry!r}: bad port")
        patterns.append(HostPattern(host, int(port) if port else None))
    return tuple(patterns)


@dataclass(frozen=True)
class Upstreams:
    """Configured remaps: (host, port or None for the scheme's default) -> backend base URLs;
    and the host patterns served as themselves (`allowed`)."""

    table: dict[tuple[str, int | None], tuple[str, ...]]
    allowed: tuple[HostPattern, ...] = ()

    def resolve(self, target: Target) -> Resource:
        origin = target.origin
        backends = self.table.get((origin.host, origin.port))
        if backends is None and origin.port == DEFAULT_PORTS[origin.scheme]:
            backends = self.table.get((origin.host, None))
        if backends is not None:
            return Resource(origin, target.path, backends)
        if self.allows(origin.host, origin.port):
            itself = (f"{origin.scheme}://{origin.authority}",)
            return Resource(origin, target.path, itself, by_pattern=True)
        raise UrlError(
            403, f"upstream {origin.authority} is not served by this edge: " + REFUSED_HINT
        )

    def allows(self, host: str, port: int) -> bool:
        return any(p.matches(host, port) for p in self.allowed)

    def tunnel(self, authority: str) -> tuple[str, int]:
        """The (host, port) of a CONNECT target it may tunnel to; UrlError (403) otherwise."""
        host, port = _parse_authority(authority, "https")
        named = any(p.port == port for p in self.allowed if p.port is not None)
        if (port == TUNNEL_PORT or named) and self.allows(host, port):
            return host, port
        raise UrlError(
            403,
            f"CONNECT {authority}: tunnels go only to allowed hosts on port {TUNNEL_PORT} "
            f"(or the port their pattern names); allow it by pattern (--allowed-hosts, "
            f"APTMESH_EDGE_ALLOWED_HOSTS)",
        )

    def hosts(self) -> list[str]:
        return sorted(f"{h}:{p}" if p else h for h, p in self.table)


def _backend(url: str, entry: str) -> str:
    split = urlsplit(url)
    if split.scheme not in DEFAULT_PORTS or not split.hostname:
        raise UpstreamError(f"upstream {entry!r}: {url!r} is not an http:// or https:// URL")
    if split.query or split.fragment:
        raise UpstreamError(f"upstream {entry!r}: {url!r} must not have a query or fragment")
    return url.rstrip("/")


def parse_upstreams(
    entries: tuple[str, ...] | list[str], allowed: tuple[str, ...] | list[str] = ()
) -> Upstreams:
    """Parses `HOST[:PORT]=URL[|URL...]` remaps and bare `http(s)://HOST[:PORT][/base]` URLs,
    and the `allowed_hosts` patterns."""
    table: dict[tuple[str, int | None], tuple[str, ...]] = {}
    for entry in entries:
        entry = entry.strip()
        if "=" in entry and not entry.split("=", 1)[0].startswith(("http://", "https://")):
            name, _, urls = entry.partition("=")
            backends = tuple(_backend(u.strip(), entry) for u in urls.split("|") if u.strip())
            if not backends:
                raise UpstreamError(f"upstream {entry!r}: no backend URL after '='")
            try:
                host, port = _parse_authority(name.strip(), "http")
            except UrlError as exc:
                raise UpstreamError(f"upstream {entry!r}: {exc.text}") from None
            explicit_port = ":" in name.strip().rpartition("]")[2]
            key: tuple[str, int | None] = (host, port if explicit_port else None)
        else:
            base = _backend(entry, entry)
            split = urlsplit(base)
            try:
                host, port = _parse_authority(split.netloc, split.scheme)
            except UrlError as exc:
                raise UpstreamError(f"upstream {entry!r}: {exc.text}") from None
            key = (host, port)
            backends = (base,)
        if key in table:
            raise UpstreamError(f"upstream {entry!r}: host named twice")
        table[key] = backends
    return Upstreams(table, parse_host_patterns(allowed))
