"""The seeder's configuration (`aptmesh seeder --help`, `APTMESH_SEEDER_*`).

Repositories are given as specs, one per `--repositories` flag (repeatable) or
comma-separated in `APTMESH_SEEDER_REPOSITORIES`:

    NAME=SOURCE;suites=SUITE [SUITE...][;components=C [C...]]
               [;architectures=A [A...]][;webseed=URL|off][;keyring=PATH]

- NAME: letters, digits, `.`, `_`, `-`; names the repository in logs, status
  and the `repository` metric label (bounded: it comes from this config).
- SOURCE: an `http://` or `https://` URL of the archive root (the directory
  holding `dists/` and `pool/`), or the absolute path of a local mirror
  directory (as debmirror or apt-mirror make it; `file:///path` also works).
  A local mirror's files are seeded in place, never copied.
- suites (required), components (default `main`), architectures (default
  `amd64 all`): lists separated by blanks, as in sources.list, because commas
  separate repositories in the environment variable. `all` is fetched only
  where Release lists a `binary-all` index (Debian also lists arch-all
  packages in every `binary-ARCH` index). A suite ending in `/` is a flat
  repository's directory, as in `deb URL ./` (components are then not used).
  The architecture `source` reads each component's `Sources` index (as a
  `deb-src` line does) and seeds the large source files (`.orig.tar.*`...).
  An index the configuration names but a suite's Release does not list is
  skipped, as apt skips it: logged once per sync and counted in
  `aptmesh_seeder_absent_indexes`, never a failed sync.
- webseed: the archive root given to BitTorrent clients as BEP 19 web seed.
  Default: SOURCE when it is a URL, none for a local mirror; `off` disables it.
- keyring: the OpenPGP keyring for this repository's InRelease (default: the
  `keyring` option).

Example: `debian=http://mirror.example/debian;suites=bookworm bookworm-updates;
components=main contrib;architectures=amd64 all`.
"""

from __future__ import annotations

import re
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from aptmesh.config import InvalidOption, option, require
from aptmesh.debian import MalformedIndexError, suite_dir
from aptmesh.logs import LogFormat
from aptmesh_tracker.records import EDGE_ID, EDGE_ID_RULE

SERVICE = "seeder"

SPEC_SYNTAX = (
    "NAME=SOURCE;suites=SUITE [SUITE...][;components=C [C...]][;architectures=A [A...]]"
    "[;webseed=URL|off][;keyring=PATH]"
)
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")
_WORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9.+~_/-]*")
_FLAT = re.compile(r"\./([A-Za-z0-9][A-Za-z0-9.+~_-]*/)*")  # `./`, `./sub/`: flat repositories
_KEYS = ("suites", "components", "architectures", "webseed", "keyring")


class SpecError(ValueError):
    """A repository spec does not parse; the text says which part and shows the syntax."""


@dataclass(frozen=True)
class RepositorySpec:
    name: str
    source: str  # a URL (no trailing slash) or an absolute directory path
    suites: tuple[str, ...]
    components: tuple[str, ...] = ("main",)
    architectures: tuple[str, ...] = ("amd64", "all")
    webseed: str | None = None  # archive root URL for BEP 19 web seeds; None: no web seed
    keyring: Path | None = None  # None: the config's keyring

    @property
    def is_mirror(self) -> bool:
        return not self.source.startswith(("http://", "https://"))

    @property
    def upstream_url(self) -> str | None:
        """The archive root clients can fetch from (for records' upstream URLs)."""
        if not self.is_mirror:
            return self.source
        return self.webseed


def _words(key: str, value: str, spec: str) -> tuple[str, ...]:
    words = tuple(value.split())
    if not words:
        raise SpecError(f"repository spec {spec!r}: {key}= is empty")
    for word in words:
        flat_root = key == "suites" and _FLAT.fullmatch(word)
        if not (_WORD.fullmatch(word) or flat_root):
            raise SpecError(f"repository spec {spec!r}: {key}= has a bad entry {word!r}")
        if key == "suites":
            try:
                suite_dir(word)
            except MalformedIndexError:
                raise SpecError(
                    f"repository spec {spec!r}: suite {word!r} leaves the archive"
                ) from None
    if len(set(words)) != len(words):
        raise SpecError(f"repository spec {spec!r}: {key}= lists an entry twice")
    return words


