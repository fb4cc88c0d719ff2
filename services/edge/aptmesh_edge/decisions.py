"""The edge's decisions, named once: where bytes came from, why the swarm was passed over, how a
request was answered. Metrics pre-register their labels from these, the dashboards and alerts
generators and the tests read them from here: a new reason is one edit, checked by mypy.

(File classes are the core's, `aptmesh.debian.FileClass`; verification outcomes are
`aptmesh_edge.checked.Verdict` and `Failure`.)
"""

from __future__ import annotations

import enum


class SourceKind(enum.Enum):
    """Where a client's bytes came from: the `source` of `aptmesh_edge_served_bytes_total`."""

    CACHE = "cache"
    SWARM = "swarm"
    UPSTREAM = "upstream"
    EDGE = "edge"  # from another edge: the zone owner of a small file (site.py), or a
    # configured edge backend (a peer fetching through its site's edges: upstream.py)


class FallbackReason(enum.Enum):
    """Why a package fetch went to the upstream over HTTP rather than the swarm, or why the
    upstream joined a swarm download as web seed: `aptmesh_edge_upstream_fallbacks_total`."""

    SWARM_DISABLED = "swarm_disabled"
    UNVERIFIED = "unverified"
    BELOW_THRESHOLD = "below_threshold"
    NO_TORRENT = "no_torrent"
    TRACKER_UNREACHABLE = "tracker_unreachable"
    NO_PEERS = "no_peers"
    SWARM_STALLED = "swarm_stalled"
    SWARM_ERROR = "swarm_error"
    # The upstream joined a swarm download as web seed (the swarm was not keeping up).
    WEBSEED_NO_PEERS = "webseed_no_peers"
    WEBSEED_NO_SEED = "webseed_no_seed"
    WEBSEED_STALLED = "webseed_stalled"
    WEBSEED_SLOW = "webseed_slow"

    @property
    def by_design(self) -> bool:
        """Configuration, not failure: small files go over HTTP by design, a swarm may be off,
        and verify_mode auto without a key fetches unverified files (no alert counts these)."""
        return self in _BY_DESIGN

    @property
    def web_seed(self) -> bool:
        """The swarm download went on, with the upstream as web seed."""
        return self.value.startswith("webseed_")

    @classmethod
    def swarm_failures(cls) -> tuple[FallbackReason, ...]:
        """The reasons that say the swarm failed a file it should have delivered."""
        return tuple(r for r in cls if not r.by_design and not r.web_seed)


_BY_DESIGN = frozenset(
    {FallbackReason.BELOW_THRESHOLD, FallbackReason.SWARM_DISABLED, FallbackReason.UNVERIFIED}
)


class Outcome(enum.Enum):
    """How a file request was answered: the `cache` of `aptmesh_edge_requests_total`."""

    HIT = "hit"
    MISS = "miss"
    REVALIDATED = "revalidated"
    STALE = "stale"
    BYPASS = "bypass"  # passed through, not cached
    ERROR = "error"


class SiteResult(enum.Enum):
    """`aptmesh_edge_site_fetches_total{result}`: failed means fetched from the upstream."""

    OK = "ok"
    FAILED = "failed"


class UpstreamFault(enum.Enum):
    """What went wrong with an upstream's answer: `aptmesh_edge_upstream_faults_total{reason}`."""

    SERVER_ERROR = "server_error"  # 5xx
    TIMEOUT = "timeout"  # no answer in time
    UNREACHABLE = "unreachable"  # cannot connect
    BROKEN = "broken"  # the body broke off: reset, or shorter than its Content-Length
    STALLED = "stalled"  # the body stopped coming (a hang after the headers)
    ERROR = "error"  # another transport error
    BAD_ENCODING = "bad_encoding"  # a content coding the edge did not ask for
    HTML_PAGE = "html_page"  # an HTML page for an archive file (a captive portal's redirect)

    @property
    def retryable(self) -> bool:
        """Whether asking again (resuming) may get the file: not for a page in the way."""
        return self not in (UpstreamFault.BAD_ENCODING, UpstreamFault.HTML_PAGE)


class FaultAction(enum.Enum):
    """What the edge did about an upstream fault: the `action` of the faults metric."""

    RETRIED = "retried"  # asked again, resuming where the bytes broke off (a known hash)
    FAILED = "failed"  # a clean error to the client, nothing cached


class Refusal(enum.Enum):
    """Why the HTTP front end refused a client before any file logic ran:
    `aptmesh_edge_http_refused_total{limit}` (every bound in the README's security section)."""

    CONNECTIONS = "connections"  # over http_max_connections: closed at once
    IN_FLIGHT = "in_flight"  # over http_max_in_flight: 503
    HEAD_SIZE = "head_size"  # a request head over http_max_head_bytes: 431, closed
    BAD_REQUEST = "bad_request"  # what a parser rejected (aiohttp's, urls.py's): 400, closed
