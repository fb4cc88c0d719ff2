"""One host's worker in a benchmark run, started inside its namespace.

    ip netns exec NS python -m bench.swarm.node ROLE --options...

Every role speaks JSON lines on stdout: `{"event": "ready", ...}` once it
listens, `{"event": "done", "t": seconds since --start-at, ...}` when a
fetching role holds every file, and `{"event": "final", ...}` with its byte
counters after the orchestrator closes its stdin (servers and peers keep
serving until then, so late finishers still have sources). Times are wall
clock: every namespace shares the kernel's clock, so the start instant the
orchestrator writes on every fetcher's stdin (once all are ready) is one
instant for all hosts.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BT_PORT = 6881
HTTP_PORT = 80


def emit(event: str, **fields: Any) -> None:
    sys.stdout.write(json.dumps({"event": event, **fields}) + "\n")
    sys.stdout.flush()


async def _line() -> str:
    return await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)


async def stdin_closed() -> None:
    """Returns when the orchestrator closes our stdin (or writes a line)."""
    await _line()


async def go() -> float:
    """Waits for the orchestrator's start instant (a line on stdin), then until it; returns it."""
    line = (await _line()).strip()
    if not line:
        raise SystemExit("stopped before the start")
    start_at = float(line)
    while (left := start_at - time.time()) > 0:
        await asyncio.sleep(min(left, 0.01))
    return start_at


@dataclass(frozen=True)
class Item:
    """A file of the payload: where it lives under a root, and (if swarmed) its torrent."""

    path: str
    size: int
    torrent: str | None

    @classmethod
    def load(cls, manifest: str) -> list[Item]:
        raw = json.loads(Path(manifest).read_text())
        return [cls(r["path"], r["size"], r.get("torrent")) for r in raw]


# --- calibration: a timed TCP transfer through the caps ---------------------------------


async def calib_recv(args: argparse.Namespace) -> None:
    """Goodput of one incoming flow in the window [start + warmup, start + warmup + seconds].

    The warm-up skips HTB's burst and TCP's slow start; every flow of a
    calibration shares one start instant, so they measure the caps together.
    """
    server = socket.create_server((args.bind, args.port))
    server.setblocking(False)
    emit("ready")
    loop = asyncio.get_running_loop()
    start = asyncio.ensure_future(go())
    conn, _ = await loop.sock_accept(server)
    server.close()
    start_at = await start
    begin = start_at + args.warmup
    end = begin + args.seconds
    counted = 0
    buf = bytearray(1 << 16)
    while (now := time.time()) < end:
        got = await loop.sock_recv_into(conn, buf)
        if not got:
            break
        if now >= begin:
            counted += got
    conn.close()
    emit("final", goodput=counted / max(1e-9, min(time.time(), end) - begin))


async def calib_send(args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    sock = socket.create_connection((args.to, args.port))
    sock.setblocking(False)
    emit("ready")
    start_at = await go()
    block = bytes(1 << 16)
    try:
        while time.time() < start_at + args.seconds:
            await loop.sock_sendall(sock, block)
    except OSError:
        pass  # the receiver stops reading when its window is over
    sock.close()
    emit("final")


# --- the upstream mirror -------------------------------------------------------------------


async def mirror(args: argparse.Namespace) -> None:
    """A plain HTTP mirror (GET/HEAD, Range) that counts body bytes sent to other hosts."""
    from aiohttp import web

    root = Path(args.root)  # absolute and resolved: the orchestrator passes it so
    local = {args.bind, "127.0.0.1", "::1"}
    sent = {"others": 0, "local": 0, "requests": 0}

    async def serve(request: web.Request) -> web.StreamResponse:
        path = (root / request.match_info["path"]).resolve()
        if root not in path.parents or not path.is_file():
            raise web.HTTPNotFound()
        size = path.stat().st_size
        start, end = 0, size - 1
        status = 200
        if "Range" in request.headers:
            try:
                first, stop, _ = request.http_range.indices(size)
            except ValueError:
                first, stop = size, size
            if first >= stop:
                raise web.HTTPRequestRangeNotSatisfiable(
                    headers={"Content-Range": f"bytes */{size}"}
                )
            start, end, status = first, stop - 1, 206
        response = web.StreamResponse(status=status)
        response.content_length = end - start + 1
        response.content_type = "application/vnd.debian.binary-package"
        if status == 206:
            response.headers["Content-Range"] = f"bytes {start}-{end}/{size}"
        response.headers["Accept-Ranges"] = "bytes"
        await response.prepare(request)
        sent["requests"] += 1
        if request.method == "HEAD":
            return response
        key = "local" if request.remote in local else "others"
        with path.open("rb") as stream:
            stream.seek(start)
            left = end - start + 1
            while left:
                chunk = stream.read(min(left, 256 * 1024))
                if not chunk:
                    break
                await response.write(chunk)
                sent[key] += len(chunk)
                left -= len(chunk)
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_route("GET", "/{path:.*}", serve)
    app.router.add_route("HEAD", "/{path:.*}", serve)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, args.bind, args.port, reuse_address=True)
    await site.start()
    emit("ready")
    await stdin_closed()
    emit(
        "final",
        bytes_to_others=sent["others"],
        bytes_local=sent["local"],
        requests=sent["requests"],
    )
    await runner.cleanup()