def _source(text: str, spec: str) -> str:
    if text.startswith(("http://", "https://")):
        parts = urlsplit(text)
        if not parts.hostname or parts.query or parts.fragment:
            raise SpecError(
                f"repository spec {spec!r}: {text!r} is not an archive URL "
                "(http[s]://HOST/PATH, no query)"
            )
        return text.rstrip("/")
    if text.startswith("file://"):
        text = urlsplit(text).path
    if not text.startswith("/"):
        raise SpecError(
            f"repository spec {spec!r}: source {text!r} must be an http:// or https:// URL "
            "or an absolute directory path"
        )
    return str(Path(text))


def parse_repository(spec: str) -> RepositorySpec:
    """Parses one repository spec (the syntax is in this module's docstring)."""
    head, *options = [part.strip() for part in spec.strip().split(";")]
    name, eq, source = head.partition("=")
    name = name.strip()
    if not eq or not source.strip():
        hint = ""
        if "=" not in head and not head.startswith(("http", "/")):
            hint = " (lists inside a spec are separated by blanks; commas separate repositories)"
        raise SpecError(f"repository spec {spec!r} is not {SPEC_SYNTAX}{hint}")
    if not _NAME.fullmatch(name):
        raise SpecError(
            f"repository spec {spec!r}: name {name!r} must be letters, digits, '.', '_' or '-'"
        )
    values: dict[str, str] = {}
    for part in options:
        if not part:
            continue
        key, eq, value = part.partition("=")
        key = key.strip().lower()
        if not eq or key not in _KEYS:
            raise SpecError(
                f"repository spec {spec!r}: unknown part {part!r} "
                f"(known: {', '.join(k + '=' for k in _KEYS)})"
            )
        if key in values:
            raise SpecError(f"repository spec {spec!r}: {key}= given twice")
        values[key] = value.strip()
    if "suites" not in values:
        raise SpecError(f"repository spec {spec!r}: suites= is required ({SPEC_SYNTAX})")
    resolved = _source(source.strip(), spec)
    webseed: str | None = None if resolved.startswith("/") else resolved
    if "webseed" in values:
        given = values["webseed"]
        if given.lower() in {"off", "none", ""}:
            webseed = None
        elif given.startswith(("http://", "https://")) and urlsplit(given).hostname:
            webseed = given.rstrip("/")
        else:
            raise SpecError(f"repository spec {spec!r}: webseed= must be an http(s) URL or off")
    keyring = Path(values["keyring"]) if values.get("keyring") else None
    return RepositorySpec(
        name=name,
        source=resolved,
        suites=_words("suites", values["suites"], spec),
        components=_words("components", values.get("components", "main"), spec),
        architectures=_words("architectures", values.get("architectures", "amd64 all"), spec),
        webseed=webseed,
        keyring=keyring,
    )


