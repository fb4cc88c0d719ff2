"""The fault drills' mesh and measures: real services as separate processes, real apt, a checker.

Theory of operation. A `DrillMesh` runs `aptmesh tracker` (127.0.0.2),
`aptmesh seeder` (127.0.0.3) and two or more `aptmesh edge` (127.0.0.4 and
up) as separate process groups over the signed test repository (the mirror,
127.0.0.1). Every port is chosen once (below the ephemeral range,
`drill_port`), so a service killed with SIGKILL comes back (`restart`) where
the others expect it, on the same data or cache directory. A drill injects
one fault while `apt-get` runs go through the proxy line and through
`mesh+http` (`run_apts`), and ends with the checker (`corrupt_entries`):
every file in an edge's cache (`blobs/sha256/xx/<sha256>`) and in the
seeder's data directory (`files/xx/<sha256>`) is hashed and must be a file
the signed index names, under its own SHA-256. A drill's `Row` is what `make
drills` prints: runs, apt failures, hung runs, corrupt bytes completed to
clients, corrupt cache or seed entries, and the recovery time it measured.

Bounded everywhere: counts come from the caller (`Size`), every wait has a
deadline, a hung apt run is one that outlives `APT_TIMEOUT` and is killed.
"""

from __future__ import annotations

import contextlib
import hashlib
import random
import secrets
import signal
import socket
import subprocess
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

from aptmesh import bencode
from aptmesh.debian import load_packages, parse_release, verify_inrelease
from aptmesh.debrepo import AptEnv, DebRepo, RepoPackage
from aptmesh.torrent import make_torrent
from tests.fixtures.mesh import (
    APTMESH,
    DEADLINE,
    Metrics,
    Proc,
    http_get,
    mesh_apt,
    proxy_apt,
    scrape,
    spawn,
    wait_for,
)

TRACKER_HOST, SEEDER_HOST, FIRST_EDGE = "127.0.0.2", "127.0.0.3", 4
APT_TIMEOUT = 90.0  # seconds: an apt run still going after this counts as hung (and is killed)
NAMES = ("aptmesh-huge", "aptmesh-large", "aptmesh-medium", "aptmesh-tiny")


class Line(Enum):
    """How an apt run reaches the mesh."""

    PROXY = "proxy"  # Acquire::http::Proxy: one edge, no fall back
    MESH = "mesh+http"  # the method: every edge, then the mirror


@dataclass(frozen=True)
class Size:
    """How big a drill is: `small` in make test, `full` in make drills."""

    workers: int  # apt runs in flight at once
    rounds: int  # runs per worker

    @property
    def runs(self) -> int:
        return self.workers * self.rounds


SMALL = Size(workers=2, rounds=2)
FULL = Size(workers=4, rounds=5)


@dataclass
class Row:
    """One line of the drill table."""

    drill: str
    runs: int = 0
    apt_failures: int = 0
    hung: int = 0
    corrupt_bytes: int = 0
    corrupt_entries: int = 0
    recovery_s: float | None = None
    notes: list[str] = field(default_factory=list)

    def add(self, other: Row) -> None:
        self.runs += other.runs
        self.apt_failures += other.apt_failures
        self.hung += other.hung
        self.corrupt_bytes += other.corrupt_bytes
        self.notes += other.notes


# --- the mesh ----------------------------------------------------------------------------------


@dataclass
class Service:
    """A service of the drill mesh: how to start it, and the process while it runs."""

    name: str
    argv: list[str]
    ready: Callable[[], bool]
    proc: Proc | None = None


