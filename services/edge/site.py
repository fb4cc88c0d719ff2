"""Small package files through the site's owner edge, so a site fetches each from outside once.

Theory of operation. Files below `swarm_min_size` are not swarmed (a P2P round
trip costs more than it saves), yet without help every edge of a site would
fetch each of them from the mirror. So each such file has one owner among the
live edges of the zone: the edge that maximises sha256(f"{file_sha256}:{id}")
(rendezvous hashing: every edge computes the same owner from the same list
without talking to the others, and an edge joining or leaving moves only the
files it gains or held, about 1/N of them). An edge that is not the owner asks
the owner over plain HTTP, at the path-prefix URL any client would use, with
the header `X-Aptmesh-Via`; the owner answers from its cache or fetches the
file from the upstream once, however many edges and clients ask at the same
time (they all join one download, see files.py).

No loops, no waiting on the dead:
- a request carrying `X-Aptmesh-Via` is never sent on to another edge, and
  when one joins a download that is waiting for an owner, that download drops
  the owner for the upstream (`FileService`), so edges whose lists disagree
  for a refresh interval cannot wait on each other in a circle;
- an edge routes only while it is itself in the zone's list (it registered, so
  the others count on it too) and the list is fresh; otherwise, and when the
  option is off, it fetches from the upstream as before;
- the owner gets a short connect timeout (a dead one costs at most ~1 s, a
  refused connection nothing).

The owner is not trusted more than a mirror: its bytes go into the download's
file, but the download does not `begin` (which is what lets clients read it)
until the whole file has the size and SHA-256 the verified index gives. Any
failure (refused, an answer other than 200, a timeout, a short body, wrong
bytes) rewinds the download to nothing, and the caller fetches the file from
the upstream. For files this small, holding the whole body back costs little.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import aiohttp

from aptmesh import logs
from aptmesh.edge.downloads import Download, DownloadFailed
from aptmesh.edge.metrics import EdgeMetrics
from aptmesh.edge.urls import Resource

log = logs.get(__name__)

VIA_HEADER = "X-Aptmesh-Via"  # on requests between edges: the asking edge's id
OWNER_CONNECT_TIMEOUT = 1.0  # seconds for a TCP connection to the owner
READ_CHUNK = 256 * 1024


@dataclass(frozen=True)
class EdgeInfo:
    """One live edge as the tracker's registry lists it."""

    id: str
    url: str
    zone: str


def rendezvous_owner(sha256: str, edges: Iterable[EdgeInfo]) -> EdgeInfo | None:
    """The edge maximising sha256(f"{sha256}:{edge.id}") (None for no edges); ties, which
    need two equal digests, go to the smaller id so the answer never depends on order."""
    best: EdgeInfo | None = None
    best_score = b""
    for edge in edges:
        score = hashlib.sha256(f"{sha256}:{edge.id}".encode()).digest()
        if best is None or score > best_score or (score == best_score and edge.id < best.id):
            best, best_score = edge, score
    return best


def site_owner(sha256: str, self_id: str, zone: str, edges: Sequence[EdgeInfo]) -> EdgeInfo | None:
    """The other edge of `zone` that fetches the file for the site; None when this edge
    fetches it itself: it owns it, or it is not in the list (the others do not count on it,
    and it cannot know whether its view of the zone is theirs)."""
    peers = [e for e in edges if e.zone == zone]
    if not any(e.id == self_id for e in peers):
        return None
    owner = rendezvous_owner(sha256, peers)
    if owner is None or owner.id == self_id:
        return None
    return owner


class OwnerFailed(Exception):
    """The owner did not give the verified file; `kind` is set when what it sent was wrong
    (a verification failure), empty for transport failures."""

    def __init__(self, text: str, kind: str = "") -> None:
        super().__init__(text)
        self.text = text
        self.kind = kind


