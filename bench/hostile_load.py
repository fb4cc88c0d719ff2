"""Hostile load against a real tracker: an announce flood from one address.

Starts a real `aptmesh tracker` process on loopback (an indexed torrent, a
registered seed box announcing from 127.0.0.1), floods one infohash with
distinct peer_id/port pairs from another loopback address (127.0.0.9; with
`--sources N`, from N addresses 127.0.1.1 and on, to reach the per-swarm and
total bounds instead of the per-address ones), and
prints the tracker's resident memory before, at its peak and after, next to
the configured peer bounds, plus how many leecher answers held the seed box.
With `--edge`, it also starts a real `aptmesh edge` process before a signed
repository built here and asks it for one cached small file `--count` times,
each with a distinct long query string (junk that must not mint cache
entries), printing the edge's memory the same way.

A figure to track, never a timed test: `python -m bench.hostile_load [--count N]`.

`flood()` and `Leecher` are what tests/tracker/test_hostile_http.py drives too.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from aptmesh.torrent import make_torrent
from aptmesh_tracker import wire
from aptmesh_tracker.client import TrackerClient
from aptmesh_tracker.records import Edge, PackageRecord
from aptmesh_tracker.wire import AnnounceRequest

FLOOD_SOURCE = "127.0.0.9"  # every fake peer comes from here
LEECHER_SOURCE = "127.0.0.5"
MIB = 1 << 20


async def flood(
    announce_url: str,
    info_hash: bytes,
    count: int,
    *,
    source: str = FLOOD_SOURCE,
    connections: int = 8,
    deadline: float = 60.0,
) -> int:
    """Announces `count` distinct fake peers (or as many as fit in `deadline` seconds) from
    `source`; returns how many were answered in bencode."""
    connector = aiohttp.TCPConnector(local_addr=(source, 0), limit=connections)
    answered = 0
    stop_at = time.monotonic() + deadline
    queue: asyncio.Queue[int] = asyncio.Queue()
    for n in range(count):
        queue.put_nowait(n)

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal answered
        while time.monotonic() < stop_at:
            try:
                n = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            request = AnnounceRequest(
                info_hash, b"-FL0001-%012d" % n, 1024 + n % 60000, left=n % 2, numwant=0
            )
            url = announce_url + "?" + wire.encode_announce_request(request)
            async with session.get(url) as response:
                body = await response.read()
            if body.startswith(b"d"):
                answered += 1

    async with aiohttp.ClientSession(connector=connector) as session:
        await asyncio.gather(*(worker(session) for _ in range(connections)))
    return answered


@dataclass
class Leecher:
    """A real client's announce from its own address: which peers it is handed."""

    announce_url: str
    info_hash: bytes
    source: str = LEECHER_SOURCE

    async def peers(self, n: int) -> list[tuple[str, int]]:
        connector = aiohttp.TCPConnector(local_addr=(self.source, 0))
        request = AnnounceRequest(self.info_hash, b"-LE0001-%012d" % n, 7000, left=1, numwant=20)
        url = self.announce_url + "?" + wire.encode_announce_request(request)
        async with (
            aiohttp.ClientSession(connector=connector) as session,
            session.get(url) as response,
        ):
            got = wire.decode_announce_response(await response.read())
        return [wire.split_address(p.address) for p in got.peers]


def indexed_record(directory: Path) -> PackageRecord:
    path = directory / "flood_1.0_all.deb"
    path.write_bytes(random.Random(0).randbytes(200_000))
    hashed = make_torrent(path)
    t = hashed.torrent
    return PackageRecord(
        hashed.sha256, t.size, t.name, t.info_hash_v1, t.info_hash_v2, t.piece_length, t.metainfo
    )


async def seed_box_announces(grpc_target: str, token: str, announce_url: str, ih: bytes) -> int:
    """Registers a seed box from this host (127.0.0.1) and announces it as a seeder; returns
    the port it announced."""
    async with TrackerClient(grpc_target, token=token) as client:
        await client.register_edge(Edge("seed-1", "", seed_box=True))
    port = 6881
    request = AnnounceRequest(ih, b"-SB0001-000000000001", port, left=0, event="started")
    async with (
        aiohttp.ClientSession() as session,
        session.get(announce_url + "?" + wire.encode_announce_request(request)) as response,
    ):
        wire.decode_announce_response(await response.read())
    return port


