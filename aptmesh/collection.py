"""Collections: what a lab's edges hold before anyone asks (the records, their rules, the wire).

A `CollectionSpec` is what an administrator writes (a TOML file or CLI flags):
repositories, package requests, sections and priorities, plain files by SHA-256
and size, and the zones it targets. `check_spec` is the one place of its rules
(the tracker refuses a spec that breaks them with its text). A `Collection` is a
spec the tracker stored, with its version. An `EdgeStatus` is what one edge holds
of one version. The protobuf conversions live here too, so the tracker, the
edge and the CLI share one translation.

`parse_selections` reads what a reference machine prints with `dpkg
--get-selections` (`name[:arch]<TAB>install`) or `apt-mark showmanual` (one
name per line) into package requests.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from aptmesh.debversion import VersionError, parse_relation
from aptmesh.v1 import collection_pb2

_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
_FILE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,254}$")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_ARCH = re.compile(r"^[a-z0-9][a-z0-9-]{0,31}$")
MAX_REQUESTS = 10_000
MAX_FILES = 1_000
MAX_SOURCES = 16
MAX_ZONES = 64
MAX_TEXT = 256  # bytes of one request, source line, zone, section or URL
DEFAULT_ARCHITECTURES = ("amd64",)


class SpecError(ValueError):
    """A collection spec breaks a rule; the text says which (safe to show the user)."""


@dataclass(frozen=True)
class PlainFile:
    name: str
    sha256: str
    size: int
    urls: tuple[str, ...] = ()


@dataclass(frozen=True)
class SourceLine:
    """`URL SUITE [COMPONENT...]`: one repository, as apt's one-line form has it."""

    url: str
    suite: str
    components: tuple[str, ...]

    @classmethod
    def parse(cls, text: str) -> SourceLine:
        words = text.split()
        if words and words[0] == "deb":
            words = words[1:]
        words = [w for w in words if not (w.startswith("[") or w.endswith("]"))]
        if len(words) < 2:
            raise SpecError(f"source {text!r}: not `URL SUITE [COMPONENT...]`")
        url, suite, *components = words
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise SpecError(f"source {text!r}: the URL must be http:// or https://")
        if not suite.endswith("/") and not components:
            raise SpecError(f"source {text!r}: a suite needs components (or is flat: `./`)")
        return cls(url.rstrip("/"), suite, tuple(components))


@dataclass(frozen=True)
class CollectionSpec:
    name: str
    sources: tuple[str, ...] = ()
    architectures: tuple[str, ...] = DEFAULT_ARCHITECTURES
    packages: tuple[str, ...] = ()
    with_dependencies: bool = False
    sections: tuple[str, ...] = ()
    priorities: tuple[str, ...] = ()
    files: tuple[PlainFile, ...] = ()
    zones: tuple[str, ...] = ()

    def targets(self, zone: str) -> bool:
        return not self.zones or zone in self.zones

    def source_lines(self) -> list[SourceLine]:
        return [SourceLine.parse(s) for s in self.sources]


@dataclass(frozen=True)
class Collection:
    spec: CollectionSpec
    version: int
    updated_at: float

    @property
    def name(self) -> str:
        return self.spec.name


@dataclass(frozen=True)
class EdgeStatus:
    edge_id: str
    zone: str
    collection: str
    version: int = 0
    files_wanted: int = 0
    files_present: int = 0
    bytes_wanted: int = 0
    bytes_present: int = 0
    errors: tuple[str, ...] = ()
    generations: tuple[str, ...] = ()
    changed_at: float = 0.0
    complete_at: float = 0.0
    reported_at: float = 0.0

    @property
    def complete(self) -> bool:
        return (
            self.version > 0
            and not self.errors
            and self.files_present == self.files_wanted
            and self.bytes_present == self.bytes_wanted
        )


def _text(value: str, what: str) -> str:
    if len(value.encode()) > MAX_TEXT or any(not c.isprintable() for c in value):
        raise SpecError(f"{what} {value[:80]!r}: at most {MAX_TEXT} printable bytes")
    return value