class SiteFetch:
    """The zone's live edges (as last read from the registry) and fetches from their owners.

    `set_edges` is called after every successful read of the registry; a list older than
    `stale_after` seconds is not used (the tracker is unreachable: fetch from the upstream)."""

    def __init__(
        self,
        metrics: EdgeMetrics,
        *,
        zone: str,
        read_timeout: float,
        stale_after: float,
        connect_timeout: float = OWNER_CONNECT_TIMEOUT,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._metrics = metrics
        self._zone = zone
        self._stale_after = stale_after
        self._clock = clock
        self._self_id = ""
        self._edges: tuple[EdgeInfo, ...] = ()
        self._listed_at: float | None = None
        # Only the TCP connect is bounded short: waiting for a pooled connection is not the
        # owner's fault, and the owner may itself wait up to its upstream timeout for headers.
        self._timeout = aiohttp.ClientTimeout(
            total=None, connect=None, sock_connect=connect_timeout, sock_read=read_timeout
        )
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(
            timeout=self._timeout,
            auto_decompress=False,
            connector=aiohttp.TCPConnector(limit=128, limit_per_host=32),
            headers={"User-Agent": "aptmesh-edge", "Accept-Encoding": "identity"},
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def set_edges(self, self_id: str, edges: Sequence[EdgeInfo]) -> None:
        self._self_id = self_id
        self._edges = tuple(edges)
        self._listed_at = self._clock()

    def owner_for(self, sha256: str) -> EdgeInfo | None:
        """The edge to ask for a small verified file; None: fetch it from the upstream."""
        if self._listed_at is None or self._clock() - self._listed_at > self._stale_after:
            return None
        return site_owner(sha256, self._self_id, self._zone, self._edges)

    async def fetch(
        self, owner: EdgeInfo, resource: Resource, download: Download, abandon: asyncio.Event
    ) -> bool:
        """Fills `download` (empty, with an expected hash) from `owner` and begins it; False,
        with the download rewound to nothing and not begun, if the owner did not give the
        verified file or `abandon` was set first. Counted either way."""
        assert download.expected is not None and download.written == 0
        url = owner.url.rstrip("/") + resource.prefix_url()
        filling = asyncio.create_task(self._fill(url, download))
        abandoned = asyncio.create_task(abandon.wait())
        try:
            await asyncio.wait({filling, abandoned}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (filling, abandoned):
                task.cancel()  # no-op when done; begin() is the filling's last step, no await
            done = await asyncio.gather(filling, abandoned, return_exceptions=True)
        error = done[0]
        if error is None:
            self._metrics.site_fetches.labels(result="ok").inc()
            return True
        if isinstance(error, DownloadFailed):
            raise error  # not the owner's doing (a full disk): fails as an upstream fetch would
        if isinstance(error, OwnerFailed):
            reason = error.text
            if error.kind:
                self._metrics.verification_failures.labels(
                    service="edge", kind=f"site_{error.kind}"
                ).inc()
        elif isinstance(error, asyncio.CancelledError):
            reason = "another edge asked this edge for the file while it waited for the owner"
        elif isinstance(error, Exception):
            reason = f"talking to the owner: {type(error).__name__}: {error}"
        else:
            raise error
        download.rewind(0)
        self._metrics.site_fetches.labels(result="failed").inc()
        log.info("site_fetch_failed", key=resource.key, owner=owner.id, reason=reason)
        return False

    async def _fill(self, url: str, download: Download) -> None:
        expected = download.expected
        assert expected is not None and self._session is not None
        try:
            async with self._session.get(url, headers={VIA_HEADER: self._self_id}) as resp:
                if resp.status != 200:
                    raise OwnerFailed(f"the owner answered {resp.status}")
                coding = resp.headers.get("Content-Encoding", "identity").strip().lower()
                if coding not in ("", "identity"):
                    raise OwnerFailed(f"the owner sent Content-Encoding {coding!r}")
                length = resp.headers.get("Content-Length")
                if length is not None and length != str(expected.size):
                    raise OwnerFailed(
                        f"the owner announced {length} bytes of {expected.size}", kind="size"
                    )
                digest = hashlib.sha256()
                received = 0
                async for data in resp.content.iter_chunked(READ_CHUNK):
                    if received + len(data) > expected.size:
                        raise OwnerFailed("the owner sent more bytes than the file has", "size")
                    download.write(data, "edge")
                    digest.update(data)
                    received += len(data)
                if received != expected.size:
                    raise OwnerFailed(f"the owner sent {received} of {expected.size} bytes")
                if digest.hexdigest() != expected.sha256:
                    raise OwnerFailed("the owner's file differs from the signed index's", "sha256")
                last_modified = resp.headers.get("Last-Modified", "")
        except TimeoutError:
            raise OwnerFailed("the owner did not connect or answer in time") from None
        except (aiohttp.ClientError, asyncio.IncompleteReadError) as exc:
            raise OwnerFailed(f"talking to the owner: {type(exc).__name__}: {exc}") from None
        download.begin(expected.size, last_modified, "edge")
