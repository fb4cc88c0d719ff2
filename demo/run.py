"""`make run`: a whole mesh on this machine, real apt through it, and what it saved the mirror.

1. Brings a mesh up with the real `aptmesh up` command (tracker, seeder, edge).
2. Waits for the seeder's first sync (it seeds the large packages).
3. Client A, a real `apt-get` with an isolated configuration (nothing of the
   host's apt changes), updates and downloads packages through `mesh+http`.
4. Client B, a second machine in the same site, downloads the same packages.
5. Reports where the bytes came from (swarm, cache, upstream) and what the
   mirror sent, stops the mesh and checks nothing is left running.

Upstream: the Debian mirror and keyring of this machine's apt sources; with
`--offline` (`make run OFFLINE=1`), or when that mirror cannot be reached, a
signed repository built here (the one the test suite uses).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc
from prometheus_client.parser import text_string_to_metric_families

from aptmesh import aptsources
from aptmesh.debrepo import DebRepo, SigningKey, apt_env, build_repo
from aptmesh.v1 import seeder_pb2, seeder_pb2_grpc

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
# Online: two large packages the seeder seeds, two small ones the edge caches.
ONLINE_LARGE = ("git", "git-man")
ONLINE_SMALL = ("hello", "curl")
OFFLINE_LARGE = ("aptmesh-huge", "aptmesh-large")
OFFLINE_SMALL = ("aptmesh-medium", "aptmesh-tiny")


@dataclass
class Upstream:
    url: str
    keyring: Path
    suite: str
    large: tuple[str, ...]
    small: tuple[str, ...]
    description: str


def say(text: str = "") -> None:
    print(text, flush=True)


def mb(n: float) -> str:
    return f"{n / 1e6:.1f} MB"


def reachable(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as reply:  # noqa: S310 - the apt mirror
            return bool(reply.status == 200)
    except OSError:
        return False


@contextmanager
def upstream(work: Path, offline: bool) -> Iterator[Upstream]:
    if not offline:
        mirror = aptsources.debian_mirror(aptsources.read_sources())
        if mirror is None:
            say("No Debian mirror in this machine's apt sources: using a local repository.")
        elif not reachable(f"{mirror.uri}/dists/{mirror.suites[0]}/InRelease"):
            say(f"The mirror {mirror.uri} cannot be reached: using a local repository.")
        else:
            yield Upstream(
                mirror.uri,
                mirror.signed_by or aptsources.DEFAULT_KEYRING,
                mirror.suites[0],
                ONLINE_LARGE,
                ONLINE_SMALL,
                f"{mirror.uri} (this machine's Debian mirror)",
            )
            return
    key = SigningKey.generate(work / "gnupg")
    repo: DebRepo = build_repo(work / "repo" / "debian", key, mutable=False)
    repo.server.start()
    try:
        yield Upstream(
            repo.base_url,
            repo.keyring,
            repo.suite,
            OFFLINE_LARGE,
            OFFLINE_SMALL,
            f"{repo.base_url} (a signed repository built here)",
        )
    finally:
        repo.close()
        key.close()


def wait_for(path: Path, process: subprocess.Popen[bytes], seconds: float) -> dict[str, object]:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"aptmesh up exited with {process.returncode}; see its log above")
        if path.exists():
            data: dict[str, object] = json.loads(path.read_text())
            return data
        time.sleep(0.1)
    raise SystemExit(f"aptmesh up did not write {path} within {seconds:.0f} s")


async def wait_for_sync(target: str, seconds: float) -> seeder_pb2.RepositoryStatus:
    deadline = time.monotonic() + seconds
    async with grpc.aio.insecure_channel(target) as channel:
        stub = seeder_pb2_grpc.SeederServiceStub(channel)
        while time.monotonic() < deadline:
            status = await stub.GetStatus(seeder_pb2.GetStatusRequest(), timeout=5)
            repo = status.repositories[0]
            if repo.HasField("last_sync_time"):
                return repo
            await asyncio.sleep(0.2)
    raise SystemExit(f"the seeder's first sync did not finish within {seconds:.0f} s")


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def metrics(url: str) -> Samples:
    with urllib.request.urlopen(url, timeout=10) as reply:  # noqa: S310 - loopback
        text = reply.read().decode()
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def total(
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **want: str
) -> float:
    return sum(
        value
        for (sample, labels), value in samples.items()
        if sample == name and all(dict(labels).get(k) == v for k, v in want.items())
    )


@dataclass
class MirrorBytes:
    seeder: float
    edge: float

    @property
    def total(self) -> float:
        return self.seeder + self.edge


def mirror_bytes(urls: dict[str, str]) -> MirrorBytes:
    """What the mirror sent so far: the seeder's fetches and the edge's upstream-sourced bytes."""
    seeder, edge = metrics(urls["seeder"]), metrics(urls["edge"])
    return MirrorBytes(
        total(seeder, "aptmesh_seeder_upstream_bytes_total"),
        total(edge, "aptmesh_edge_served_bytes_total", source="upstream"),
    )


def report(edge: Samples, mirror: MirrorBytes, cost_of_b: float) -> None:
    served = {
        source: total(edge, "aptmesh_edge_served_bytes_total", source=source)
        for source in ("swarm", "cache", "upstream")
    }
    say("4. where the bytes the clients got came from (the edge's metrics):")
    say(f"   swarm     {mb(served['swarm']):>9}  the large packages, BitTorrent from the seeder")
    say(f"   upstream  {mb(served['upstream']):>9}  indexes, small packages: mirror, once")
    say(f"   cache     {mb(served['cache']):>9}  everything client-B asked for again")
    say(
        f"   the mirror sent {mb(mirror.total)} in all: the seeder {mb(mirror.seeder)} (indexes,"
        f" large packages once), the edge {mb(mirror.edge)}"
    )
    say(
        f"   client-B cost the mirror {mb(cost_of_b)}: every further client of this site is served"
        " by the edge and the swarm"
    )
    if served["swarm"] <= 0 or served["cache"] <= 0:
        raise SystemExit("expected bytes from both the swarm and the cache; see the log")


def client(name: str, work: Path, up: Upstream, edge_http: str) -> int:
    """One apt client: update and download through mesh+http; returns bytes downloaded."""
    scheme, _, rest = up.url.partition("://")
    source = f"deb [signed-by={up.keyring}] mesh+{scheme}://{rest} {up.suite} main"
    apt = apt_env(
        work / name,
        source,
        {
            "Dir::Bin::Methods::mesh+http": str(BIN / "aptmesh-apt-method"),
            "Acquire::mesh::Edges": edge_http,
        },
    )
    started = time.monotonic()
    apt.run("apt-get", "update", timeout=300)
    downloads = work / name / "downloads"
    downloads.mkdir()
    apt.run("apt-get", "download", *up.large, *up.small, cwd=downloads, timeout=300)
    files = sorted(downloads.iterdir())
    size = sum(f.stat().st_size for f in files)
    say(
        f"   {name}: apt-get update + download of {len(files)} packages ({mb(size)}) "
        f"through mesh+http in {time.monotonic() - started:.1f} s; apt verified every file"
    )
    for f in files:
        digest = hashlib.sha256(f.read_bytes()).hexdigest()[:16]
        say(f"      {f.name:<55} {f.stat().st_size:>10,} B  sha256 {digest}…")
    return size


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--offline", action="store_true", help="use a locally built, signed repository"
    )
    parser.add_argument("--work-dir", type=Path, default=ROOT / ".data" / "run")
    args = parser.parse_args()
    offline = args.offline or os.environ.get("OFFLINE", "") not in ("", "0")
    work: Path = args.work_dir.resolve()
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)

    say("aptmesh demo: a whole mesh on this machine, and real apt through it\n")
    with upstream(work, offline) as up:
        say(f"upstream mirror: {up.description}")
        say(f"1. starting the mesh: aptmesh up --data-dir {work / 'mesh'} --upstream {up.url}")
        log = (work / "aptmesh-up.log").open("wb")
        process = subprocess.Popen(
            [
                str(BIN / "aptmesh"),
                "up",
                "--data-dir",
                str(work / "mesh"),
                "--upstream",
                up.url,
                "--keyring",
                str(up.keyring),
                "--suites",
                up.suite,
                "--include",
                ",".join(up.large),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            endpoints = wait_for(work / "mesh" / "endpoints.json", process, 60)
            edge_http = str(endpoints["edge_http"])
            urls = endpoints["metrics"]
            assert isinstance(urls, dict)
            say(f"   tracker {endpoints['tracker_announce']}, edge {edge_http}")
            say("2. the seeder syncs: verifies InRelease, picks the large packages, seeds them")
            repo = asyncio.run(wait_for_sync(str(endpoints["seeder_grpc"]), 300))
            if not repo.last_sync_ok:
                raise SystemExit(f"the seeder's sync failed: {repo.last_sync_error}")
            say(f"   seeding {repo.packages} packages ({mb(repo.bytes)}): {', '.join(up.large)}")
            say("3. two apt clients of the same site fetch through the edge")
            delivered = client("client-A", work, up, edge_http)
            after_a = mirror_bytes(urls)
            delivered += client("client-B", work, up, edge_http)
            mirror = mirror_bytes(urls)
            report(metrics(urls["edge"]), mirror, mirror.total - after_a.total)
        finally:
            say("5. stopping the mesh (SIGTERM)")
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
            try:
                code = process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                raise SystemExit("aptmesh up did not stop within 30 s") from None
            log.close()
        if code != 0:
            raise SystemExit(f"aptmesh up exited with {code}; log: {work / 'aptmesh-up.log'}")
        say(f"   stopped cleanly; logs in {work / 'aptmesh-up.log'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