async def flood_from(announce_url: str, info_hash: bytes, count: int, sources: int) -> int:
    """`flood` from one address, or split over `sources` addresses at once."""
    if sources <= 1:
        return await flood(announce_url, info_hash, count)
    share = -(-count // sources)
    parts = [
        flood(announce_url, info_hash, share, source=f"127.0.{1 + i // 250}.{1 + i % 250}")
        for i in range(sources)
    ]
    return sum(await asyncio.gather(*parts))


async def run(count: int, sources: int, extra: Sequence[str]) -> int:
    from tests.tracker.process import tracker_process  # the same process the tests start

    token = "bench-token"  # noqa: S105 - a throw-away token for a loopback tracker
    with tempfile.TemporaryDirectory() as tmp:
        record = indexed_record(Path(tmp))
        async with tracker_process(
            Path(tmp) / "t.sqlite3", *extra, env={"APTMESH_TRACKER_PUBLISH_TOKEN": token}
        ) as tracker:
            async with TrackerClient(tracker.grpc_target, token=token) as client:
                await client.publish(record)
            ih = bytes.fromhex(record.info_hash_v1)
            announce = tracker.http_url + "/announce"
            port = await seed_box_announces(tracker.grpc_target, token, announce, ih)
            before, _ = tracker.memory()
            leecher = Leecher(announce, ih)
            flooding = asyncio.create_task(flood_from(announce, ih, count, sources))
            answers = with_seed = 0
            while not flooding.done():
                got = await leecher.peers(answers)
                answers += 1
                with_seed += ("127.0.0.1", port) in got
                await asyncio.sleep(0.2)
            answered = await flooding
            after, peak = tracker.memory()
            async with aiohttp.ClientSession() as session:
                metrics = await (await session.get(tracker.http_url + "/metrics")).text()
    print(f"announces sent {count}, answered in bencode {answered}")
    print(f"leecher answers holding the registered seed box: {with_seed} of {answers}")
    print(f"tracker RSS: before {before / MIB:.1f} MiB, peak {peak / MIB:.1f} MiB, after ", end="")
    print(f"{after / MIB:.1f} MiB (growth {(peak - before) / MIB:.1f} MiB)")
    for line in metrics.splitlines():
        if line.startswith(("aptmesh_tracker_peer_limit", "aptmesh_tracker_refused_peers_total")):
            print("  " + line)
        if line.startswith("aptmesh_tracker_peers{"):
            print("  " + line)
    return 0 if with_seed == answers else 1


async def edge_junk_keys(count: int, extra: Sequence[str]) -> None:
    """The edge half: one cached small file asked for with `count` distinct query strings."""
    import json
    import os
    import signal

    from aptmesh.debrepo import SigningKey, build_repo
    from tests.tracker.process import APTMESH, rss

    with tempfile.TemporaryDirectory() as tmp:
        key = SigningKey.generate(Path(tmp) / "gnupg")
        repo = build_repo(Path(tmp) / "repo" / "debian", key, mutable=False)
        repo.server.start()
        process = await asyncio.create_subprocess_exec(
            APTMESH,
            "edge",
            "--http-host=127.0.0.1",
            "--http-port=0",
            "--grpc-bind=127.0.0.1:0",
            "--listen-port=0",
            f"--cache-dir={tmp}/edge",
            f"--upstreams=deb.example.org=http://127.0.0.1:{repo.server.port}",
            f"--keyring={repo.keyring}",
            *extra,
            env=dict(os.environ),
            stderr=asyncio.subprocess.PIPE,
        )
        assert process.stderr is not None
        try:
            while True:
                line = await asyncio.wait_for(process.stderr.readline(), timeout=60)
                if not line:
                    raise SystemExit("the edge exited before it started")
                event = json.loads(line)
                if event.get("event") == "edge_started":
                    break
            drain = asyncio.create_task(process.stderr.read())
            small = repo.package("aptmesh-tiny").filename
            url = f"{event['http']}/deb.example.org/debian/{small}"
            async with aiohttp.ClientSession() as session:
                async with session.get(url) as response:  # cached once, honestly
                    await response.read()
                before, _ = rss(process.pid)
                queue: asyncio.Queue[int] = asyncio.Queue()
                for n in range(count):
                    queue.put_nowait(n)

                async def worker() -> None:
                    while not queue.empty():
                        n = queue.get_nowait()
                        junk = f"?junk={n}-" + "x" * 2000
                        async with session.get(url + junk) as response:
                            await response.read()

                started = time.monotonic()
                await asyncio.gather(*(worker() for _ in range(8)))
                seconds = time.monotonic() - started
            after, peak = rss(process.pid)
        finally:
            process.send_signal(signal.SIGTERM)
            await asyncio.wait_for(process.wait(), timeout=30)
            repo.close()
            key.close()
        drain.cancel()
    print(f"edge: {count} junk-query requests for one cached file in {seconds:.1f} s")
    print(f"edge RSS: before {before / MIB:.1f} MiB, peak {peak / MIB:.1f} MiB, after ", end="")
    print(f"{after / MIB:.1f} MiB (growth {(peak - before) / MIB:.1f} MiB)")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=50_000, help="fake peers to announce")
    parser.add_argument("--sources", type=int, default=1, help="addresses the flood comes from")
    parser.add_argument(
        "--edge", action="store_true", help="also the junk-query load against a real edge"
    )
    parser.add_argument(
        "tracker_args", nargs="*", help="extra `aptmesh tracker` flags, e.g. --max-peers=1000"
    )
    args = parser.parse_args(argv)
    status = asyncio.run(run(args.count, args.sources, args.tracker_args))
    if args.edge:
        asyncio.run(edge_junk_keys(args.count, ()))
    return status


if __name__ == "__main__":
    sys.exit(main())