class DrillMesh:
    """tracker + seeder + edges as processes on fixed loopback addresses and ports."""

    def __init__(
        self,
        repo: DebRepo,
        root: Path,
        *,
        edges: int = 2,
        caches: Sequence[Path] = (),
        edge_args: Sequence[str] = (),
    ) -> None:
        """`caches` replaces the first edges' cache directories (a small disk, say);
        `edge_args` are further options of every edge."""
        self.edge_args = list(edge_args)
        self.repo, self.root = repo, root
        self.token = secrets.token_hex(16)
        self.logs = root / "logs"
        t_http, t_grpc = drill_port(TRACKER_HOST), drill_port(TRACKER_HOST)
        self.announce = f"http://{TRACKER_HOST}:{t_http}/announce"
        self.tracker_grpc = f"{TRACKER_HOST}:{t_grpc}"
        self.tracker_http = f"http://{TRACKER_HOST}:{t_http}"
        s_http = drill_port(SEEDER_HOST)
        self.seeder_http = f"http://{SEEDER_HOST}:{s_http}"
        self.seeder_dir = root / "seeder"
        self.edge_dirs: list[Path] = []
        self.edge_urls: list[str] = []
        self.services: dict[str, Service] = {}
        self._add(
            "tracker",
            [
                *(APTMESH, "tracker", "--http-host", TRACKER_HOST, "--http-port", str(t_http)),
                *("--grpc-bind", self.tracker_grpc, "--db-path", str(root / "tracker.sqlite3")),
                *("--publish-token", self.token, "--edge-lease-seconds", "6"),
            ],
            lambda: _ok(f"{self.tracker_http}/healthz"),
        )
        spec = f"drill={repo.base_url};suites={repo.suite};components=main;architectures=amd64 all"
        self._add(
            "seeder",
            [
                *(APTMESH, "seeder", "--repositories", spec, "--keyring", str(repo.keyring)),
                *("--data-dir", str(self.seeder_dir), "--tracker-grpc", self.tracker_grpc),
                *("--tracker-announce", self.announce, "--publish-token", self.token),
                *("--grpc-bind", f"{SEEDER_HOST}:{drill_port(SEEDER_HOST)}"),
                *("--http-host", SEEDER_HOST, "--http-port", str(s_http)),
                *("--listen-host", SEEDER_HOST, "--listen-port", str(drill_port(SEEDER_HOST))),
                *("--poll-interval", "600"),
            ],
            lambda: _ok(f"{self.seeder_http}/readyz"),
        )
        for i in range(edges):
            self.add_edge(i, caches[i] if i < len(caches) else None)

    def add_edge(self, i: int, cache: Path | None = None) -> str:
        host = f"127.0.0.{FIRST_EDGE + i}"
        port = drill_port(host)
        url = f"http://{host}:{port}"
        cache = cache or self.root / f"edge{i}" / "cache"
        self.edge_urls.append(url)
        self.edge_dirs.append(cache)
        origin = self.repo.base_url.rsplit("/", 1)[0]
        self._add(
            f"edge{i}",
            [
                *(APTMESH, "edge", "--http-host", host, "--http-port", str(port)),
                *("--grpc-bind", f"{host}:{drill_port(host)}", "--cache-dir", str(cache)),
                *("--upstreams", origin, "--keyring", str(self.repo.keyring)),
                *("--listen-port", str(drill_port(host)), "--tracker-grpc", self.tracker_grpc),
                *("--tracker-announce", self.announce, "--publish-token", self.token),
                *("--edge-id", f"edge{i}", "--public-url", url, "--zone", "drill"),
                *self.edge_args,
            ],
            lambda: _ok(f"{url}/readyz"),
        )
        return f"edge{i}"

    def _add(self, name: str, argv: list[str], ready: Callable[[], bool]) -> None:
        argv = [*argv, "--log-format", "json", "--log-level", "info"]
        self.services[name] = Service(name, argv, ready)

    # --- lifecycle ---

    def start(self, name: str, *, wait: bool = True) -> Proc:
        service = self.services[name]
        assert service.proc is None or service.proc.popen.poll() is not None, f"{name} runs"
        run = sum(1 for _ in self.logs.glob(f"{name}.*.stderr")) if self.logs.exists() else 0
        service.proc = spawn(f"{name}.{run}", service.argv, self.logs)
        if wait:
            wait_for(service.ready, f"{name} to be ready", procs=[service.proc])
        return service.proc

    def kill(self, name: str) -> None:
        """SIGKILL, as an operator's drill or the OOM killer does."""
        proc = self.services[name].proc
        assert proc is not None, name
        proc.signal_group(signal.SIGKILL)
        proc.popen.wait(timeout=DEADLINE)

    def restart(self, name: str) -> float:
        """Kills `name` (-9), starts it again; returns the seconds until it was ready."""
        self.kill(name)
        began = time.monotonic()
        self.start(name)
        return time.monotonic() - began

    def up(self) -> DrillMesh:
        """Starts everything and waits until every swarmed file is seeded and tracked."""
        for name in self.services:
            self.start(name)
        wait_for(
            lambda: all(c >= 1 for c in self.seeds().values()),
            "the seeder to seed every swarmed file",
            procs=self.procs(),
        )
        return self

    def procs(self) -> list[Proc]:
        return [s.proc for s in self.services.values() if s.proc is not None]

    def close(self) -> None:
        for service in self.services.values():
            if service.proc is not None:
                service.proc.kill()

    # --- looking at it ---

    def metrics(self, name: str) -> Metrics:
        if name == "tracker":
            return scrape(f"{self.tracker_http}/metrics")
        if name == "seeder":
            return scrape(f"{self.seeder_http}/metrics")
        return scrape(f"{self.edge_urls[int(name.removeprefix('edge'))]}/metrics")

    def seeds(self) -> dict[str, int]:
        """Per swarmed package, how many complete peers the tracker knows (scrape)."""
        hashes = {p.name: info_hash(p) for p in swarmed(self.repo)}
        query = "&".join(
            "info_hash=" + urllib.parse.quote_from_bytes(bytes.fromhex(h)) for h in hashes.values()
        )
        try:
            status, body = http_get(f"{self.tracker_http}/scrape?{query}", timeout=2.0)
        except OSError:
            return dict.fromkeys(hashes, 0)
        reply = bencode.decode(body) if status == 200 else {}
        files = reply.get(b"files", {}) if isinstance(reply, dict) else {}
        assert isinstance(files, dict)

        def complete(h: str) -> int:
            stats = files.get(bytes.fromhex(h), {})
            count = stats.get(b"complete", 0) if isinstance(stats, dict) else 0
            return count if isinstance(count, int) else 0

        return {name: complete(h) for name, h in hashes.items()}


