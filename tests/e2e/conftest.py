"""Fixtures for the end-to-end tests: real `aptmesh` processes, real apt, the repository fixture.

Every process a test starts is a real command line (`aptmesh up`, `aptmesh
edge`) in its own process group, with its output in files under the test's
temporary directory (shown when waiting on it fails; pytest keeps the
directory for a look after). Every group is killed when its fixture or test
ends, whether the test passed or not.

Addresses: the mirror (the repository fixture) listens on 127.0.0.1, the mesh
of `aptmesh up` on 127.0.0.2, further edges on 127.0.0.3 and up. apt falls
back from one URI to the next only between different hosts, so each role has
its own loopback address (all of 127.0.0.0/8 is loopback).

Waiting is polling with a deadline (`wait_for`), never a fixed sleep.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
from prometheus_client.parser import text_string_to_metric_families

from aptmesh.debrepo import AptEnv, DebRepo, RepoPackage, apt_env
from aptmesh.testing import poll_until

BIN = Path(sys.executable).parent
APTMESH = str(BIN / "aptmesh")
METHOD = str(BIN / "aptmesh-apt-method")
MESH_HOST = "127.0.0.2"
DEADLINE = 30.0  # seconds: generous for 2 shared cores, never waited out when things work

T = TypeVar("T")


# --- processes ---------------------------------------------------------------------------------


@dataclass
class Proc:
    """A started command in its own process group, its output going to two files."""

    name: str
    popen: subprocess.Popen[bytes]
    stdout: Path
    stderr: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def output(self, limit: int = 6000) -> str:
        parts = []
        for label, path in (("stdout", self.stdout), ("stderr", self.stderr)):
            text = path.read_text(errors="replace") if path.exists() else ""
            parts.append(f"--- {self.name} {label} ---\n{text[-limit:]}")
        return "\n".join(parts)

    def signal_group(self, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, sig)

    def kill(self) -> None:
        """SIGKILL the whole group and reap the leader (idempotent)."""
        self.signal_group(signal.SIGKILL)
        self.popen.wait(timeout=DEADLINE)

    def terminate(self, timeout: float = DEADLINE) -> int:
        """SIGTERM and wait for the exit status; SIGKILL if it does not come in time."""
        self.signal_group(signal.SIGTERM)
        try:
            return self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(
                f"{self.name} ignored SIGTERM for {timeout} s\n{self.output()}"
            ) from None

    def group_alive(self) -> bool:
        """Whether any process of the group still exists (call after the leader is reaped)."""
        try:
            os.killpg(self.pid, 0)
        except ProcessLookupError:
            return False
        return True


def child_env() -> dict[str, str]:
    """The test's environment without aptmesh settings or proxies that would change the run."""
    return {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("APTMESH_") and not k.lower().endswith("_proxy")
    }


def spawn(name: str, argv: Sequence[str], logdir: Path) -> Proc:
    logdir.mkdir(parents=True, exist_ok=True)
    out, err = logdir / f"{name}.stdout", logdir / f"{name}.stderr"
    with out.open("wb") as stdout, err.open("wb") as stderr:
        popen = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=stderr,
            env=child_env(),
            start_new_session=True,  # its own process group: killpg reaches every child
        )
    return Proc(name, popen, out, err)


@contextlib.contextmanager
def running(name: str, argv: Sequence[str], logdir: Path) -> Iterator[Proc]:
    """A process for the duration of the block, SIGKILLed (whole group) at its end."""
    proc = spawn(name, argv, logdir)
    try:
        yield proc
    finally:
        proc.kill()


def wait_for(
    condition: Callable[[], T | None],
    what: str,
    *,
    timeout: float = DEADLINE,
    procs: Sequence[Proc] = (),
) -> T:
    """Polls `condition` until it returns something truthy; fails early if a process dies, and
    with the processes' output if it times out."""

    def alive() -> None:
        for proc in procs:
            if proc.popen.poll() is not None:
                raise AssertionError(
                    f"{proc.name} exited ({proc.popen.returncode}) while waiting for {what}\n"
                    + proc.output()
                )

    try:
        return poll_until(condition, what, within=timeout, check=alive)
    except AssertionError as exc:
        if procs and "timed out" in str(exc):
            raise AssertionError(f"{exc}\n" + "\n".join(p.output() for p in procs)) from None
        raise


