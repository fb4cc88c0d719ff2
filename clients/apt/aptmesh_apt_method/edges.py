"""Finding the nearest healthy edges.

Theory of operation. The configured edges (`Acquire::mesh::Edges`) are the
seeds. Each is probed (`GET /healthz`, short timeout, all at once in
threads, so a dead edge costs at most one timeout and usually a refused
connection). The first healthy seed that answers `GET /_aptmesh/edges`
contributes the live edge list; edges learnt there are probed too. The
healthy edges are ranked: the configured zone first, then by round trip.
The ranking is cached briefly in a small JSON file under apt's state
directory, because apt starts the method more than once per run.

Decisions are pure functions over values (`parse_listing`, `merge`, `rank`,
`decode_cache`, `cache_fresh`); `discover` does the I/O around them, with
the clock, the prober and the lister injected.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

from aptmesh_apt_method.config import MAX_EDGES, MeshConfig, normalize_edge_url

LISTING_PATH = "/_aptmesh/edges"
HEALTH_PATH = "/healthz"
MAX_LISTING_BYTES = 256 << 10  # an edge's listing of MAX_EDGES edges is about 4 KiB
MAX_LISTING_ENTRIES = 1024
CACHE_VERSION = 1


T = TypeVar("T")


class ListingError(ValueError):
    """An edge's /_aptmesh/edges answer could not be used."""


@dataclass(frozen=True)
class Edge:
    url: str
    id: str = ""
    zone: str | None = None


Prober = Callable[[str, float], "float | None"]
Lister = Callable[[str, float], "list[Edge]"]
Log = Callable[[str], None]


def parse_listing(body: bytes) -> list[Edge]:
    """The edges in a `{"edges": [{"id", "url", "zone"}, ...]}` document.

    Entries without a usable URL are skipped; anything that is not such a
    document raises ListingError.
    """
    if len(body) > MAX_LISTING_BYTES:
        raise ListingError(f"reading the edge list: larger than {MAX_LISTING_BYTES} bytes")
    try:
        document = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise ListingError(f"reading the edge list: not JSON: {exc}") from None
    except RecursionError:
        raise ListingError("reading the edge list: nested too deeply") from None
    entries = document.get("edges") if isinstance(document, dict) else None
    if not isinstance(entries, list):
        raise ListingError('reading the edge list: no "edges" array')
    out: list[Edge] = []
    seen: set[str] = set()
    for entry in entries[:MAX_LISTING_ENTRIES]:
        if len(out) >= MAX_EDGES:
            break
        if not isinstance(entry, dict) or not isinstance(entry.get("url"), str):
            continue
        url = normalize_edge_url(entry["url"])
        if url is None or url in seen:
            continue
        seen.add(url)
        ident = entry.get("id")
        zone = entry.get("zone")
        out.append(
            Edge(
                url=url,
                id=ident if isinstance(ident, str) else "",
                zone=zone if isinstance(zone, str) and zone else None,
            )
        )
    return out


def merge(seeds: Sequence[str], listing: Iterable[Edge]) -> list[Edge]:
    """Seeds first (taking id and zone from the listing), then edges only listed."""
    listed = {edge.url: edge for edge in listing}
    out = [listed.get(url, Edge(url=url)) for url in seeds]
    out += [edge for url, edge in listed.items() if url not in seeds]
    return out[:MAX_EDGES]


def rank(edges: Sequence[Edge], rtts: Mapping[str, float | None], zone: str | None) -> list[Edge]:
    """The healthy edges (a round trip measured), best first.

    Zone beats distance: an operator who sets a zone wants its edges even if
    another looks a millisecond closer. Ties keep the given order.
    """
    healthy = [(i, e) for i, e in enumerate(edges) if rtts.get(e.url) is not None]

    def key(item: tuple[int, Edge]) -> tuple[bool, float, int]:
        index, edge = item
        rtt = rtts[edge.url]
        assert rtt is not None
        return (zone is not None and edge.zone != zone, rtt, index)

    return [edge for _, edge in sorted(healthy, key=key)]