def check_spec(spec: CollectionSpec) -> CollectionSpec:
    """The spec, normalized (requests and zones deduplicated); raises SpecError."""
    if not _NAME.match(spec.name):
        raise SpecError(
            f"name {spec.name[:80]!r}: lower-case letters, digits, '.', '_', '-', at most 64"
        )
    if len(spec.sources) > MAX_SOURCES:
        raise SpecError(f"at most {MAX_SOURCES} sources")
    for source in spec.sources:
        SourceLine.parse(_text(source, "source"))
    for arch in spec.architectures:
        if not _ARCH.match(arch):
            raise SpecError(f"architecture {arch[:40]!r}: not an architecture name")
    if not spec.architectures:
        raise SpecError("architectures: at least one")
    if len(spec.packages) > MAX_REQUESTS:
        raise SpecError(f"at most {MAX_REQUESTS} package requests")
    for request in spec.packages:
        try:
            parse_relation(_text(request, "package"))
        except VersionError as exc:
            raise SpecError(f"package {request[:80]!r}: {exc}") from None
    if (spec.packages or spec.sections or spec.priorities) and not spec.sources:
        raise SpecError("packages, sections and priorities need at least one source")
    for value in (*spec.sections, *spec.priorities, *spec.zones):
        _text(value, "section, priority or zone")
    if len(spec.zones) > MAX_ZONES:
        raise SpecError(f"at most {MAX_ZONES} zones")
    if len(spec.files) > MAX_FILES:
        raise SpecError(f"at most {MAX_FILES} plain files")
    names: set[str] = set()
    files = []
    for f in spec.files:
        if not _FILE_NAME.match(f.name):
            raise SpecError(f"file name {f.name[:80]!r}: letters, digits, '.', '_', '+', '-'")
        if f.name in names:
            raise SpecError(f"file name {f.name!r} is listed twice")
        names.add(f.name)
        sha256 = f.sha256.lower()
        if not _HEX64.match(sha256):
            raise SpecError(f"file {f.name!r}: sha256 must be 64 hex digits")
        if f.size <= 0:
            raise SpecError(f"file {f.name!r}: size must be positive")
        if not f.urls:
            raise SpecError(f"file {f.name!r}: at least one URL")
        for url in f.urls:
            parts = urlsplit(_text(url, "file URL"))
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise SpecError(f"file {f.name!r}: URL {url[:80]!r} is not http:// or https://")
        files.append(replace(f, sha256=sha256))
    return replace(
        spec,
        packages=tuple(dict.fromkeys(spec.packages)),
        zones=tuple(dict.fromkeys(spec.zones)),
        architectures=tuple(dict.fromkeys(spec.architectures)),
        files=tuple(files),
    )


# -- files and flags -----------------------------------------------------------------------


def parse_selections(text: str) -> list[str]:
    """Package requests from `dpkg --get-selections` (only `install`/`hold` lines) or
    `apt-mark showmanual` output."""
    out: list[str] = []
    for number, line in enumerate(text.splitlines(), start=1):
        words = line.split()
        if not words or words[0].startswith("#"):
            continue
        if len(words) > 2:
            raise SpecError(f"selections line {number}: not `name[:arch] [state]`: {line[:80]!r}")
        if len(words) == 2 and words[1] not in ("install", "hold", "deinstall", "purge"):
            raise SpecError(f"selections line {number}: unknown state {words[1][:20]!r}")
        if len(words) == 2 and words[1] not in ("install", "hold"):
            continue
        out.append(words[0])
    return out


def _strings(data: Mapping[str, Any], key: str) -> tuple[str, ...]:
    value = data.get(key, [])
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise SpecError(f"{key}: a list of strings")
    return tuple(value)


_SPEC_KEYS = {
    "name",
    "sources",
    "architectures",
    "packages",
    "selections",
    "with_dependencies",
    "sections",
    "priorities",
    "files",
    "zones",
}


def spec_from_mapping(data: Mapping[str, Any], base: Path | None = None) -> CollectionSpec:
    """A spec from a TOML document's table; `selections` names a file relative to `base`."""
    unknown = sorted(set(data) - _SPEC_KEYS)
    if unknown:
        raise SpecError(f"unknown keys: {', '.join(unknown)}")
    name = data.get("name")
    if not isinstance(name, str):
        raise SpecError("name: a string is needed")
    packages = list(_strings(data, "packages"))
    for selections in _strings(data, "selections"):
        path = (base or Path()) / selections
        try:
            packages += parse_selections(path.read_text())
        except OSError as exc:
            raise SpecError(f"selections {path}: {exc.strerror}") from None
    files = []
    raw_files = data.get("files", [])
    if not isinstance(raw_files, list):
        raise SpecError("files: a list of tables ([[files]])")
    for entry in raw_files:
        if not isinstance(entry, dict) or set(entry) - {"name", "sha256", "size", "url", "urls"}:
            raise SpecError("files: each one has name, sha256, size and url (or urls)")
        size = entry.get("size")
        if not isinstance(size, int):
            raise SpecError(f"file {entry.get('name')!r}: size must be a number of bytes")
        urls = _strings(entry, "urls") + _strings(entry, "url")
        files.append(
            PlainFile(str(entry.get("name", "")), str(entry.get("sha256", "")), size, urls)
        )
    deps = data.get("with_dependencies", False)
    if not isinstance(deps, bool):
        raise SpecError("with_dependencies: true or false")
    return CollectionSpec(
        name=name,
        sources=_strings(data, "sources"),
        architectures=_strings(data, "architectures") or DEFAULT_ARCHITECTURES,
        packages=tuple(packages),
        with_dependencies=deps,
        sections=_strings(data, "sections"),
        priorities=_strings(data, "priorities"),
        files=tuple(files),
        zones=_strings(data, "zones"),
    )