def _ephemeral_start() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def drill_port(host: str) -> int:
    """A free port below the ephemeral range: a service restarted on it must find it free, and
    every process binding port 0 (other tests, grpc's [::]:0) takes ephemeral ports."""
    top = _ephemeral_start()
    rng = random.Random()  # noqa: S311 - spreading ports, not secrecy
    for _ in range(100):
        port = rng.randrange(max(1024, top - 12000), top)
        with socket.socket() as sock:
            try:
                sock.bind((host, port))
            except OSError:
                continue
        return port
    raise RuntimeError(f"no free port on {host} below {top}")


def _ok(url: str) -> bool:
    try:
        return http_get(url, timeout=2.0)[0] == 200
    except OSError:
        return False


def swarmed(repo: DebRepo) -> list[RepoPackage]:
    return [p for p in repo.packages if p.swarmed]


_HASHES: dict[Path, str] = {}


def info_hash(pkg: RepoPackage) -> str:
    """The v1 infohash of a package's torrent (deterministic: DESIGN.md's torrent identity)."""
    if pkg.path not in _HASHES:
        _HASHES[pkg.path] = make_torrent(pkg.path).torrent.info_hash_v1
    return _HASHES[pkg.path]


@contextlib.contextmanager
def drill_mesh(
    repo: DebRepo,
    root: Path,
    *,
    edges: int = 2,
    caches: Sequence[Path] = (),
    edge_args: Sequence[str] = (),
) -> Iterator[DrillMesh]:
    mesh = DrillMesh(repo, root, edges=edges, caches=caches, edge_args=edge_args)
    try:
        yield mesh.up()
    finally:
        mesh.close()


# --- the checker -------------------------------------------------------------------------------


def signed_files(repo: DebRepo) -> set[str]:
    """Every SHA-256 the verified InRelease vouches for: its index files and their packages."""
    release = parse_release(verify_inrelease(repo.read(repo.INRELEASE), repo.keyring))
    known = {h.sha256 for h in release.files.values()}
    packages = repo.PACKAGES.removeprefix(repo.DISTS + "/")
    entries = load_packages(release, packages, repo.read(repo.PACKAGES))
    return known | {e.sha256 for e in entries}


