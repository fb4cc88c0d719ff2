"""Small package files through the site's edges, so a site fetches each from outside once.

Theory of operation. Files below `swarm_min_size` are not swarmed (a P2P round
trip costs more than it saves), yet without help every edge of a site would
fetch each of them from the mirror. So the live edges of a zone sort
themselves per file by sha256(f"{file_sha256}:{id}") (rendezvous hashing:
every edge computes the same order from the same list without talking to the
others, and an edge joining or leaving moves only its own places). The first
is the file's owner and fetches it from the upstream once; the k-th fetches it
from the (k - 1) // 2-th (`site_parent`), over plain HTTP at the path-prefix
URL any client would use, with the header `X-Aptmesh-Via` naming the edges
the request came through. An edge asked for a file it lacks asks its own
parent in turn, so a file comes down a binary tree rooted at its owner: no
uplink carries it more than twice (an owner serving the five others of six
sent it five times, and small files crawled through its link), and an edge
passes the bytes on to the edges below it as they arrive (packages.py), not
after it has them all. However many edges and clients ask at once, they join
one download per edge.

No loops, no waiting on the dead:
- a parent precedes its children in the order, so with the same list the
  requests climb towards the owner and stop there; an edge never asks a
  parent that is already in the request's via path, and a request whose path
  holds this edge or the parent it waits for makes that download drop the
  parent for the upstream (`PackageService`): edges whose lists disagree for a
  refresh interval cannot wait on each other in a circle;
- an edge routes only while it is itself in the zone's list (it registered, so
  the others count on it too) and the list is fresh; otherwise, and when the
  option is off, it fetches from the upstream as before;
- the parent gets a short connect timeout (a dead one costs at most ~1 s, a
  refused connection nothing).

A parent is not trusted more than a mirror: its bytes go through the
download's check like any source's (checked.py), and the download does not
`begin` until the whole file has the size and SHA-256 the verified index
gives; the edges below get the bytes early, and check them themselves. Any
failure (refused, an answer other than 200, a timeout, a short body, wrong
bytes) rewinds the download to nothing and raises `SourceUnavailable`: the
caller fetches the file from the upstream.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import aiohttp

from aptmesh import logs
from aptmesh_edge.checked import DownloadFailed
from aptmesh_edge.decisions import SiteResult, SourceKind
from aptmesh_edge.downloads import Download
from aptmesh_edge.metrics import EdgeMetrics
from aptmesh_edge.sources import SourceUnavailable
from aptmesh_edge.upstream import Session
from aptmesh_edge.urls import Resource

log = logs.get(__name__)

VIA_HEADER = "X-Aptmesh-Via"  # on requests between edges: the ids of the edges asking, in order
MAX_VIA = 16  # a longer via path is a loop: a tree over a zone is a few hops deep
OWNER_CONNECT_TIMEOUT = 1.0  # seconds for a TCP connection to the owner
READ_CHUNK = 256 * 1024


@dataclass(frozen=True)
class EdgeInfo:
    """One live edge as the tracker's registry lists it."""

    id: str
    url: str
    zone: str


def _score(sha256: str, edge: EdgeInfo) -> bytes:
    return hashlib.sha256(f"{sha256}:{edge.id}".encode()).digest()


def rendezvous_order(sha256: str, edges: Iterable[EdgeInfo]) -> list[EdgeInfo]:
    """The edges by descending sha256(f"{sha256}:{edge.id}"); ties, which need two equal
    digests, go to the smaller id, so the order never depends on the list's."""
    by_id = sorted(edges, key=lambda edge: edge.id)
    return sorted(by_id, key=lambda edge: _score(sha256, edge), reverse=True)  # stable


def rendezvous_owner(sha256: str, edges: Iterable[EdgeInfo]) -> EdgeInfo | None:
    """The first edge of `rendezvous_order` (None for no edges)."""
    order = rendezvous_order(sha256, edges)
    return order[0] if order else None