# --- HTTP fetching (the http system, small files, and clients of an aptmesh edge) ------------


async def _fetch_all(base: str, items: list[Item], save: Path, concurrency: int) -> int:
    """Fetches `items` from `base`; returns bytes received."""
    import aiohttp

    got = 0
    queue: asyncio.Queue[Item] = asyncio.Queue()
    for item in items:
        queue.put_nowait(item)
    timeout = aiohttp.ClientTimeout(total=None, sock_read=120)
    async with aiohttp.ClientSession(timeout=timeout) as session:

        async def worker() -> None:
            nonlocal got
            while not queue.empty():
                item = queue.get_nowait()
                target = save / item.path
                target.parent.mkdir(parents=True, exist_ok=True)
                async with session.get(f"{base}/{item.path}") as response:
                    response.raise_for_status()
                    with target.open("wb") as out:
                        async for chunk in response.content.iter_chunked(256 * 1024):
                            out.write(chunk)
                            got += len(chunk)

        await asyncio.gather(*(worker() for _ in range(max(1, min(concurrency, len(items))))))
    return got


async def http_get(args: argparse.Namespace) -> None:
    import aiohttp  # noqa: F401 - imported before the clock starts

    items = Item.load(args.manifest)
    emit("ready")
    start_at = await go()
    got = await _fetch_all(args.base, items, Path(args.save), args.concurrency)
    emit("done", t=time.time() - start_at, bytes=got)
    await stdin_closed()
    emit("final", downloaded=got, uploaded=0)


# --- libtorrent peers (through aptmesh.swarm, the project's only libtorrent module) ---------


def _read(path: str) -> bytes:
    with open(path, "rb") as stream:  # a few KB, before the clock starts
        return stream.read()


def _swarm(args: argparse.Namespace) -> Any:
    from aptmesh.swarm import Swarm, SwarmSettings

    swarm = Swarm(SwarmSettings(listen_host=args.bind, listen_port=BT_PORT, role=args.lt_role))
    if args.settings:
        swarm.apply(**json.loads(args.settings))
    return swarm


async def lt_seed(args: argparse.Namespace) -> None:
    """Seeds every swarmed file of the manifest from the mirror's root."""
    swarm = _swarm(args)
    root = Path(args.root)
    for item in Item.load(args.manifest):
        if item.torrent is None:
            continue
        torrent = swarm.add(
            _read(item.torrent),
            root / Path(item.path).parent,
            seed=True,
            sequential=False,
        )
        if args.super_seed:
            torrent.handle.super_seeding(True)
    emit("ready")
    await stdin_closed()
    stats = swarm.stats()
    emit("final", uploaded=stats.payload_uploaded_bytes, downloaded=stats.payload_downloaded_bytes)
    swarm.close()