@dataclass(frozen=True)
class SeederConfig:
    repositories: tuple[str, ...] = option(
        (), f"repositories to watch, one spec each: {SPEC_SYNTAX}"
    )
    keyring: Path | None = option(
        None, "OpenPGP keyring (binary or armored) that InRelease must be signed by"
    )
    data_dir: Path = option(
        Path("/var/lib/aptmesh/seeder"),
        "directory of downloaded package files and the state database (must be writable)",
    )
    poll_interval: float = option(
        300.0, "seconds between polls of each repository's InRelease (conditional requests)"
    )
    swarm_min_size: int = option(
        1024**2, "only package files at least this size are seeded (smaller: HTTP)", size=True
    )
    budget_bytes: int = option(
        0,
        "most bytes of packages seeded per repository, largest first (0: unlimited)",
        size=True,
    )
    reverify_rate: int = option(
        64 * 1024**2,
        "bytes per second at which held files are re-hashed after every start (a file can "
        "change on disk without its size or mtime changing; 0: as fast as the disk goes)",
        size=True,
    )
    include: tuple[str, ...] = option(
        (), "seed only packages whose name matches one of these fnmatch patterns (empty: all)"
    )
    exclude: tuple[str, ...] = option(
        (), "never seed packages whose name matches one of these fnmatch patterns"
    )
    sections: tuple[str, ...] = option(
        (), "seed only packages in these sections, e.g. libs, devel (fnmatch; empty: all)"
    )
    tracker_grpc: str = option(
        "", "host:port of the tracker's gRPC index to publish to (empty: publish nothing)"
    )
    tracker_announce: tuple[str, ...] = option(
        (), "BitTorrent announce URLs put in every torrent (the tracker's /announce)"
    )
    publish_token: str = option("", "bearer token for publishing to the index", secret=True)
    admin_token: str = option(
        "", "bearer token the SyncNow gRPC call needs; empty refuses it", secret=True
    )
    grpc_bind: str = option(
        "[::]:50051", "host:port of the SeederService gRPC server (port 0 picks a free one)"
    )
    http_host: str = option("0.0.0.0", "address of /metrics, /healthz and /readyz")
    http_port: int = option(9090, "port of /metrics, /healthz and /readyz (0 picks a free one)")
    listen_host: str = option("0.0.0.0", "BitTorrent listen address")
    listen_port: int = option(6881, "BitTorrent listen port (0 picks a free one)")
    public_swarm: bool = option(
        False, "public swarm: DHT, LSD, UPnP and NAT-PMP on (off inside a data centre)"
    )
    utp: bool = option(False, "allow uTP besides TCP (much slower on fast networks)")
    upload_rate_limit: int = option(
        0, "BitTorrent upload cap in bytes per second (0: unlimited)", size=True
    )
    upload_capacity: int = option(
        0,
        "the uplink in bytes per second (0: unknown); known, the seeder keeps each peer's "
        "request queue shallow while the link is full (fewer duplicate pieces) and deepens "
        "it while there is room",
        size=True,
    )
    seed_box_id: str = option(
        socket.gethostname(),
        "this seed box's id in the tracker's registry, unique among its edges and seed boxes; "
        "a seeder that knows its uplink (upload_capacity or upload_rate_limit) and has a "
        "tracker_grpc and publish_token registers it there so the site can tell it is "
        "seed-bound",
    )
    connections_limit: int = option(2000, "most BitTorrent peer connections at once")
    grace_period: float = option(
        86400.0,
        "seconds a package that left the index (or was never published) is still seeded "
        "before it is dropped and, if the seeder downloaded it, deleted",
    )
    download_concurrency: int = option(4, "package files fetched from upstream at once")
    upstream_timeout: float = option(
        60.0, "seconds without progress before an upstream request is abandoned"
    )
    log_level: Literal["debug", "info", "warning", "error"] = option("info", "log level")
    log_format: LogFormat = option("json", "log format on stderr: json or console")

    def __post_init__(self) -> None:
        names: set[str] = set()
        for spec in self.repositories:
            try:
                parsed = parse_repository(spec)
            except SpecError as exc:
                raise InvalidOption("repositories", str(exc)) from None
            require(
                parsed.name not in names,
                "repositories",
                f"two repositories are named {parsed.name!r}",
            )
            names.add(parsed.name)
        require(self.poll_interval > 0, "poll_interval", "must be positive")
        require(self.swarm_min_size >= 0, "swarm_min_size", "must not be negative")
        require(self.budget_bytes >= 0, "budget_bytes", "must not be negative (0: unlimited)")
        require(self.reverify_rate >= 0, "reverify_rate", "must not be negative (0: unlimited)")
        require(":" in self.grpc_bind, "grpc_bind", "must be host:port, e.g. [::]:50051")
        require(
            self.tracker_grpc == "" or ":" in self.tracker_grpc,
            "tracker_grpc",
            "must be host:port, e.g. tracker:50051",
        )
        for url in self.tracker_announce:
            require(
                url.startswith(("http://", "https://", "udp://")),
                "tracker_announce",
                f"{url!r} is not an http(s):// or udp:// announce URL",
            )
        require(0 <= self.http_port <= 65535, "http_port", "must be between 0 and 65535")
        require(0 <= self.listen_port <= 65535, "listen_port", "must be between 0 and 65535")
        require(self.upload_rate_limit >= 0, "upload_rate_limit", "must not be negative")
        require(self.upload_capacity >= 0, "upload_capacity", "must not be negative")
        require(
            bool(EDGE_ID.fullmatch(self.seed_box_id)),
            "seed_box_id",
            f"{self.seed_box_id!r} is not {EDGE_ID_RULE}",
        )
        require(self.connections_limit >= 1, "connections_limit", "must be at least 1")
        require(self.grace_period >= 0, "grace_period", "must not be negative")
        require(self.download_concurrency >= 1, "download_concurrency", "must be at least 1")
        require(self.upstream_timeout > 0, "upstream_timeout", "must be positive")

    def repository_specs(self) -> tuple[RepositorySpec, ...]:
        return tuple(parse_repository(spec) for spec in self.repositories)