def load_spec(path: Path) -> CollectionSpec:
    try:
        data = tomllib.loads(path.read_text())
    except OSError as exc:
        raise SpecError(f"reading {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise SpecError(f"reading {path}: {exc}") from None
    return spec_from_mapping(data, path.parent)


# -- the wire ------------------------------------------------------------------------------


def spec_to_proto(spec: CollectionSpec) -> collection_pb2.CollectionSpec:
    return collection_pb2.CollectionSpec(
        name=spec.name,
        sources=spec.sources,
        architectures=spec.architectures,
        packages=spec.packages,
        with_dependencies=spec.with_dependencies,
        sections=spec.sections,
        priorities=spec.priorities,
        files=[
            collection_pb2.CollectionFile(name=f.name, sha256=f.sha256, size=f.size, urls=f.urls)
            for f in spec.files
        ],
        zones=spec.zones,
    )


def spec_from_proto(msg: collection_pb2.CollectionSpec) -> CollectionSpec:
    return CollectionSpec(
        name=msg.name,
        sources=tuple(msg.sources),
        architectures=tuple(msg.architectures) or DEFAULT_ARCHITECTURES,
        packages=tuple(msg.packages),
        with_dependencies=msg.with_dependencies,
        sections=tuple(msg.sections),
        priorities=tuple(msg.priorities),
        files=tuple(PlainFile(f.name, f.sha256, f.size, tuple(f.urls)) for f in msg.files),
        zones=tuple(msg.zones),
    )


def collection_to_proto(c: Collection) -> collection_pb2.Collection:
    return collection_pb2.Collection(
        spec=spec_to_proto(c.spec), version=c.version, updated_at=c.updated_at
    )


def collection_from_proto(msg: collection_pb2.Collection) -> Collection:
    return Collection(spec_from_proto(msg.spec), msg.version, msg.updated_at)


def status_to_proto(s: EdgeStatus) -> collection_pb2.EdgeCollectionStatus:
    return collection_pb2.EdgeCollectionStatus(
        edge_id=s.edge_id,
        zone=s.zone,
        collection=s.collection,
        version=s.version,
        files_wanted=s.files_wanted,
        files_present=s.files_present,
        bytes_wanted=s.bytes_wanted,
        bytes_present=s.bytes_present,
        errors=s.errors,
        generations=s.generations,
        changed_at=s.changed_at,
        complete_at=s.complete_at,
        reported_at=s.reported_at,
    )


def status_from_proto(msg: collection_pb2.EdgeCollectionStatus) -> EdgeStatus:
    return EdgeStatus(
        edge_id=msg.edge_id,
        zone=msg.zone,
        collection=msg.collection,
        version=msg.version,
        files_wanted=msg.files_wanted,
        files_present=msg.files_present,
        bytes_wanted=msg.bytes_wanted,
        bytes_present=msg.bytes_present,
        errors=tuple(msg.errors),
        generations=tuple(msg.generations),
        changed_at=msg.changed_at,
        complete_at=msg.complete_at,
        reported_at=msg.reported_at,
    )


def status_to_json(s: EdgeStatus) -> dict[str, Any]:
    """The status as the edge's `/_aptmesh/collections` JSON and `status --json` show it."""
    return {
        "edge_id": s.edge_id,
        "zone": s.zone,
        "collection": s.collection,
        "version": s.version,
        "files_wanted": s.files_wanted,
        "files_present": s.files_present,
        "bytes_wanted": s.bytes_wanted,
        "bytes_present": s.bytes_present,
        "errors": list(s.errors),
        "generations": list(s.generations),
        "changed_at": s.changed_at,
        "complete_at": s.complete_at,
        "complete": s.complete,
    }


def merged_statuses(
    collection: Collection, edges: Iterable[tuple[str, str]], reports: Sequence[EdgeStatus]
) -> list[EdgeStatus]:
    """One status per targeted live edge (id, zone): its report, or zero counts if none."""
    by_edge = {r.edge_id: r for r in reports}
    out = []
    for edge_id, zone in edges:
        if not collection.spec.targets(zone):
            continue
        out.append(by_edge.get(edge_id) or EdgeStatus(edge_id, zone, collection.name))
    return out