def site_parent(
    sha256: str, self_id: str, zone: str, edges: Sequence[EdgeInfo], via: Sequence[str] = ()
) -> EdgeInfo | None:
    """The edge of `zone` this edge fetches the file from; None when it fetches it from the
    upstream itself. In the file's `rendezvous_order` of the zone's edges, the k-th (from 0)
    fetches from the (k - 1) // 2-th: a binary tree with the owner (k = 0) at its root, so no
    uplink carries a file more than twice and the deepest edge is two hops from the owner of
    six. None when this edge owns the file, or is not in the list (the others do not count on
    it, and it cannot know whether its view of the zone is theirs), or when the parent already
    asked for this file (`via`: the lists disagree, and asking it could close a circle), or
    the request came through MAX_VIA edges or more."""
    if len(via) >= MAX_VIA:
        return None
    peers = [e for e in edges if e.zone == zone]
    order = rendezvous_order(sha256, peers)
    rank = next((k for k, edge in enumerate(order) if edge.id == self_id), 0)
    if rank == 0:
        return None
    parent = order[(rank - 1) // 2]
    return None if parent.id in via else parent


def parse_via(header: str | None) -> tuple[str, ...]:
    """The edges a request passed through (`X-Aptmesh-Via`, comma-separated, first asker
    first); empty for a client's own request."""
    if header is None:
        return ()
    return tuple(part.strip() for part in header.split(",") if part.strip()) or ("?",)


class OwnerFailed(Exception):
    """The owner did not answer with the file (a transport failure or a refusal)."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text


class SiteFetch(Session):
    """Owns the zone's live edges (as last read from the registry) and the HTTP session to
    them; `source` gives the `Source` that fetches a file from this edge's parent for it.

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
        super().__init__(
            aiohttp.ClientTimeout(
                total=None, connect=None, sock_connect=connect_timeout, sock_read=read_timeout
            ),
            limit=128,
            per_host=32,
        )

    def set_edges(self, self_id: str, edges: Sequence[EdgeInfo]) -> None:
        self._self_id = self_id
        self._edges = tuple(edges)
        self._listed_at = self._clock()

    def parent_for(self, sha256: str, via: Sequence[str] = ()) -> EdgeInfo | None:
        """The edge to ask for a small verified file (`site_parent`), for a request that came
        through the edges `via`; None: fetch it from the upstream."""
        if self._listed_at is None or self._clock() - self._listed_at > self._stale_after:
            return None
        return site_parent(sha256, self._self_id, self._zone, self._edges, via)

    def closes_circle(self, via: Sequence[str], parent: str) -> bool:
        """Whether a request through `via` for a file this edge waits for from `parent`
        would wait on itself: this edge or that parent already asked for it."""
        return self._self_id in via or parent in via

    def source(self, parent: EdgeInfo, abandon: asyncio.Event, via: Sequence[str]) -> SiteSource:
        """The parent as a `Source` for a request that came through the edges `via`; it gives
        up (SourceUnavailable) when `abandon` is set first."""
        return SiteSource(self, parent, abandon, via)

    async def _fetch(
        self,
        owner: EdgeInfo,
        resource: Resource,
        download: Download,
        abandon: asyncio.Event,
        via: Sequence[str],
    ) -> None:
        assert download.expected is not None and download.written == 0
        url = owner.url.rstrip("/") + resource.prefix_url()
        filling = asyncio.create_task(self._fill(url, download, (*via, self._self_id)))
        abandoned = asyncio.create_task(abandon.wait())
        try:
            await asyncio.wait({filling, abandoned}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (filling, abandoned):
                task.cancel()  # no-op when done; begin() is the filling's last step, no await
            done = await asyncio.gather(filling, abandoned, return_exceptions=True)
        error = done[0]
        if error is None:
            self._metrics.site_fetches.labels(result=SiteResult.OK.value).inc()
            return
        if isinstance(error, DownloadFailed) and error.failure is not None:
            reason = error.text  # the owner's bytes did not verify
            self._metrics.verification_failures.labels(
                service="edge", kind=f"site_{error.failure.value}"
            ).inc()
        elif isinstance(error, DownloadFailed):
            raise error  # not the owner's doing (a full disk): fails as an upstream fetch would
        elif isinstance(error, OwnerFailed):
            reason = error.text
        elif isinstance(error, asyncio.CancelledError):
            reason = "the owner (or an edge it waits for) asked this edge for the file"
        elif isinstance(error, Exception):
            reason = f"talking to the owner: {type(error).__name__}: {error}"
        else:
            raise error
        download.rewind(0)
        self._metrics.site_fetches.labels(result=SiteResult.FAILED.value).inc()
        log.info("site_fetch_failed", key=resource.key, owner=owner.id, reason=reason)
        raise SourceUnavailable(None, f"fetching from edge {owner.id}: {reason}")

    async def _fill(self, url: str, download: Download, via: Sequence[str]) -> None:
        expected = download.expected
        assert expected is not None and self._session is not None
        try:
            async with self._session.get(url, headers={VIA_HEADER: ",".join(via)}) as resp:
                if resp.status != 200:
                    raise OwnerFailed(f"the owner answered {resp.status}")
                coding = resp.headers.get("Content-Encoding", "identity").strip().lower()
                if coding not in ("", "identity"):
                    raise OwnerFailed(f"the owner sent Content-Encoding {coding!r}")
                length = resp.headers.get("Content-Length")
                if length is not None and not length.isdigit():
                    raise OwnerFailed(f"the owner sent Content-Length {length!r}")
                download.check.announce(None if length is None else int(length))
                async for data in resp.content.iter_chunked(READ_CHUNK):
                    download.write(data, SourceKind.EDGE)
                download.verify()
                last_modified = resp.headers.get("Last-Modified", "")
        except TimeoutError:
            raise OwnerFailed("the owner did not connect or answer in time") from None
        except (aiohttp.ClientError, asyncio.IncompleteReadError) as exc:
            raise OwnerFailed(f"talking to the owner: {type(exc).__name__}: {exc}") from None
        download.begin(expected.size, last_modified, SourceKind.EDGE)


class SiteSource:
    """This edge's parent in the zone for one file, as a `Source`: fills an empty download of a
    verified file and begins it once the whole file checked; otherwise rewinds it to nothing
    and raises SourceUnavailable (counted in `aptmesh_edge_site_fetches_total`)."""

    kind = SourceKind.EDGE

    def __init__(
        self, site: SiteFetch, parent: EdgeInfo, abandon: asyncio.Event, via: Sequence[str]
    ) -> None:
        self.parent = parent
        self._site = site
        self._abandon = abandon
        self._via = via

    async def fetch(self, resource: Resource, download: Download) -> None:
        await self._site._fetch(self.parent, resource, download, self._abandon, self._via)