# --- the cache file ---------------------------------------------------------


@dataclass(frozen=True)
class CacheEntry:
    key: str
    created: float  # seconds since the epoch
    edges: tuple[Edge, ...]


def encode_cache(entry: CacheEntry) -> str:
    return json.dumps(
        {
            "version": CACHE_VERSION,
            "key": entry.key,
            "created": entry.created,
            "edges": [{"url": e.url, "id": e.id, "zone": e.zone} for e in entry.edges],
        },
        indent=1,
    )


def decode_cache(text: str) -> CacheEntry | None:
    """The entry in a cache file's text, or None if it is not one (corrupt, old)."""
    try:
        document = json.loads(text)
        if document.get("version") != CACHE_VERSION:
            return None
        edges = []
        for item in document["edges"]:
            url = normalize_edge_url(item["url"])
            if url is None:
                return None
            zone = item.get("zone")
            edges.append(Edge(url=url, id=str(item.get("id") or ""), zone=zone or None))
        return CacheEntry(str(document["key"]), float(document["created"]), tuple(edges))
    except (ValueError, TypeError, KeyError, AttributeError, RecursionError):
        return None


def cache_fresh(entry: CacheEntry, key: str, now: float, ttl: float) -> bool:
    """Whether `entry` answers for settings `key` at `now` (a clock set back voids it)."""
    return entry.key == key and entry.created <= now + 1.0 and now - entry.created < ttl


def read_cache(path: str) -> CacheEntry | None:
    try:
        with open(path, encoding="utf-8") as handle:
            return decode_cache(handle.read(MAX_LISTING_BYTES))
    except (OSError, UnicodeDecodeError):
        return None