# --- HTTP and metrics ------------------------------------------------------------------------


def http_get(url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.read()


def try_get_json(url: str) -> Any:
    """The JSON document at `url`, or None while it cannot be had."""
    try:
        status, body = http_get(url, timeout=2.0)
    except OSError:
        return None
    return json.loads(body) if status == 200 else None


@dataclass(frozen=True)
class Metrics:
    """One scrape of a /metrics page, parsed by prometheus_client's own parser."""

    samples: tuple[tuple[str, tuple[tuple[str, str], ...], float], ...]

    def value(self, name: str, **labels: str) -> float:
        """Sum of the samples named `name` whose labels include `labels` (0 if none)."""
        want = set(labels.items())
        return sum(v for n, lbl, v in self.samples if n == name and want <= set(lbl))

    def has(self, name: str) -> bool:
        return any(n == name for n, _, _ in self.samples)


def scrape(url: str) -> Metrics:
    status, body = http_get(url)
    assert status == 200, f"GET {url}: HTTP {status}"
    families = text_string_to_metric_families(body.decode())
    return Metrics(
        tuple(
            (s.name, tuple(sorted(s.labels.items())), s.value) for f in families for s in f.samples
        )
    )


def served(metrics: Metrics, source: str) -> float:
    return metrics.value("aptmesh_edge_served_bytes_total", source=source)


# --- the mesh ----------------------------------------------------------------------------------


def read_endpoints(data_dir: Path) -> dict[str, Any] | None:
    """`DIR/endpoints.json` once `aptmesh up` has written it (it writes atomically)."""
    try:
        document: dict[str, Any] = json.loads((data_dir / "endpoints.json").read_text())
    except FileNotFoundError:
        return None
    return document


@dataclass
class Mesh:
    """A running `aptmesh up` process and what it wrote to endpoints.json."""

    proc: Proc
    data_dir: Path
    endpoints: dict[str, Any]
    repo: DebRepo

    @property
    def edge_http(self) -> str:
        url: str = self.endpoints["edge_http"]
        return url

    def metrics(self, service: str) -> Metrics:
        return scrape(self.endpoints["metrics"][service])


def up_argv(repo: DebRepo, data_dir: Path, *extra: str) -> list[str]:
    return [
        APTMESH,
        "up",
        "--data-dir",
        str(data_dir),
        "--upstream",
        repo.base_url,
        "--keyring",
        str(repo.keyring),
        "--host",
        MESH_HOST,
        "--log-level",
        "info",
        "--log-format",
        "json",
        *extra,
    ]


def wait_up(proc: Proc, data_dir: Path, repo: DebRepo) -> Mesh:
    """Waits for endpoints.json, then for the seeder to have published every swarmed package."""
    endpoints = wait_for(
        lambda: (e := read_endpoints(data_dir)) and e.get("pid") == proc.pid and e,
        "endpoints.json",
        procs=[proc],
    )
    mesh = Mesh(proc, data_dir, endpoints, repo)
    swarmed = sum(1 for p in repo.packages if p.swarmed)
    wait_for(
        lambda: mesh.metrics("seeder").value("aptmesh_seeder_published_total") >= swarmed,
        f"the seeder to publish {swarmed} torrents",
        procs=[proc],
    )
    return mesh


@contextlib.contextmanager
def mesh_up(repo: DebRepo, data_dir: Path, logdir: Path, name: str = "up") -> Iterator[Mesh]:
    """`aptmesh up` for the block; SIGTERM at its end, SIGKILL (whole group) if that fails."""
    proc = spawn(name, up_argv(repo, data_dir), logdir)
    try:
        yield wait_up(proc, data_dir, repo)
    finally:
        if proc.popen.poll() is None:
            with contextlib.suppress(AssertionError):
                proc.terminate()
        proc.kill()


@pytest.fixture(scope="module")
def e2e_repo(
    debrepo_session: DebRepo, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[DebRepo]:
    """The pristine repository served on its own port, with counters private to the module."""
    repo = debrepo_session.copy(tmp_path_factory.mktemp("e2e-repo") / "debian", mutable=False)
    try:
        repo.server.start()
        yield repo
    finally:
        repo.close()


@pytest.fixture(scope="module")
def mesh(e2e_repo: DebRepo, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    """One `aptmesh up` process shared by the module's tests (they do not conflict)."""
    root = tmp_path_factory.mktemp("e2e-mesh")
    with mesh_up(e2e_repo, root / "data", root / "logs") as running_mesh:
        yield running_mesh


# --- a further edge ----------------------------------------------------------------------------


def edge_started_url(proc: Proc) -> str | None:
    """The HTTP URL in the edge's `edge_started` log event (JSON lines on stderr)."""
    for line in proc.stderr.read_text(errors="replace").splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if isinstance(event, dict) and event.get("event") == "edge_started":
            url: str = event["http"]
            return url
    return None


@contextlib.contextmanager
def edge_process(
    name: str, host: str, tmp: Path, upstream: str, keyring: Path, *extra: str
) -> Iterator[tuple[Proc, str]]:
    """`aptmesh edge` on `host` (free ports) for the block, with the URL it bound."""
    argv = [
        *(APTMESH, "edge", "--http-host", host, "--http-port", "0"),
        *("--grpc-bind", f"{host}:0", "--cache-dir", str(tmp / name / "cache")),
        *("--upstreams", upstream, "--keyring", str(keyring), "--listen-port", "0"),
        *("--log-format", "json", "--log-level", "info", *extra),
    ]
    with running(name, argv, tmp / name) as proc:
        url = wait_for(lambda: edge_started_url(proc), f"{name} to start", procs=[proc])
        assert url.startswith(f"http://{host}:"), url
        yield proc, url


# --- apt ---------------------------------------------------------------------------------------


def mesh_apt(tmp: Path, repo: DebRepo, edges: str, **settings: str) -> AptEnv:
    """apt with `deb mesh+http://MIRROR/debian ...`, the method, and `Acquire::mesh::Edges`."""
    source = repo.sources_line(f"mesh+http://{repo.host}/debian")
    extra = {"Dir::Bin::Methods::mesh+http": METHOD, "Acquire::mesh::Edges": edges}
    extra.update({f"Acquire::mesh::{k}": v for k, v in settings.items()})
    return apt_env(tmp, source, extra)


def proxy_apt(tmp: Path, repo: DebRepo, edge_http: str) -> AptEnv:
    """apt with a plain `http://` source and the edge as its HTTP proxy (no method)."""
    return apt_env(tmp, repo.sources_line(), {"Acquire::http::Proxy": f"{edge_http}/"})


def swarmed(repo: DebRepo) -> list[RepoPackage]:
    return [p for p in repo.packages if p.swarmed]


def pool_requests(repo: DebRepo) -> dict[str, int]:
    """How often the mirror was asked for each package file."""
    return {p.filename: repo.server.requests(p.filename) for p in repo.packages}


def assert_downloaded(env: AptEnv, repo: DebRepo, names: Sequence[str]) -> None:
    """Each package's .deb is in the apt root with the fixture's size and SHA-256."""
    for name in names:
        pkg = repo.package(name)
        found = list(env.root.glob(f"{name}_*.deb"))
        assert len(found) == 1, f"{name}: {found}"
        data = found[0].read_bytes()
        assert len(data) == pkg.size, name
        assert hashlib.sha256(data).hexdigest() == pkg.sha256, name


# What apt-get update/download print on a good run (with LC_ALL=C, no terminal).
NORMAL_LINE = re.compile(
    r"(Get|Hit):\d+ \S+ .*"
    r"|Fetched \d.*"
    r"|Reading package lists\.\.\.( Done)?"
)


def assert_clean_terminal(
    result: subprocess.CompletedProcess[str], *, ignored: str | None = None
) -> None:
    """Nothing on stderr; nothing on stdout but apt's ordinary progress lines.

    With `ignored` (a URL prefix), apt's `Ign:` lines for URIs under it are
    ordinary too: apt giving up on one Alternate-URI before the next.
    """
    assert result.stderr == "", result.stderr
    for line in result.stdout.splitlines():
        if ignored is not None and re.fullmatch(rf"Ign:\d+ {re.escape(ignored)}\S* .*", line):
            continue
        assert NORMAL_LINE.fullmatch(line), f"unexpected line {line!r} in\n{result.stdout}"