async def lt_leech(args: argparse.Namespace) -> None:
    """Fetches swarmed files from the peers (and small files over HTTP), then keeps seeding."""
    swarm = _swarm(args)
    save = Path(args.save)
    items = Item.load(args.manifest)
    swarmed = [i for i in items if i.torrent is not None]
    small = [i for i in items if i.torrent is None]
    torrents = [
        swarm.add(
            _read(i.torrent),
            save / Path(i.path).parent,
            sequential=args.sequential,
        )
        for i in swarmed
        if i.torrent is not None
    ]
    peers = [p for p in args.peers.split(",") if p and p != args.bind]
    emit("ready")
    start_at = await go()
    finish: list[float] = [0.0] * len(torrents)

    async def one(index: int) -> None:
        torrent = torrents[index]
        if args.web_seed:
            torrent.handle.add_url_seed(f"{args.web_seed}/{swarmed[index].path}")
        for peer in peers:
            swarm.connect_peer(torrent, peer, BT_PORT)
        await torrent.finished.wait()
        finish[index] = time.time() - start_at

    jobs = [one(i) for i in range(len(torrents))]
    small_bytes = 0
    if small:

        async def fetch_small() -> None:
            nonlocal small_bytes
            small_bytes = await _fetch_all(
                args.web_seed or args.mirror, small, save, args.concurrency
            )

        jobs.append(fetch_small())
    await asyncio.gather(*jobs)
    emit("done", t=time.time() - start_at, t_each=finish, http_bytes=small_bytes)
    await stdin_closed()
    stats = swarm.stats()
    emit("final", uploaded=stats.payload_uploaded_bytes, downloaded=stats.payload_downloaded_bytes)
    swarm.close()


# --- the aptmesh system: clients of an edge, and what the orchestrator cannot reach -----------


async def _until(check: Callable[[], Awaitable[bool]], seconds: float, failure: str) -> None:
    """Asks `check` every 0.2 s until it holds; exits with `failure` after `seconds`."""
    deadline = time.time() + seconds
    while not await check():
        if time.time() > deadline:
            raise SystemExit(failure)
        await asyncio.sleep(0.2)


async def _wait_http(url: str, seconds: float) -> None:
    import aiohttp

    async with aiohttp.ClientSession() as session:

        async def up() -> bool:
            try:
                async with session.get(url) as response:
                    return response.status == 200
            except aiohttp.ClientError:
                return False

        await _until(up, seconds, f"{url} not ready in {seconds:.0f}s")


async def _samples(url: str) -> dict[str, float]:
    """A /metrics page as 'name{labels}' -> value (labels sorted, as prometheus prints them)."""
    import aiohttp

    async with aiohttp.ClientSession() as session, session.get(url) as response:
        text = await response.text()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def _sum(samples: dict[str, float], name: str, *labels: str) -> int:
    return int(
        sum(
            v
            for k, v in samples.items()
            if k.startswith(name + "{") and all(label in k for label in labels)
        )
    )


async def _wait_edges(edge: str, count: int, seconds: float) -> None:
    """Waits until the edge lists `count` live edges (itself included): the steady state of a
    site, where every edge knows the others (small files go through their owner edge)."""
    import aiohttp

    async with aiohttp.ClientSession() as session:

        async def listed() -> bool:
            async with session.get(f"{edge}/_aptmesh/edges") as response:
                edges: list[Any] = (await response.json())["edges"]
                return len(edges) >= count

        await _until(listed, seconds, f"{edge} did not list {count} edges in {seconds:.0f}s")


async def edge_get(args: argparse.Namespace) -> None:
    """An apt client of one aptmesh edge: indexes first (apt-get update), then, timed, the files."""
    items = Item.load(args.manifest)
    await _wait_http(f"{args.edge}/readyz", 60)
    await _wait_edges(args.edge, args.site_edges, 60)
    base = f"{args.edge}/{args.upstream}"
    await _fetch_all(base, [Item(p, 0, None) for p in args.indexes.split(",")],
                     Path(args.save) / "indexes", 1)  # fmt: skip
    emit("ready")
    start_at = await go()
    got = await _fetch_all(base, items, Path(args.save), args.concurrency)
    emit("done", t=time.time() - start_at, bytes=got)
    await stdin_closed()
    samples = await _samples(f"{args.edge}/metrics")
    emit(
        "final",
        downloaded=got,
        uploaded=_sum(samples, "aptmesh_torrent_payload_bytes_total", 'direction="upload"'),
        swarm_downloaded=_sum(
            samples, "aptmesh_torrent_payload_bytes_total", 'direction="download"'
        ),
        served={
            source: _sum(samples, "aptmesh_edge_served_bytes_total", f'source="{source}"')
            for source in ("cache", "swarm", "upstream")
        },
        fallbacks=_sum(samples, "aptmesh_edge_upstream_fallbacks_total"),
    )


