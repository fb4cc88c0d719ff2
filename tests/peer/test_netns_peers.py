"""Home peers in network namespaces with rate caps (issue 18's "Done means").

The swarm benchmark's namespaces (bench/swarm/netns.py, bench/swarm/harness.py's run that
owns and removes them): on the origin host the mirror, the tracker and the seeder (upload
capped by HTB); three hosts each running a real `aptmesh peer` (`python -m aptmesh_cli peer`):

- `pa` contributes, with an upload cap of `CAP` (libtorrent's, the user's limit);
- `pb` is download only;
- both fetch the large package first (from the seeder and each other), then `pc` (download
  only) fetches it from the seeder and whoever seeds it.

Checked: `pa`'s upload rate while `pc` fetches, measured on its veth (wire bytes, what the
user's link carries, so the headers around the payload too), stays within its cap +10 %;
`pa` uploaded a real share (so the cap bound); `pb` and `pc` uploaded 0 payload bytes
(their counters) and `pb` almost nothing on the wire; every copy has the index's SHA-256;
`pc` completes. Then an opted-out peer in its own namespace holds no UDP socket and listens
on loopback only (`ss -ltnup` by its pid), and real apt-get update and install
--download-only through it work with apt's default sandbox (its methods as _apt).

Runs as root (CI does): about 25 s and 5 s on the shared 2-core machine (the first mostly
the seeder's first sync and the capped fetches), each bounded by a deadline.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import threading
import time
from pathlib import Path

import pytest

from aptmesh.debrepo import apt_env
from bench.swarm import netns
from bench.swarm.harness import (
    UPSTREAM_NAME,
    BenchConfig,
    BenchRun,
    Proc,
)
from bench.swarm.node import BT_PORT, HTTP_PORT
from bench.swarm.repo import INRELEASE, PACKAGES

pytestmark = [pytest.mark.root, pytest.mark.integration]
MiB = 1 << 20
SIZE = 6 * MiB
CAP = 1 * MiB  # pa's upload cap, bytes per second
WIRE_PER_PAYLOAD = 1514 / 1448  # a full TCP segment's frame on the veth per payload byte
ORIGIN_MBIT = 8.0  # the seeder's uplink: slow enough that pa's share matters
LINK_MBIT = 40.0  # every peer's link, both ways: well above CAP, so the cap is what binds
PEER_HTTP = 3142
DEADLINE = 150.0  # seconds for the whole test; every wait below is inside it


@pytest.fixture(autouse=True)
def _root() -> None:
    if os.geteuid() != 0:
        pytest.fail("the namespaces need root (ip netns, tc); CI runs as root")


class Sampler:
    """The wire bytes a host sent (its veth's HTB qdisc counter), sampled every 0.2 s."""

    def __init__(self, topo: netns.Topology, host: str) -> None:
        self.topo, self.host = topo, host
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append((time.monotonic(), self.topo.sent_bytes(self.host)))
            self._stop.wait(0.2)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.samples.append((time.monotonic(), self.topo.sent_bytes(self.host)))

    def sent(self) -> int:
        return self.samples[-1][1] - self.samples[0][1]

    def rate(self) -> float:
        """The upload rate: the least-squares slope of the sent-bytes curve from the sample
        before the first byte to the end. libtorrent's limiter hands out quota in ticks, so
        the curve is a staircase; the slope measures it without the fence-post error of
        bytes over a window (a 2 s window can hold three 1 s steps)."""
        first = next(i for i, (_, b) in enumerate(self.samples) if b > self.samples[0][1])
        points = self.samples[max(0, first - 1) :]
        n = len(points)
        mt = sum(t for t, _ in points) / n
        mb = sum(b for _, b in points) / n
        var = sum((t - mt) ** 2 for t, _ in points)
        return sum((t - mt) * (b - mb) for t, b in points) / var


def start_peer(run: BenchRun, host: netns.Host, origin: netns.Host, **options: str) -> Proc:
    assert run.keyring is not None
    state = run.tmp / f"peer-{host.name}"
    (state / "archives").mkdir(parents=True)
    argv = {
        "http-port": str(PEER_HTTP),
        "upstreams": f"{UPSTREAM_NAME}=http://{origin.address}:{HTTP_PORT}",
        "keyring": str(run.keyring),
        "tracker-grpc": f"{origin.address}:50051",
        "tracker-announce": f"http://{origin.address}:6969/announce",
        "listen-port": str(BT_PORT),
        "state-dir": str(state / "state"),
        "cache-dir": str(state / "cache"),
        "apt-archives": str(state / "archives"),
        "log-format": "json",
        **options,
    }
    return run.service(host, "peer", *(x for k, v in argv.items() for x in (f"--{k}", v)))


def fetch(run: BenchRun, host: netns.Host) -> Proc:
    """The bench's apt-like client of the peer on the host's loopback: indexes, then files."""
    return run.start(
        host, "edge-get", "--edge", f"http://127.0.0.1:{PEER_HTTP}", "--upstream", UPSTREAM_NAME,
        "--indexes", f"{INRELEASE},{PACKAGES}.xz", "--manifest", str(run.tmp / "manifest.json"),
        "--save", str(run.tmp / f"got-{host.name}"), "--site-edges", "0", "--concurrency", "2",
    )  # fmt: skip


def go(*clients: Proc, deadline: float) -> None:
    """Waits for the clients' `ready`, starts them at one instant, returns once all are done
    (their `final`, with the peer's counters, comes when the run finishes them)."""
    for client in clients:
        client.expect("ready", deadline)
    start_at = time.time() + 0.2
    for client in clients:
        client.tell(repr(start_at))
    for client in clients:
        client.expect("done", deadline)


def listening(host: netns.Host, pid: int) -> list[str]:
    """`ss -ltnup` lines (TCP and UDP, listening) of the sockets process `pid` holds."""
    out = subprocess.run(
        host.exec_argv("ss", "-ltnupH"), capture_output=True, text=True, check=True
    ).stdout
    return [line for line in out.splitlines() if re.search(rf"pid={pid},", line)]


def test_capped_and_download_only_peers_keep_their_limits_in_a_rate_capped_swarm() -> None:
    deadline = time.time() + DEADLINE
    config = BenchConfig(edges=0, file_size=SIZE, systems=("aptmesh",), edge_uplinks=False)
    with BenchRun(config) as run:
        run.make_payload()
        [big] = run.files
        topo = netns.Topology(run.prefix)
        run.topology = topo
        topo.build_switch()
        origin = topo.add_host("origin", ORIGIN_MBIT, None)
        pa, pb, pc = (topo.add_host(n, LINK_MBIT, LINK_MBIT) for n in ("pa", "pb", "pc"))
        run.start(
            origin, "mirror", "--bind", origin.address, "--port", str(HTTP_PORT),
            "--root", str(run.tmp / "mirror"),
        )  # fmt: skip
        run._aptmesh_servers(origin, f"http://{origin.address}:{HTTP_PORT}", 0)
        start_peer(run, pa, origin, participation="contribute", **{"upload-rate-limit": str(CAP)})
        start_peer(run, pb, origin, participation="download-only")
        start_peer(run, pc, origin, participation="download-only")

        clients = [fetch(run, host) for host in (pa, pb, pc)]
        go(*clients[:2], deadline=deadline)
        with Sampler(topo, "pa") as sent_a, Sampler(topo, "pb") as sent_b:
            go(clients[2], deadline=deadline)
        final_a, final_b, final_c = run.finish(*clients, timeout=max(1.0, deadline - time.time()))
        # Every copy verifies and pc completed.
        for name in ("pa", "pb", "pc"):
            assert run._verify(run.tmp / f"got-{name}"), name
        assert final_c["downloaded"] == big.size
        # The download-only peers sent no payload, by their own counters and on the wire (pb
        # sent only requests and ACKs while pc fetched).
        assert final_b["uploaded"] == 0 and final_c["uploaded"] == 0, (final_b, final_c)
        assert sent_b.sent() < 64 * 1024, sent_b.sent()
        # pa shared (with pb, then pc) and its wire rate while pc fetched kept its cap.
        rate = sent_a.rate()
        print(f"pa: {final_a['uploaded']} B payload up; {sent_a.sent()} B on the wire while "
              f"pc fetched, at {rate / MiB:.2f} MiB/s (cap {CAP / MiB:.2f})")  # fmt: skip
        assert final_a["uploaded"] >= SIZE // 4
        assert sent_a.sent() >= SIZE // 4  # a real share of pc's copy: the cap bound
        # The cap binds payload; the veth counts the frames around it too (TCP, IP and
        # Ethernet headers: 1514 bytes on the wire per 1448 of payload).
        assert rate <= 1.1 * CAP * WIRE_PER_PAYLOAD, (
            f"{rate / MiB:.2f} MiB/s on the wire over a {CAP / MiB:.2f} MiB/s cap"
        )


def test_an_opted_out_peer_listens_on_no_port_and_apt_through_it_works() -> None:
    """In its own namespace (so `ss` sees only this run's sockets): the opted-out peer's
    process listens on loopback only and holds no UDP socket (no DHT, no BitTorrent); real
    apt-get update and install --download-only through it, as the proxy, succeed with the
    methods sandboxed as _apt."""
    deadline = time.time() + 60
    config = BenchConfig(edges=0, file_size=2 * MiB, systems=("aptmesh",))
    with BenchRun(config) as run:
        run.make_payload()
        [big] = run.files
        topo = netns.Topology(run.prefix)
        run.topology = topo
        topo.build_switch()
        origin = topo.add_host("origin", None, None)
        po = topo.add_host("po", LINK_MBIT, LINK_MBIT)
        run.start(
            origin, "mirror", "--bind", origin.address, "--port", str(HTTP_PORT),
            "--root", str(run.tmp / "mirror"),
        )  # fmt: skip
        peer = start_peer(run, po, origin, participation="opted-out")
        pid = peer.popen.pid  # `ip netns exec` execs the Python process: the same pid
        while not any(f"127.0.0.1:{PEER_HTTP}" in line for line in listening(po, pid)):
            assert peer.popen.poll() is None, peer.tail()
            assert time.time() < deadline, f"the peer never listened{peer.tail()}"
            time.sleep(0.1)
        sockets = listening(po, pid)
        # TCP only (no UDP: no DHT, no uTP), every one on loopback: apt's HTTP port and the
        # edge's gRPC server, which start() always opens (on 127.0.0.1:0 for a peer).
        local = {line.split()[4].rsplit(":", 1)[0] for line in sockets}
        assert {line.split()[0] for line in sockets} == {"tcp"}, sockets
        assert local <= {"127.0.0.1", "[::ffff:127.0.0.1]", "[::1]"}, sockets
        assert len(sockets) == 2, sockets

        # apt with its default sandbox: its methods run as _apt, so what they read (the apt
        # root, the keyring) is readable by all, as under /etc and /var.
        assert run.keyring is not None
        run.tmp.chmod(0o755)
        keyring = run.tmp / "apt-keyring.gpg"
        keyring.write_bytes(run.keyring.read_bytes())
        keyring.chmod(0o644)
        line = f"deb [signed-by={keyring}] http://{UPSTREAM_NAME}/ stable main"
        settings = {
            "Acquire::http::Proxy": f"http://127.0.0.1:{PEER_HTTP}",
            "APT::Sandbox::User": "_apt",
        }
        apt = apt_env(run.tmp / "apt", line, settings)
        archive = apt.root / "var/cache/apt/archives"
        package = Path(big.path).name.split("_")[0]
        for argv in (("update",), ("install", "-y", "--download-only", package)):
            done = subprocess.run(
                po.exec_argv("apt-get", *apt.options, *argv), capture_output=True, text=True,
                env=apt.env, cwd=archive, timeout=max(1.0, deadline - time.time()),
            )  # fmt: skip
            assert done.returncode == 0 and "E:" not in done.stderr, done.stderr
            assert "unsandboxed" not in done.stderr, done.stderr  # the methods ran as _apt
        [got] = archive.glob("*.deb")
        assert hashlib.sha256(got.read_bytes()).hexdigest() == big.sha256
        assert listening(po, pid) == sockets  # fetching opened nothing new
