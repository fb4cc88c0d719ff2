"""What a `mesh+http://HOST/PATH` URI names, and where it can be fetched.

URIs stay exactly as apt sent them (percent-encoded, `Send-URI-Encoded`):
nothing here decodes or re-encodes a path, so `+` and `~` in Debian file
names reach the edge and the mirror as apt meant them. Pure.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


class UriError(ValueError):
    """A URI this method cannot serve; the text is safe to send to apt."""


@dataclass(frozen=True)
class Target:
    upstream_scheme: str  # "http" or "https"
    authority: str  # as in the URI, userinfo included
    rest: str  # path and query, "" or starting with "/" or "?"

    @property
    def hostport(self) -> str:
        """HOST[:PORT] without credentials: edges never see those."""
        return self.authority.rpartition("@")[2]

    @property
    def mirror_uri(self) -> str:
        return f"{self.upstream_scheme}://{self.authority}{self.rest}"

    def via_edge(self, edge: str) -> str:
        """The apt-cacher-ng path-prefix form on `edge` (a base URL, no trailing slash)."""
        if self.upstream_scheme == "https":
            return f"{edge}/HTTPS///{self.hostport}{self.rest}"
        return f"{edge}/{self.hostport}{self.rest}"


def parse_mesh_uri(uri: str) -> Target:
    """`mesh+http://HOST/...` -> HOST over http; `X+https` -> https; a bare `mesh://` -> http."""
    scheme, sep, rest = uri.partition("://")
    if not sep or not scheme:
        raise UriError(f"not an absolute URI: {uri}")
    base, plus, upstream = scheme.lower().rpartition("+")
    if not plus:
        upstream = "http"
    if upstream not in ("http", "https") or (plus and not base):
        raise UriError(f"unsupported scheme {scheme!r}: use mesh+http or mesh+https")
    cut = min((i for i in (rest.find("/"), rest.find("?")) if i >= 0), default=len(rest))
    authority, path = rest[:cut], rest[cut:]
    if not authority.rpartition("@")[2]:
        raise UriError(f"no host in URI: {uri}")
    return Target(upstream, authority, path)


def redirect_targets(target: Target, edges: Sequence[str]) -> list[str]:
    """Where apt should try `target`, best first: each edge in order, then the mirror."""
    return [target.via_edge(edge) for edge in edges] + [target.mirror_uri]
