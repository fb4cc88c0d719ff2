"""`aptmesh up`: a whole mesh (tracker, seeder, edge) on one machine, on embedded defaults.

The three services run in this process on one event loop, each built by its
own composition root exactly as `aptmesh tracker|seeder|edge` build them, on
loopback with free ports, SQLite and the data directory, sharing a publish
token made at start. What they bound is written to `DIR/endpoints.json`
(atomically) for scripts and tests; the apt lines a user needs are printed.
The control calls (edge Pin, Unpin, Prefetch; seeder SyncNow) need an admin
token, also made at start, which only this user can read: `DIR/admin-token`
(its path is `admin_token_file` in endpoints.json).
Without `--upstream`, the Debian mirror and keyring this machine's apt uses
are read from its apt sources at run time.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import secrets
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from aptmesh import aptsources, config, lifecycle, logs
from aptmesh.config import ConfigError, option, require
from aptmesh.files import write_atomic
from aptmesh.logs import LogFormat, LogLevel

if TYPE_CHECKING:
    from aptmesh_seeder.sync import SyncResult

log = logs.get(__name__)

SERVICE = "up"


@dataclass(frozen=True)
class UpConfig:
    data_dir: Path = option(Path(".data/mesh"), "directory for the index, caches and state")
    upstream: tuple[str, ...] = option(
        (), "upstream archive URL, repeatable (default: this machine's Debian mirror)"
    )
    keyring: Path | None = option(
        None, "keyring that verifies the upstreams' InRelease (default: the one apt uses)"
    )
    suites: tuple[str, ...] = option(
        (), "suites to seed (default: those of this machine's apt sources, else stable)"
    )
    components: tuple[str, ...] = option(("main",), "components to seed")
    architectures: tuple[str, ...] = option((), "architectures to seed (default: dpkg's, all)")
    budget_bytes: int = option(
        64 << 20,
        "how much the seeder seeds per repository (small: safe on a full archive)",
        size=True,
    )
    swarm_min_size: int = option(1 << 20, "smallest file worth swarming", size=True)
    include: tuple[str, ...] = option((), "package name patterns the seeder seeds (fnmatch)")
    host: str = option("127.0.0.1", "address every service binds")
    log_level: LogLevel = option("warning", "log level of the services")
    log_format: LogFormat = option("console", "log format: json or console")

    def __post_init__(self) -> None:
        for url in self.upstream:
            require(
                urlsplit(url).scheme in {"http", "https"} and bool(urlsplit(url).netloc),
                "upstream",
                f"{url!r} is not an http(s) URL",
            )
        require(self.budget_bytes >= 0, "budget_bytes", "must not be negative")


@dataclass(frozen=True)
class Plan:
    """What `up` will run: upstream archive roots, suites and the keyring."""

    upstreams: tuple[str, ...]
    suites: tuple[str, ...]
    keyring: Path
    architectures: tuple[str, ...]


def plan(cfg: UpConfig, sources: list[aptsources.AptSource], native_arch: str) -> Plan:
    """Fills what the user left out from this machine's apt sources (a pure function)."""
    mirror = aptsources.debian_mirror(sources)
    upstreams = cfg.upstream
    if not upstreams:
        if mirror is None:
            raise ConfigError(
                "no --upstream given and no Debian mirror found in this machine's apt sources"
            )
        upstreams = (mirror.uri,)
    suites = cfg.suites or (mirror.suites[:1] if mirror and not cfg.upstream else ("stable",))
    keyring = cfg.keyring
    if keyring is None:
        keyring = (mirror.signed_by if mirror else None) or aptsources.DEFAULT_KEYRING
    if not keyring.is_file():
        raise ConfigError(f"bad value for --keyring / APTMESH_UP_KEYRING: no such file {keyring}")
    architectures = cfg.architectures or (native_arch, "all")
    return Plan(tuple(u.rstrip("/") for u in upstreams), suites, keyring, architectures)


