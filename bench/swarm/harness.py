"""The orchestrator: topology, calibration, one distribution per system, the verdict.

Theory of operation. A `BenchRun` owns everything a run creates: the
namespaces (prefix `amb<pid>-`), the worker processes (each in its own
process group), and a temp directory. Leaving its `with` block, an exception,
SIGINT/SIGTERM and interpreter exit (atexit) all end in `close()`, which is
idempotent. For each scenario the run builds the topology once, calibrates
every capped link with a timed TCP transfer (all hosts at once, in a ring,
so each flow meets exactly one upload cap), then distributes the payload
with each system in turn: servers start and report ready, fetchers start and
report ready, then all fetchers get one start instant; the CPU is sampled
from that instant until the last fetcher is done. Files are checked against
their SHA-256 afterwards, off the clock.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import json
import math
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, TextIO

from bench.swarm import bounds, netns, payload, repo
from bench.swarm.cpu import CpuSampler, process_seconds
from bench.swarm.node import BT_PORT, HTTP_PORT

REPO = Path(__file__).resolve().parents[2]
SWARM_MIN_SIZE = 1 << 20  # DESIGN.md: only files of at least 1 MiB are swarmed
# aptmesh-collection: the same mesh, but nobody asks: a collection of every file (defined at
# the start instant) is preheated by the edges; done when each edge reports it complete.
SYSTEMS = ("http", "libtorrent-default", "libtorrent-hps", "aptmesh", "aptmesh-collection")
COLLECTION = "bench-lab"
MBIT = 1e6 / 8
TOKEN = "bench-publish-token"  # noqa: S105 - a throw-away index inside the run
UPSTREAM_NAME = "mirror.bench"
TRACKER_HTTP_PORT = 6969
TRACKER_GRPC_PORT = 50051
SEEDER_HTTP_PORT = 9090
EDGE_HTTP_PORT = 3142


@dataclass(frozen=True)
class Scenario:
    name: str
    origin_up: float  # Mbit/s
    edge_up: float
    edge_down: float | None = None


def scenarios(rate: float) -> dict[str, Scenario]:
    """Seed-bound: every host at `rate`. Peer-bound: the origin 2.5x faster, edges at half."""
    return {
        "seed-bound": Scenario("seed-bound", rate, rate),
        "peer-bound": Scenario("peer-bound", rate * 2.5, rate / 2),
    }


@dataclass(frozen=True)
class BenchConfig:
    edges: int = 6
    file_size: int = 64 << 20
    pulse: bool = False  # a Debian-like pulse of many files instead of one file
    seed: int = 1
    rate: float = 80.0  # Mbit/s, the seed-bound rate
    scenarios: tuple[str, ...] = ("seed-bound", "peer-bound")
    systems: tuple[str, ...] = ("http", "libtorrent-default")
    calib_seconds: float = 1.5
    # libtorrent settings applied to the torrent systems' sessions (levers), recorded with results
    lt_settings: dict[str, Any] = field(default_factory=dict)
    seed_settings: dict[str, Any] = field(default_factory=dict)
    super_seed: bool = False
    sequential: bool = False
    # aptmesh edges report their nominal uplink to the registry (the seeder's queue depth)
    edge_uplinks: bool = True
    # HTTP requests each receiving host's client keeps in flight (apt pipelines up to 10 on one
    # connection; the pulse's time depends on it: bench/swarm/RESULTS.md, round 5)
    client_concurrency: int = 4
    keep_logs: str = ""  # copy the workers' logs here before the temp directory goes
    # `perf record` the edge hosts' receiving processes during each distribution, into
    # this directory (one perf.data per scenario and system); "" for none
    perf_dir: str = ""
    cpu_threshold: float = 0.90
    cpu_max_fraction: float = 0.25


class BenchError(RuntimeError):
    """The run could not measure (a worker failed or the topology could not be built)."""


# --- worker processes ----------------------------------------------------------------------


class Proc:
    """A worker in a namespace; its JSON lines arrive on `events`."""

    def __init__(
        self, host: netns.Host, argv: list[str], log: Path, module: str = "bench.swarm.node"
    ) -> None:
        self.host = host
        self.name = f"{host.name}:{argv[0]}"
        self.service = False  # an `aptmesh` service (stopped by signal), not a bench worker
        self.log = log
        self._stderr = log.open("wb")
        env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"}
        self.popen = subprocess.Popen(
            host.exec_argv(sys.executable, "-m", module, *argv),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
            cwd=REPO,
            env=env,
            start_new_session=True,
        )
        self.events: queue.Queue[dict[str, Any]] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        stdout = self.popen.stdout
        assert stdout is not None
        for line in stdout:
            with contextlib.suppress(json.JSONDecodeError):
                self.events.put(json.loads(line))
        self.events.put({"event": "exit", "code": self.popen.wait()})

    def expect(self, event: str, deadline: float) -> dict[str, Any]:
        while True:
            try:
                got = self.events.get(timeout=max(0.01, deadline - time.time()))
            except queue.Empty:
                raise BenchError(f"{self.name}: no {event!r} in time{self.tail()}") from None
            if got["event"] == event:
                return got
            if got["event"] == "exit":
                raise BenchError(f"{self.name}: exited {got['code']} before {event!r}{self.tail()}")

    def tell(self, line: str) -> None:
        stdin = self.popen.stdin
        if stdin is not None and not stdin.closed:
            with contextlib.suppress(BrokenPipeError, OSError):
                stdin.write(line + "\n")
                stdin.flush()

    def stop(self) -> None:
        stdin = self.popen.stdin
        if stdin is not None and not stdin.closed:
            with contextlib.suppress(BrokenPipeError, OSError):
                stdin.close()

    def kill(self) -> None:
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(3)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait(3)
        self.stop()
        if self.popen.stdout is not None:
            self.popen.stdout.close()
        self._stderr.close()

    def tail(self) -> str:
        with contextlib.suppress(OSError):
            text = self.log.read_text(errors="replace").strip().splitlines()[-8:]
            if text:
                return "\n    " + "\n    ".join(text)
        return ""


# --- the run -------------------------------------------------------------------------------


class BenchRun:
    """Owns the namespaces, processes and files of one run; `close()` removes them."""

    def __init__(self, config: BenchConfig, *, out: TextIO | None = None) -> None:
        self.config = config
        self.prefix = netns.run_prefix()
        self.tmp = Path(tempfile.mkdtemp(prefix=self.prefix)).resolve()
        self.topology: netns.Topology | None = None
        self.procs: list[Proc] = []
        self.out = out
        self._closed = False
        self._previous: dict[int, Any] = {}
        self.files: list[payload.PayloadFile] = []
        self.keyring: Path | None = None

    def __enter__(self) -> BenchRun:
        atexit.register(self.close)
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._on_signal)
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.close()
        raise KeyboardInterrupt(f"signal {signum}")

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for proc in self.procs:
            proc.kill()
        self.procs.clear()
        if self.topology is not None:
            self.topology.close()
        if self.config.keep_logs:
            keep = Path(self.config.keep_logs)
            keep.mkdir(parents=True, exist_ok=True)
            for log in self.tmp.glob("*.log"):
                shutil.copy(log, keep / log.name)
        netns.cleanup(self.prefix)
        shutil.rmtree(self.tmp, ignore_errors=True)
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        atexit.unregister(self.close)

    # -- building blocks --

    def start(self, host: netns.Host, *argv: str) -> Proc:
        proc = Proc(host, list(argv), self.tmp / f"{host.name}-{argv[0]}-{len(self.procs)}.log")
        self.procs.append(proc)
        return proc

    def service(self, host: netns.Host, *argv: str) -> Proc:
        """A real `aptmesh` service (its stdout is logs, not events; stopped by signal)."""
        log = self.tmp / f"{host.name}-aptmesh-{argv[0]}-{len(self.procs)}.log"
        proc = Proc(host, list(argv), log, module="aptmesh_cli")
        proc.service = True
        self.procs.append(proc)
        return proc

    def stop_services(self) -> None:
        """Stops every `aptmesh` service this run started (tracker, seeder, edges)."""
        for proc in [p for p in self.procs if p.service]:
            proc.kill()
            self.procs.remove(proc)

    def finish(self, *procs: Proc, timeout: float = 20.0) -> list[dict[str, Any]]:
        for proc in procs:
            proc.stop()
        deadline = time.time() + timeout
        finals = [proc.expect("final", deadline) for proc in procs]
        for proc in procs:
            proc.kill()
            self.procs.remove(proc)
        return finals

    def build(self, scenario: Scenario) -> netns.Topology:
        if self.topology is not None:
            self.topology.close()
        topo = netns.Topology(self.prefix)
        self.topology = topo
        topo.build_switch()
        topo.add_host("origin", scenario.origin_up, None)
        for i in range(self.config.edges):
            topo.add_host(f"e{i}", scenario.edge_up, scenario.edge_down)
        topo.add_host("sink", None, None)  # calibration's far end only
        return topo

    def make_payload(self) -> None:
        root = self.tmp / "mirror"
        cfg = self.config
        if cfg.pulse:
            self.files = payload.pulse(root, cfg.file_size, cfg.seed)
        else:
            self.files = payload.single(root, cfg.file_size, cfg.seed)
        from aptmesh.torrent import make_torrent

        manifest = []
        for item in self.files:
            torrent = None
            if item.size >= SWARM_MIN_SIZE:
                made = make_torrent(root / item.path)
                path = self.tmp / "torrents" / f"{made.torrent.info_hash_v1}.torrent"
                path.parent.mkdir(exist_ok=True)
                path.write_bytes(made.torrent.metainfo)
                torrent = str(path)
            manifest.append(
                {"path": item.path, "size": item.size, "torrent": torrent, "sha256": item.sha256}
            )
        (self.tmp / "manifest.json").write_text(json.dumps(manifest))
        if any(system.startswith("aptmesh") for system in cfg.systems):
            self.keyring = repo.write(root, self.files, self.tmp / "gnupg")
            repo.stop_agent(self.tmp / "gnupg")
        (self.tmp / "manifest-http.json").write_text(
            json.dumps([{**m, "torrent": None} for m in manifest])
        )

    @property
    def total_size(self) -> int:
        return sum(f.size for f in self.files)

    def pieces(self) -> int:
        from aptmesh.torrent import piece_length_for

        return sum(
            math.ceil(f.size / piece_length_for(f.size))
            for f in self.files
            if f.size >= SWARM_MIN_SIZE
        )

    def calibrate(self, topo: netns.Topology) -> dict[str, dict[str, float]]:
        """Goodput of every capped direction, measured (bytes/s); inf where uncapped.

        All flows run at once, to or from the uncapped "sink" host: each flow
        meets exactly one cap, and its ACKs never queue behind another flow.
        """
        sink = topo.hosts["sink"]
        hosts = [h for h in topo.hosts.values() if h is not sink]
        seconds = self.config.calib_seconds
        up = {h.name: math.inf for h in hosts}
        down = {h.name: math.inf for h in hosts}
        senders = [h for h in hosts if h.up_mbit]
        for host, got in zip(
            senders, self._flows([(h, sink) for h in senders], seconds), strict=True
        ):
            up[host.name] = got
        capped = [h for h in hosts if h.down_mbit]
        for host, got in zip(
            capped, self._flows([(sink, h) for h in capped], seconds), strict=True
        ):
            down[host.name] = got
        return {"up": up, "down": down}

    def _flows(self, pairs: list[tuple[netns.Host, netns.Host]], seconds: float) -> list[float]:
        warmup = 0.5
        deadline = time.time() + 20
        receivers = [
            self.start(
                r,
                "calib-recv",
                "--bind",
                r.address,
                "--port",
                str(5201 + i),
                "--seconds",
                str(seconds),
                "--warmup",
                str(warmup),
            )  # fmt: skip
            for i, (_, r) in enumerate(pairs)
        ]
        for proc in receivers:
            proc.expect("ready", deadline)
        senders = [
            self.start(
                s,
                "calib-send",
                "--to",
                r.address,
                "--port",
                str(5201 + i),
                "--seconds",
                str(seconds + warmup + 0.3),
            )  # fmt: skip
            for i, (s, r) in enumerate(pairs)
        ]
        for proc in senders:
            proc.expect("ready", deadline)
        start_at = repr(time.time() + 0.1)
        for proc in receivers + senders:
            proc.tell(start_at)
        deadline = time.time() + seconds + warmup + 15
        results = [float(p.expect("final", deadline)["goodput"]) for p in receivers]
        self.finish(*senders)
        for proc in receivers:
            proc.kill()
            self.procs.remove(proc)
        return results

    # -- one distribution --

    def distribute(
        self, topo: netns.Topology, scenario: Scenario, system: str, rates: dict[str, Any]
    ) -> dict[str, Any]:
        cfg = self.config
        origin = topo.hosts["origin"]
        edges = [h for n, h in topo.hosts.items() if n.startswith("e")]
        mirror_root = self.tmp / "mirror"
        mirror_url = f"http://{origin.address}:{HTTP_PORT}"
        deadline = time.time() + 30
        mirror = self.start(
            origin, "mirror", "--bind", origin.address, "--port", str(HTTP_PORT),
            "--root", str(mirror_root),
        )  # fmt: skip
        servers = [mirror]
        settings: dict[str, Any] = {}
        manifest = str(self.tmp / "manifest.json")
        saves = [self.tmp / f"{system}-{e.name}" for e in edges]
        fetchers: list[Proc] = []
        if system == "http":
            for edge, save in zip(edges, saves, strict=True):
                fetchers.append(
                    self.start(
                        edge,
                        "http-get",
                        "--base",
                        mirror_url,
                        "--manifest",
                        str(self.tmp / "manifest-http.json"),
                        "--save",
                        str(save),
                        "--concurrency",
                        str(cfg.client_concurrency),
                    )  # fmt: skip
                )
            settings = {"client": f"aiohttp, {cfg.client_concurrency} connections per edge"}
        elif system in ("libtorrent-default", "libtorrent-hps"):
            seed_role, peer_role = ("plain", "plain")
            if system == "libtorrent-hps":
                seed_role, peer_role = ("seeder", "edge")
            seed_settings = {**cfg.lt_settings, **cfg.seed_settings}
            seed_argv = [
                "lt-seed", "--bind", origin.address, "--root", str(mirror_root),
                "--manifest", manifest, "--lt-role", seed_role,
            ]  # fmt: skip
            if seed_settings:
                seed_argv += ["--settings", json.dumps(seed_settings)]
            if cfg.super_seed:
                seed_argv.append("--super-seed")
            servers.append(self.start(origin, *seed_argv))
            peers = ",".join(h.address for h in [origin, *edges])
            for edge, save in zip(edges, saves, strict=True):
                argv = [
                    "lt-leech", "--bind", edge.address, "--manifest", manifest,
                    "--save", str(save), "--peers", peers, "--mirror", mirror_url,
                    "--lt-role", peer_role, "--concurrency", str(cfg.client_concurrency),
                ]  # fmt: skip
                if cfg.lt_settings:
                    argv += ["--settings", json.dumps(cfg.lt_settings)]
                if cfg.sequential:
                    argv.append("--sequential")
                fetchers.append(self.start(edge, *argv))
            settings = {
                "seed_role": seed_role,
                "peer_role": peer_role,
                "peers": "connect_peer full mesh",
                "super_seed": cfg.super_seed,
                "sequential": cfg.sequential,
                "lt_settings": cfg.lt_settings,
                "seed_settings": cfg.seed_settings,
                "client_concurrency": cfg.client_concurrency,
            }
        elif system in ("aptmesh", "aptmesh-collection"):
            collection = system == "aptmesh-collection"
            servers += self._aptmesh_servers(origin, mirror_url, len(edges))
            for i, (edge, save) in enumerate(zip(edges, saves, strict=True)):
                fetchers.append(
                    self._aptmesh_edge(
                        origin, edge, save, mirror_url, len(edges), collection, define=i == 0
                    )
                )
            # Counted from now: the seeder's first sync (above) can take most of the 30 s, and
            # then edges start, register, and the seeder sees them (it looks every 5 s).
            deadline = time.time() + 90
            settings = {
                "services": "aptmesh tracker + seeder (local mirror dir, webseed = mirror) on the "
                "origin host; aptmesh edge per edge host, "
                + (
                    f"preheating collection {COLLECTION} (every file, section misc, defined at "
                    "the start; edges poll every 0.5 s)"
                    if collection
                    else "its client fetching every file through it"
                ),
                "upstream": UPSTREAM_NAME,
                "seeder_upload_capacity": int(origin.up_mbit * MBIT) if origin.up_mbit else 0,
                "edge_upload_capacity": self._edge_uplink(edges[0]),
                "client_concurrency": cfg.client_concurrency,
            }
        else:
            raise BenchError(f"unknown system {system!r}")
        for proc in servers + fetchers:
            proc.expect("ready", deadline)
        accounted = self._cpu_roles()
        cpu_before = {proc: process_seconds(proc.popen.pid) for proc in accounted}
        recorder = self._perf_record(
            f"{scenario.name}-{system}", [p for p, role in accounted.items() if role == "edge"]
        )
        wire_before = topo.sent_bytes("origin")
        start_at = time.time() + 0.3
        for proc in fetchers:
            proc.tell(repr(start_at))
        t_kr = float(rates["t_kr"])
        budget = max(20.0, 3 * float(rates["t_cs"]) + 10)
        done: list[dict[str, Any] | None] = []
        sampler = CpuSampler(threshold=cfg.cpu_threshold, max_fraction=cfg.cpu_max_fraction)
        with sampler:
            for proc in fetchers:
                try:
                    done.append(proc.expect("done", start_at + budget))
                except BenchError:
                    done.append(None)
        origin_wire = topo.sent_bytes("origin") - wire_before
        cpu_by_role = self._cpu_spent(accounted, cpu_before)
        if recorder is not None:
            recorder.send_signal(signal.SIGINT)
            recorder.wait(30)
        finals = self.finish(*servers)
        edge_finals = self.finish(*fetchers)
        self.stop_services()  # else they keep the ports (and seed the file) for the next system
        mirror_final = finals[0]
        seed_up = sum(int(f.get("uploaded", 0)) for f in finals[1:])
        bytes_ok = [self._verify(save) for save in saves]
        for save in saves:
            shutil.rmtree(save, ignore_errors=True)
        t_finish = [None if d is None else round(float(d["t"]), 3) for d in done]
        finished = [t for t in t_finish if t is not None]
        t_last = max(finished) if len(finished) == len(edges) else None
        cpu = sampler.verdict()
        size = self.total_size
        reasons = []
        if t_last is None:
            reasons.append("not every edge finished")
        if not all(bytes_ok):
            reasons.append("an edge's bytes differ from the mirror's")
        if not cpu.valid:
            reasons.append(
                f"CPU-bound: >{cfg.cpu_threshold:.0%} busy in {cpu.busy_fraction:.0%} of samples"
            )
        if not rates["calibration_ok"]:
            reasons.append("calibration below 80% of nominal")
        mirror_bytes = int(mirror_final["bytes_to_others"])
        return {
            "scenario": scenario.name,
            "system": system,
            "N": len(edges),
            "F": size,
            "files": len(self.files),
            "pieces": self.pieces(),
            "u_s_nominal_mbit": scenario.origin_up,
            "u_i_nominal_mbit": scenario.edge_up,
            "d_i_nominal_mbit": scenario.edge_down,
            "u_s_eff": rates["u_s_eff"],
            "u_i_eff": rates["u_i_eff"],
            "d_i_eff": rates["d_i_eff"],
            "t_kr": round(t_kr, 3),
            "t_mundinger": round(float(rates["t_mundinger"]), 3),
            "t_cs": round(float(rates["t_cs"]), 3),
            "t_finish": t_finish,
            "t_last": t_last,
            "ratio": None if t_last is None else round(t_last / t_kr, 3),
            "ratio_mundinger": None
            if t_last is None
            else round(t_last / float(rates["t_mundinger"]), 3),
            "mirror_bytes": mirror_bytes,
            "mirror_bytes_ratio": round(mirror_bytes / size, 3),
            "seed_bytes": seed_up,
            "seed_bytes_ratio": round(seed_up / size, 3),
            "origin_bytes_ratio": round((mirror_bytes + seed_up) / size, 3),
            "origin_wire_bytes": origin_wire,
            "edge_upload_bytes": [int(f.get("uploaded", 0)) for f in edge_finals],
            "bytes_ok": all(bytes_ok),
            "cpu_peak": round(cpu.peak, 3),
            "cpu_mean": round(cpu.mean, 3),
            "cpu_busy_fraction": round(cpu.busy_fraction, 3),
            # CPU seconds each kind of process spent from just before the start instant (all
            # ready) to the last finish, summed over hosts, and per GB (1e9 bytes) the edges
            # received in all
            "cpu_seconds": cpu_by_role,
            "cpu_seconds_per_gb": {
                role: round(seconds / (len(edges) * size / 1e9), 2)
                for role, seconds in cpu_by_role.items()
            },
            "valid": not reasons,
            "invalid_reasons": reasons,
            "settings": settings,
            "seed": cfg.seed,
            "pulse": cfg.pulse,
        }

    def _cpu_roles(self) -> dict[Proc, str]:
        """The processes whose CPU a distribution accounts, each with its role: `edge` is
        what receives on an edge host and serves its client there (an aptmesh edge, a
        stock libtorrent leecher, nothing for plain HTTP), `client` the fetching client
        (the aptmesh edge's HTTP client, the HTTP system's client), `origin` the rest."""
        roles = {}
        for proc in self.procs:
            kind = proc.name.split(":", 1)[1]
            if not proc.host.name.startswith("e"):
                roles[proc] = "origin"
            elif kind in ("edge", "lt-leech"):
                roles[proc] = "edge"
            elif kind in ("edge-get", "http-get"):
                roles[proc] = "client"
        return roles

    def _perf_record(self, name: str, procs: list[Proc]) -> subprocess.Popen[bytes] | None:
        if not self.config.perf_dir or not procs:
            return None
        out = Path(self.config.perf_dir)
        out.mkdir(parents=True, exist_ok=True)
        pids = ",".join(str(p.popen.pid) for p in procs)
        return subprocess.Popen(
            ["perf", "record", "-F", "999", "-g", "-o", str(out / f"{name}.perf.data"), "-p", pids],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    @staticmethod
    def _cpu_spent(roles: dict[Proc, str], before: dict[Proc, float | None]) -> dict[str, float]:
        spent: dict[str, float] = {}
        for proc, role in roles.items():
            start, end = before[proc], process_seconds(proc.popen.pid)
            if start is not None and end is not None:
                spent[role] = round(spent.get(role, 0.0) + end - start, 2)
        return spent

    def _aptmesh_servers(self, origin: netns.Host, mirror_url: str, edges: int) -> list[Proc]:
        """Tracker and seeder on the origin host; returns the servers that report at the end:
        the seeder's scraper, ready once the seeder has seen the `edges` edges registered (a
        pulse reaches a site whose seeder has looked at the registry since its edges came)."""
        if self.keyring is None:
            raise BenchError("the aptmesh system needs the signed repository (make_payload)")
        state = self.tmp / "aptmesh-origin"
        shutil.rmtree(state, ignore_errors=True)
        state.mkdir()
        grpc = f"{origin.address}:{TRACKER_GRPC_PORT}"
        tracker = self.service(
            origin, "tracker", "--http-host", origin.address, "--http-port", str(TRACKER_HTTP_PORT),
            "--grpc-bind", grpc, "--db-path", str(state / "tracker.sqlite3"),
            "--publish-token", TOKEN, "--min-interval", "1",
        )  # fmt: skip
        seeder = self.service(
            origin, "seeder",
            "--repositories",
            f"bench={self.tmp / 'mirror'};suites={repo.SUITE};architectures=amd64;"
            f"webseed={mirror_url}/",
            "--keyring", str(self.keyring), "--data-dir", str(state / "seeder"),
            "--tracker-grpc", grpc, "--tracker-announce", self._announce(origin),
            "--publish-token", TOKEN, "--grpc-bind", "127.0.0.1:0",
            "--http-host", "127.0.0.1", "--http-port", str(SEEDER_HTTP_PORT),
            "--listen-host", origin.address, "--listen-port", str(BT_PORT),
            "--poll-interval", "3600",
            "--upload-capacity", str(int(origin.up_mbit * MBIT)) if origin.up_mbit else "0",
            "--seed-box-id", origin.name,
        )  # fmt: skip
        waiter = self.start(
            origin, "wait-index", "--to", grpc, "--manifest", str(self.tmp / "manifest.json"),
            "--seconds", "120",
        )  # fmt: skip
        try:
            self.finish(waiter, timeout=130)
        except BenchError as exc:
            raise BenchError(
                f"{exc}\n  tracker:{tracker.tail()}\n  seeder:{seeder.tail()}"
            ) from None
        return [
            self.start(
                origin,
                "scrape",
                "--base",
                f"http://127.0.0.1:{SEEDER_HTTP_PORT}/metrics",
                "--site-edges",
                str(edges),
            )  # fmt: skip
        ]

    def _edge_uplink(self, edge: netns.Host) -> int:
        """What an aptmesh edge reports as its uplink: its nominal cap (0: unknown)."""
        return int(edge.up_mbit * MBIT) if edge.up_mbit and self.config.edge_uplinks else 0

    def _announce(self, origin: netns.Host) -> str:
        return f"http://{origin.address}:{TRACKER_HTTP_PORT}/announce"

    def _aptmesh_edge(
        self,
        origin: netns.Host,
        edge: netns.Host,
        save: Path,
        mirror_url: str,
        edges: int,
        collection: bool = False,
        *,
        define: bool = False,
    ) -> Proc:
        """An aptmesh edge and its client, ready once the edge lists all `edges` edges; with
        `collection`, the client only waits for the edge to hold the collection (the first
        one defines it at the start instant)."""
        cache = self.tmp / f"aptmesh-{edge.name}"
        shutil.rmtree(cache, ignore_errors=True)
        url = f"http://{edge.address}:{EDGE_HTTP_PORT}"
        extra = ["--collection-poll-seconds", "0.5"] if collection else []
        self.service(
            edge, "edge", "--http-host", edge.address, "--http-port", str(EDGE_HTTP_PORT),
            "--grpc-bind", f"{edge.address}:{TRACKER_GRPC_PORT}", "--cache-dir", str(cache),
            "--upstreams", f"{UPSTREAM_NAME}={mirror_url}", "--keyring", str(self.keyring),
            "--tracker-grpc", f"{origin.address}:{TRACKER_GRPC_PORT}",
            "--tracker-announce", self._announce(origin), "--publish-token", TOKEN,
            "--edge-id", edge.name, "--public-url", url, "--listen-port", str(BT_PORT),
            "--upload-capacity", str(self._edge_uplink(edge)), *extra,
        )  # fmt: skip
        if collection:
            return self.start(
                edge, "edge-preheat", "--edge", url, "--upstream", UPSTREAM_NAME,
                "--manifest", str(self.tmp / "manifest-http.json"), "--save", str(save),
                "--site-edges", str(edges), "--concurrency", str(self.config.client_concurrency),
                "--to", f"{origin.address}:{TRACKER_GRPC_PORT}", "--token", TOKEN,
                "--collection", COLLECTION, *(["--define"] if define else []),
            )  # fmt: skip
        return self.start(
            edge, "edge-get", "--edge", url, "--upstream", UPSTREAM_NAME,
            "--indexes", f"{repo.INRELEASE},{repo.PACKAGES}.xz",
            "--manifest", str(self.tmp / "manifest-http.json"), "--save", str(save),
            "--site-edges", str(edges), "--concurrency", str(self.config.client_concurrency),
        )  # fmt: skip

    def _verify(self, save: Path) -> bool:
        for item in self.files:
            path = save / item.path
            if not path.is_file() or path.stat().st_size != item.size:
                return False
            digest = hashlib.sha256()
            with path.open("rb") as stream:
                while chunk := stream.read(1 << 20):
                    digest.update(chunk)
            if digest.hexdigest() != item.sha256:
                return False
        return True

    def rates(self, scenario: Scenario, calibration: dict[str, dict[str, float]]) -> dict[str, Any]:
        up, down = calibration["up"], calibration["down"]
        edges = [n for n in up if n != "origin"]
        size = self.total_size
        u_s = up["origin"]
        u_i = [up[n] for n in edges]
        d_i = [down[n] for n in edges]
        t_kr = bounds.kumar_ross(size, u_s, u_i, d_i)
        nominal = [scenario.origin_up] + [scenario.edge_up] * len(edges)
        measured = [u_s, *u_i]
        ok = all(m >= 0.8 * n * MBIT for m, n in zip(measured, nominal, strict=True))
        return {
            "u_s_eff": round(u_s),
            "u_i_eff": [round(u) for u in u_i],
            "d_i_eff": [None if math.isinf(d) else round(d) for d in d_i],
            "t_kr": t_kr,
            "t_mundinger": bounds.mundinger(t_kr, len(edges), max(1, self.pieces())),
            "t_cs": bounds.client_server(size, u_s, len(edges), d_i),
            "calibration_ok": ok,
        }

    def run(self, emit: Callable[[dict[str, Any]], None]) -> list[dict[str, Any]]:
        if not self.files:
            self.make_payload()
        results = []
        table = scenarios(self.config.rate)
        for name in self.config.scenarios:
            scenario = table[name]
            topo = self.build(scenario)
            rates = self.rates(scenario, self.calibrate(topo))
            for system in self.config.systems:
                result = self.distribute(topo, scenario, system, rates)
                emit(result)
                results.append(result)
        return results


@contextlib.contextmanager
def bench_run(config: BenchConfig) -> Iterator[BenchRun]:
    with BenchRun(config) as run:
        yield run


def config_record(config: BenchConfig) -> dict[str, Any]:
    return asdict(config)