def store_files(mesh: DrillMesh) -> list[Path]:
    """Every content-addressed file of the edges' caches and of the seeder's data directory."""
    found = [p for d in mesh.edge_dirs for p in (d / "blobs" / "sha256").glob("*/*")]
    found += list((mesh.seeder_dir / "files").glob("*/*"))
    return [p for p in found if p.is_file()]


def corrupt_entries(mesh: DrillMesh, earlier: frozenset[str] = frozenset()) -> list[str]:
    """Stored files whose bytes are not the signed file their name says (or no signed file of
    the current generation or of the `earlier` ones a drill saw: `signed_files` of each)."""
    known = signed_files(mesh.repo) | earlier
    bad = []
    for path in store_files(mesh):
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if digest != path.name or path.name not in known:
            bad.append(str(path))
    return bad


# --- apt runs ----------------------------------------------------------------------------------


@dataclass
class AptOutcome:
    ok: bool
    hung: bool
    corrupt_bytes: int
    detail: str = ""


def apt_env_for(line: Line, tmp: Path, repo: DebRepo, edges: Sequence[str]) -> AptEnv:
    if line is Line.PROXY:
        return proxy_apt(tmp, repo, edges[0])
    return mesh_apt(tmp, repo, " ".join(edges))


def run_apt(env: AptEnv, repo: DebRepo, names: Sequence[str] = NAMES) -> AptOutcome:
    """`apt-get update` and `apt-get download` in a fresh root. Corrupt bytes are counted in
    what apt completed (a run that exited 0): a failed run may leave the partial file of a
    transfer the edge cut, which apt reported as failed and nobody installs."""
    began = time.monotonic()
    try:
        for args in (("update",), ("download", *names)):
            left = max(1.0, APT_TIMEOUT - (time.monotonic() - began))
            result = env.run("apt-get", *args, check=False, timeout=left)
            if result.returncode != 0:
                tail = (result.stdout + result.stderr)[-800:]
                return AptOutcome(False, False, 0, f"{args[0]}: {tail}")
    except subprocess.TimeoutExpired:
        return AptOutcome(False, True, 0, "hung")
    return AptOutcome(True, False, corrupt_debs(env, repo))


def corrupt_debs(env: AptEnv, repo: DebRepo) -> int:
    """Bytes of completed .deb files in the apt root that are not the signed package."""
    bad = 0
    for pkg in repo.packages:
        for path in env.root.glob(f"{pkg.name}_*.deb"):
            data = path.read_bytes()
            if hashlib.sha256(data).hexdigest() != pkg.sha256:
                bad += len(data)
    return bad


def run_apts(
    mesh: DrillMesh,
    tmp: Path,
    size: Size,
    plan: Callable[[int, int], tuple[Line, list[str]]],
    fault: Callable[[], None] = lambda: None,
) -> Row:
    """`size.workers` threads each do `size.rounds` apt runs (line and edges from `plan(worker,
    round)`); `fault` runs once the first run has finished, while the others are in flight."""
    row = Row("")
    first_done = threading.Event()
    lock = threading.Lock()

    def worker(w: int) -> None:
        for r in range(size.rounds):
            line, edges = plan(w, r)
            env = apt_env_for(line, tmp / f"apt-{w}-{r}", mesh.repo, edges)
            outcome = run_apt(env, mesh.repo)
            with lock:
                row.runs += 1
                row.apt_failures += not outcome.ok
                row.hung += outcome.hung
                row.corrupt_bytes += outcome.corrupt_bytes
                if not outcome.ok:
                    row.notes.append(f"{line.value} via {edges[0]}: {outcome.detail}")
            first_done.set()

    with ThreadPoolExecutor(size.workers) as pool:
        futures = [pool.submit(worker, w) for w in range(size.workers)]
        first_done.wait(timeout=APT_TIMEOUT * 2)
        fault()
        for future in futures:
            future.result()
    return row


def alternate(
    lines: Sequence[Line], edges: Sequence[str]
) -> Callable[[int, int], tuple[Line, list[str]]]:
    """A plan: workers alternate between `lines`, every run listing `edges` in order."""
    return lambda w, r: (lines[(w + r) % len(lines)], list(edges))