def write_cache(path: str, entry: CacheEntry) -> None:
    """Replaces the cache file atomically; raises OSError when it cannot."""
    directory = os.path.dirname(path) or "."
    fd, tmp = tempfile.mkstemp(prefix=".mesh-edges.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(encode_cache(entry))
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def forget(config: MeshConfig, url: str) -> None:
    """Drops `url` from the cached choice (an edge found dead mid-run); raises OSError."""
    if config.cache_file is None or config.cache_seconds <= 0:
        return
    entry = read_cache(config.cache_file)
    if entry is None or all(edge.url != url for edge in entry.edges):
        return
    kept = tuple(edge for edge in entry.edges if edge.url != url)
    write_cache(config.cache_file, CacheEntry(entry.key, entry.created, kept))


# --- network I/O ---------------------------------------------------------------


def _get(url: str, path: str, timeout: float, limit: int) -> tuple[int, bytes]:
    from aptmesh_apt_method.httpclient import Connection

    conn = Connection.for_url(url, timeout, timeout)
    base = url.partition("://")[2].partition("/")
    try:
        response = conn.get(base[1] + base[2] + path, {"User-Agent": "aptmesh-apt-method"})
        body = b""
        while len(body) <= limit and (chunk := response.read(limit + 1 - len(body))):
            body += chunk
        return response.status, body
    finally:
        conn.close()


def probe(url: str, timeout: float) -> float | None:
    """Round trip of `GET /healthz` on the edge in seconds, or None if it is not healthy."""
    start = time.monotonic()
    try:
        status, _ = _get(url, HEALTH_PATH, timeout, 4096)
    except Exception:  # whatever went wrong, the edge is not healthy
        return None
    elapsed = time.monotonic() - start
    return elapsed if status == 200 else None


def fetch_listing(url: str, timeout: float) -> list[Edge]:
    """The edge list served by the edge at `url`; raises ListingError or OSError."""
    try:
        status, body = _get(url, LISTING_PATH, timeout, MAX_LISTING_BYTES)
    except OSError:
        raise
    except Exception as exc:  # httpclient.HttpError and the like
        raise ListingError(f"fetching the edge list from {url}: {exc}") from None
    if status != 200:
        raise ListingError(f"fetching the edge list from {url}: HTTP {status}")
    return parse_listing(body)


def probe_all(
    urls: Sequence[str], timeout: float, prober: Prober = probe, deadline: float | None = None
) -> dict[str, float | None]:
    """Probes every URL at once; an edge not healthy by `deadline` (monotonic) counts as dead."""
    results: dict[str, float | None] = {url: None for url in urls}
    lock = threading.Lock()
    done = False

    def run(url: str) -> None:
        rtt = prober(url, timeout)
        with lock:
            if not done:
                results[url] = rtt

    threads = [threading.Thread(target=run, args=(url,), daemon=True) for url in urls]
    for thread in threads:
        thread.start()
    if deadline is None:
        deadline = time.monotonic() + timeout + 0.5
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    with lock:
        done = True  # a probe that answers after this is ignored
        return dict(results)


def within(deadline: float, step: Callable[[], T]) -> T:
    """`step()`'s result, run in a daemon thread; raises ListingError if `deadline` passes first.

    The thread is abandoned, not stopped: it ends with its own socket timeout
    (or with the process) and nothing it does later is used.
    """
    box: list[T] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            box.append(step())
        except BaseException as exc:  # handed to the caller, who decides
            errors.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(max(0.0, deadline - time.monotonic()))
    if box:
        return box[0]
    if errors:
        raise errors[0]
    raise ListingError("the edge took longer than the discovery deadline")


def discovery_deadline(config: MeshConfig) -> float:
    """Seconds discovery may take in all: apt's first request waits at most this long."""
    return 5 * config.probe_timeout


def _ignore(_: str) -> None:
    pass


def discover(
    config: MeshConfig,
    *,
    now: Callable[[], float] = time.time,
    prober: Prober = probe,
    lister: Lister = fetch_listing,
    log: Log = _ignore,
) -> list[Edge]:
    """The healthy edges for `config`, best first ([] when none is reachable)."""
    if not config.edges:
        return []
    key = config.cache_key()
    use_cache = config.cache_file is not None and config.cache_seconds > 0
    if use_cache:
        assert config.cache_file is not None
        entry = read_cache(config.cache_file)
        if entry is not None and cache_fresh(entry, key, now(), config.cache_seconds):
            log(f"edges from cache {config.cache_file}: {[e.url for e in entry.edges]}")
            return list(entry.edges)
    start = time.monotonic()
    total = discovery_deadline(config)
    # Seeds' probes: up to 2/5 (a probe's timeout and the threads' start); the listing
    # up to 4/5; the learnt edges' probes the rest.
    rtts = probe_all(config.edges, config.probe_timeout, prober, start + total * 2 / 5)
    listing: list[Edge] = []
    if config.discover:
        alive = sorted((rtt, url) for url, rtt in rtts.items() if rtt is not None)
        listing_deadline = start + total * 4 / 5
        for _, url in alive:
            if time.monotonic() >= listing_deadline:
                break

            def step(url: str = url) -> list[Edge]:
                return lister(url, config.probe_timeout)

            try:
                listing = within(listing_deadline, step)
            except Exception as exc:  # any failure costs the listing, never the seeds
                log(f"no edge list from {url}: {exc!r}")
                continue
            log(f"edge list from {url}: {[e.url for e in listing]}")
            break
    edges = merge(config.edges, listing)
    learnt = [e.url for e in edges if e.url not in rtts]
    if learnt:
        rtts.update(probe_all(learnt, config.probe_timeout, prober, start + total))
    ranked = rank(edges, rtts, config.zone)
    log(
        "probed "
        + ", ".join(
            f"{url} " + ("dead" if rtt is None else f"{rtt * 1000:.1f} ms")
            for url, rtt in rtts.items()
        )
    )
    if use_cache:
        assert config.cache_file is not None
        try:
            write_cache(config.cache_file, CacheEntry(key, now(), tuple(ranked)))
        except OSError as exc:
            log(f"not caching the edge choice in {config.cache_file}: {exc}")
    return ranked
