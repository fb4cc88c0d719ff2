"""Which package files a collection's package requests need, from parsed Packages indexes (pure).

Theory of operation. python-apt cannot be installed from the package index and
needs the host's apt configuration; what a collection needs is much smaller than
apt's solver: the files to put on edges before clients ask, not an installation
plan. So this resolver is deliberately greedy and explainable:

- a request (`name[:arch] [(op version)]`) takes the newest version of `name`
  for that architecture (or `all`) that satisfies its constraint;
- with dependencies, every chosen package's `Pre-Depends` and `Depends` are
  followed breadth first; a group of alternatives (`a | b`) that some chosen
  package already satisfies (by name and version, or by `Provides`) costs
  nothing, otherwise its first alternative that has a candidate is chosen, a
  real package before a virtual one's first provider (apt's default too);
- whole sections and priorities take the newest version of every package in them.

What cannot be met is an error line that names the request and what the indexes
hold (`Resolution.errors`); the caller decides whether a resolution with errors
is used (the edge keeps its previous one: bad input changes nothing).
Recommends and Suggests are not followed (apt's `--no-install-recommends`
view); Conflicts and Breaks are not checked (a collection may hold both sides).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from aptmesh.debian import PackageEntry
from aptmesh.debversion import Relation, Version, VersionError, parse_relations, version_key

DEPENDENCY_FIELDS = ("Pre-Depends", "Depends")
MAX_ERRORS = 20  # error lines kept per resolution (the rest are counted)


def field_of(entry: PackageEntry, name: str) -> str:
    lower = name.lower()
    for key, value in entry.extra:
        if key.lower() == lower:
            return value
    return ""


@dataclass(frozen=True)
class Provided:
    entry: PackageEntry
    version: str  # the provided version, "" when unversioned


class Universe:
    """The packages of some verified indexes for some architectures, newest version first."""

    def __init__(self, entries: Iterable[PackageEntry], architectures: Sequence[str]) -> None:
        self.architectures = tuple(architectures)
        wanted = set(architectures) | {"all"}
        self._by_name: dict[str, list[PackageEntry]] = {}
        self._provides: dict[str, list[Provided]] = {}
        for entry in entries:
            if entry.architecture not in wanted or not _valid_version(entry.version):
                continue  # a version dpkg would refuse cannot be ordered: never a candidate
            self._by_name.setdefault(entry.package, []).append(entry)
            for group in _relations(entry, "Provides"):
                for rel in group:
                    self._provides.setdefault(rel.name, []).append(Provided(entry, rel.version))
        for versions in self._by_name.values():
            versions.sort(key=lambda e: version_key(e.version), reverse=True)

    def versions(self, name: str) -> list[PackageEntry]:
        return self._by_name.get(name, [])

    def providers(self, name: str) -> list[Provided]:
        return self._provides.get(name, [])

    def newest(self) -> list[PackageEntry]:
        """The newest version of every package (per architecture)."""
        out: list[PackageEntry] = []
        for versions in self._by_name.values():
            seen: set[str] = set()
            for entry in versions:
                if entry.architecture not in seen:
                    seen.add(entry.architecture)
                    out.append(entry)
        return out

    def candidates(self, rel: Relation, arch: str = "") -> list[PackageEntry]:
        """Real packages that satisfy `rel`, newest first; `arch` narrows to one architecture
        (and `all`)."""
        return [
            e
            for e in self.versions(rel.name)
            if (not arch or e.architecture in (arch, "all")) and rel.satisfied_by(e.version)
        ]


def _valid_version(text: str) -> bool:
    try:
        Version.parse(text)
    except VersionError:
        return False
    return True


def _relations(entry: PackageEntry, name: str) -> list[list[Relation]]:
    text = field_of(entry, name)
    if not text:
        return []
    try:
        return parse_relations(text)
    except VersionError:
        return []  # a malformed field of the archive's: followed as if absent


@dataclass
class Resolution:
    """The chosen package files (one per package name and architecture), and what failed."""

    chosen: dict[tuple[str, str], PackageEntry] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    error_count: int = 0

    def fail(self, line: str) -> None:
        self.error_count += 1
        if len(self.errors) < MAX_ERRORS:
            self.errors.append(line)

    @property
    def entries(self) -> list[PackageEntry]:
        return sorted(self.chosen.values(), key=lambda e: (e.package, e.architecture))

    def satisfies(self, rel: Relation) -> bool:
        for entry in self.chosen.values():
            if entry.package == rel.name and rel.satisfied_by(entry.version):
                return True
            for group in _relations(entry, "Provides"):
                for provided in group:
                    if provided.name != rel.name:
                        continue
                    if rel.op is None or (provided.version and rel.satisfied_by(provided.version)):
                        return True
        return False


def _held(universe: Universe, rel: Relation, arch: str) -> str:
    versions = sorted({e.version for e in universe.versions(rel.name)}, key=version_key)
    if not versions:
        return "the indexes have no such package"
    return "the indexes have " + ", ".join(versions[-5:])


def _pick(universe: Universe, rel: Relation, arch: str) -> PackageEntry | None:
    found = universe.candidates(rel, arch)
    if found:
        return found[0]
    for provided in universe.providers(rel.name):
        if rel.op is None or (provided.version and rel.satisfied_by(provided.version)):
            entry = provided.entry
            if not arch or entry.architecture in (arch, "all"):
                return entry
    return None


def resolve(
    requests: Sequence[Relation],
    universe: Universe,
    *,
    with_dependencies: bool,
    sections: Sequence[str] = (),
    priorities: Sequence[str] = (),
) -> Resolution:
    """The files the requests need (see the module's docstring); never raises for bad input."""
    result = Resolution()
    queue: deque[PackageEntry] = deque()

    def choose(entry: PackageEntry, why: str) -> None:
        key = (entry.package, entry.architecture)
        held = result.chosen.get(key)
        if held is not None:
            if held.version != entry.version:
                result.fail(f"{why}: wants {entry.package} {entry.version}, {held.version} chosen")
            return
        result.chosen[key] = entry
        queue.append(entry)

    for rel in requests:
        arch = rel.arch if rel.arch not in ("", "any", "native") else ""
        entry = _pick(universe, rel, arch)
        if entry is None:
            result.fail(f"{rel}: nothing satisfies it ({_held(universe, rel, arch)})")
            continue
        choose(entry, str(rel))
    wanted_sections = {s.lower() for s in sections}
    wanted_priorities = {p.lower() for p in priorities}
    if wanted_sections or wanted_priorities:
        for entry in universe.newest():
            section = (entry.section or "").lower()
            if (
                section in wanted_sections
                or section.rpartition("/")[2] in wanted_sections
                or field_of(entry, "Priority").lower() in wanted_priorities
            ):
                choose(entry, f"section or priority of {entry.package}")
    if not with_dependencies:
        return result
    while queue:
        entry = queue.popleft()
        for name in DEPENDENCY_FIELDS:
            for group in _relations(entry, name):
                if any(result.satisfies(rel) for rel in group):
                    continue
                arch = "" if entry.architecture == "all" else entry.architecture
                picked = next((p for p in (_pick(universe, r, arch) for r in group) if p), None)
                alternatives = " | ".join(str(r) for r in group)
                if picked is None:
                    result.fail(
                        f"{entry.package} {entry.version} depends on {alternatives}: "
                        f"nothing satisfies it ({_held(universe, group[0], arch)})"
                    )
                    continue
                choose(picked, f"{entry.package} depends on {alternatives}")
    return result