async def edge_preheat(args: argparse.Namespace) -> None:
    """A lab's edge that nobody asks: with `--define`, defines the collection of every file at
    the start instant; done when the edge's /_aptmesh/collections says it holds it whole. The
    files are then read through the edge, off the clock, for the orchestrator's check."""
    import aiohttp

    from aptmesh.collection import CollectionSpec
    from aptmesh_tracker.client import TrackerClient

    items = Item.load(args.manifest)
    await _wait_http(f"{args.edge}/readyz", 60)
    await _wait_edges(args.edge, args.site_edges, 60)
    emit("ready")
    start_at = await go()
    if args.define:
        spec = CollectionSpec(
            args.collection, sources=(f"http://{args.upstream} stable main",), sections=("misc",)
        )
        async with TrackerClient(args.to, token=args.token) as tracker:
            await tracker.put_collection(spec)

    async with aiohttp.ClientSession() as session:

        async def complete() -> bool:
            async with session.get(f"{args.edge}/_aptmesh/collections") as response:
                held = (await response.json())["collections"]
            return any(c["collection"] == args.collection and c["complete"] for c in held)

        await _until(complete, 600, f"{args.collection} not complete on {args.edge}")
    emit("done", t=time.time() - start_at, bytes=sum(i.size for i in items))
    got = await _fetch_all(f"{args.edge}/{args.upstream}", items, Path(args.save), 4)
    await stdin_closed()
    samples = await _samples(f"{args.edge}/metrics")
    emit(
        "final",
        downloaded=got,
        uploaded=_sum(samples, "aptmesh_torrent_payload_bytes_total", 'direction="upload"'),
        swarm_downloaded=_sum(
            samples, "aptmesh_torrent_payload_bytes_total", 'direction="download"'
        ),
        fallbacks=_sum(samples, "aptmesh_edge_upstream_fallbacks_total"),
    )


async def wait_index(args: argparse.Namespace) -> None:
    """Waits until the tracker's index holds every swarmed file of the manifest."""
    from aptmesh_tracker.client import TrackerClient, TrackerClientError

    wanted = json.loads(_read(args.manifest).decode())
    hashes = [w["sha256"] for w in wanted if w.get("torrent")]
    async with TrackerClient(args.to) as index:

        async def published() -> bool:
            try:
                return not (await index.get_many(hashes)).missing
            except TrackerClientError:
                return False

        await _until(published, args.seconds, "the swarmed files were not in the index in time")
    emit("ready")
    emit("final", published=len(hashes))


async def scrape(args: argparse.Namespace) -> None:
    """Reports a service's payload upload (from its /metrics) when the run stops; with
    `--site-edges N`, ready only once the seeder has seen N live edges in the registry."""
    await _wait_http(args.base, 60)

    async def seen() -> bool:
        samples = await _samples(args.base)
        wanted: int = args.site_edges
        return samples.get("aptmesh_seeder_site_edges", -1) >= wanted

    if args.site_edges:
        await _until(seen, 60, f"the seeder did not see {args.site_edges} edges in 60s")
    emit("ready")
    await stdin_closed()
    samples = await _samples(args.base)
    emit("final", uploaded=_sum(samples, "aptmesh_torrent_payload_bytes_total",
                                'direction="upload"'))  # fmt: skip


ROLES = {
    "calib-recv": calib_recv,
    "calib-send": calib_send,
    "mirror": mirror,
    "http-get": http_get,
    "lt-seed": lt_seed,
    "lt-leech": lt_leech,
    "edge-get": edge_get,
    "edge-preheat": edge_preheat,
    "wait-index": wait_index,
    "scrape": scrape,
}


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench.swarm.node")
    parser.add_argument("task", choices=sorted(ROLES))
    parser.add_argument("--bind", default="0.0.0.0")
    parser.add_argument("--port", type=int, default=HTTP_PORT)
    parser.add_argument("--to", default="")
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--warmup", type=float, default=0.3)
    parser.add_argument("--root", default="")
    parser.add_argument("--manifest", default="")
    parser.add_argument("--save", default="")
    parser.add_argument("--base", default="")
    parser.add_argument("--mirror", default="")
    parser.add_argument("--edge", default="")
    parser.add_argument("--upstream", default="")
    parser.add_argument("--indexes", default="")
    parser.add_argument("--web-seed", default="")
    parser.add_argument("--peers", default="")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--site-edges", type=int, default=0)
    parser.add_argument("--lt-role", default="plain", choices=["plain", "seeder", "edge"])
    parser.add_argument("--settings", default="")
    parser.add_argument("--super-seed", action="store_true")
    parser.add_argument("--sequential", action="store_true")
    parser.add_argument("--token", default="")
    parser.add_argument("--collection", default="")
    parser.add_argument("--define", action="store_true")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    asyncio.run(ROLES[args.task](args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