def repository_spec(index: int, url: str, p: Plan, components: Sequence[str]) -> str:
    """The seeder's spec for one upstream (see aptmesh_seeder.config)."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", urlsplit(url).netloc + urlsplit(url).path).strip("-")
    return (
        f"{name or f'upstream{index}'}={url};suites={' '.join(p.suites)}"
        f";components={' '.join(components)};architectures={' '.join(p.architectures)}"
    )


def origin(url: str) -> str:
    """`scheme://host[:port]`: the edge maps a host to such a backend base."""
    split = urlsplit(url)
    return f"{split.scheme}://{split.netloc}"


def apt_lines(p: Plan, edge_http: str, components: Sequence[str]) -> list[str]:
    lines = []
    for url in p.upstreams:
        split = urlsplit(url)
        scheme = "mesh+https" if split.scheme == "https" else "mesh+http"
        lines.append(
            f"deb [signed-by={p.keyring}] {scheme}://{split.netloc}{split.path} "
            f"{p.suites[0]} {' '.join(components)}"
        )
    return lines


async def run(cfg: UpConfig, p: Plan, stop: asyncio.Event) -> None:
    # Imported here: `aptmesh up --help` stays fast and light.
    from aptmesh_edge import app as edge_app
    from aptmesh_edge.config import EdgeConfig
    from aptmesh_seeder import app as seeder_app
    from aptmesh_seeder.config import SeederConfig
    from aptmesh_tracker import app as tracker_app
    from aptmesh_tracker.config import TrackerConfig

    data = cfg.data_dir.resolve()
    data.mkdir(parents=True, exist_ok=True)
    token = secrets.token_hex(16)
    admin_token = secrets.token_hex(16)
    admin_token_file = data / "admin-token"
    admin_token_file.unlink(missing_ok=True)
    fd = os.open(admin_token_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(admin_token + "\n")
    bind = f"{cfg.host}:0"
    tracker = await tracker_app.start(
        TrackerConfig(
            grpc_bind=bind,
            http_host=cfg.host,
            http_port=0,
            db_path=data / "tracker.sqlite3",
            publish_token=token,
            log_level=cfg.log_level,
            log_format=cfg.log_format,
        )
    )
    seeder = edge = None
    try:
        seeder = await seeder_app.start(
            SeederConfig(
                repositories=tuple(
                    repository_spec(i, url, p, cfg.components) for i, url in enumerate(p.upstreams)
                ),
                keyring=p.keyring,
                data_dir=data / "seeder",
                swarm_min_size=cfg.swarm_min_size,
                budget_bytes=cfg.budget_bytes,
                include=cfg.include,
                tracker_grpc=tracker.grpc_target,
                tracker_announce=(tracker.announce_url,),
                publish_token=token,
                admin_token=admin_token,
                grpc_bind=bind,
                http_host=cfg.host,
                http_port=0,
                listen_host=cfg.host,
                listen_port=0,
                log_level=cfg.log_level,
                log_format=cfg.log_format,
            )
        )
        edge = await edge_app.start(
            EdgeConfig(
                http_host=cfg.host,
                http_port=0,
                grpc_bind=bind,
                cache_dir=data / "edge",
                upstreams=tuple(origin(url) for url in p.upstreams),
                keyring=p.keyring,
                verify_mode="enforce",
                swarm_min_size=cfg.swarm_min_size,
                tracker_grpc=tracker.grpc_target,
                tracker_announce=tracker.announce_url,
                publish_token=token,
                admin_token=admin_token,
                zone="local",
                listen_port=0,
                log_level=cfg.log_level,
                log_format=cfg.log_format,
            )
        )
        endpoints = {
            "tracker_announce": tracker.announce_url,
            "tracker_grpc": tracker.grpc_target,
            "seeder_grpc": seeder.grpc_target,
            "edge_http": edge.http_url,
            "edge_grpc": edge.grpc_target,
            "admin_token_file": str(admin_token_file),
            "metrics": {
                "tracker": f"{tracker.http_url}/metrics",
                "seeder": f"{seeder.http_url}/metrics",
                "edge": f"{edge.http_url}/metrics",
            },
            "upstreams": list(p.upstreams),
            "suites": list(p.suites),
            "keyring": str(p.keyring),
            "pid": os.getpid(),
        }
        results: asyncio.Queue[list[SyncResult]] = asyncio.Queue()
        seeder.watchers.append(results.put_nowait)
        write_atomic(data / "endpoints.json", (json.dumps(endpoints, indent=2) + "\n").encode())
        print_banner(p, edge.http_url, data, cfg.components)
        reporter = asyncio.create_task(report_syncs(results))
        try:
            await stop.wait()
        finally:
            reporter.cancel()
        print("aptmesh up: stopping", file=sys.stderr, flush=True)
    finally:
        (data / "endpoints.json").unlink(missing_ok=True)
        if edge is not None:
            await edge.stop()
        if seeder is not None:
            await seeder.stop()
        await tracker.stop()


async def report_syncs(results: asyncio.Queue[list[SyncResult]]) -> None:
    """Prints the first sync's outcome of each repository, then every change between
    working and failing: the mesh being up says nothing about what it seeds."""
    last: dict[str, bool] = {}
    while True:
        for line in sync_report(await results.get(), last):
            print(line, flush=True)


def sync_report(results: Sequence[SyncResult], last: dict[str, bool]) -> list[str]:
    """Lines for the outcomes that changed since `last` (repository -> ok; updated)."""
    lines = []
    for result in results:
        name = result.repository
        if last.get(name) == result.ok:
            continue
        last[name] = result.ok
        if not result.ok:
            lines += [
                f"aptmesh up: the seeder's sync of {name} FAILED ({result.kind}): {result.error}",
                "  nothing of it is seeded: its packages come from the upstream through the edge;"
                " the seeder tries again on its own",
            ]
        elif result.plan is not None:
            selected = result.plan.selected
            size = sum(c.size for c in selected) / (1 << 20)
            lines.append(
                f"aptmesh up: the seeder synced {name}: seeding {len(selected)} package files "
                f"({size:.1f} MiB) of {result.plan.considered} in its indexes"
            )
        else:
            lines.append(f"aptmesh up: the seeder synced {name}: unchanged since its last sync")
    return lines


def print_banner(p: Plan, edge_http: str, data: Path, components: Sequence[str]) -> None:
    method = Path(sys.executable).with_name("aptmesh-apt-method")
    lines = [
        "aptmesh is up: tracker, seeder and edge on this machine; the seeder's first sync is"
        " running (its outcome is printed when it ends).",
        f"  endpoints: {data / 'endpoints.json'}",
        "",
        "apt through the mesh (mesh+http method):",
        *(f"  {line}" for line in apt_lines(p, edge_http, components)),
        f'  with: Acquire::mesh::Edges "{edge_http}";',
        f'  and the method: Dir::Bin::Methods::mesh+http "{method}";',
        f"  (or install it: aptmesh install-apt-method --root / --edges {edge_http})",
        "",
        "apt through the edge as a plain proxy:",
        f'  Acquire::http::Proxy "{edge_http}/";',
        "",
        "Ctrl-C stops the mesh.",
    ]
    print("\n".join(lines), flush=True)


def native_architecture() -> str:
    try:
        return subprocess.run(
            ["dpkg", "--print-architecture"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "amd64"


def main(argv: Sequence[str]) -> int:
    try:
        cfg = config.load(
            UpConfig, SERVICE, argv, os.environ, description="run a whole mesh on this machine"
        )
        p = plan(cfg, aptsources.read_sources(), native_architecture())
    except ConfigError as exc:
        print(f"aptmesh up: {exc}", file=sys.stderr)
        return 2
    logs.configure("up", cfg.log_level, cfg.log_format)
    try:
        return lifecycle.run(lambda stop: run(cfg, p, stop))
    except OSError as exc:
        print(f"aptmesh up: starting the mesh: {exc}", file=sys.stderr)
        return 1
