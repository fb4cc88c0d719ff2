"""Which packages are worth swarming: a pure policy over a repository's package list.

Order and budget. Candidates are considered largest first (ties by pool path,
then SHA-256, so the plan is a deterministic function of the index), and each
is taken if it still fits the byte budget; one that does not fit is cut and
smaller ones are still tried (first-fit decreasing). Largest first because
swarming pays off with size (small files are latency-bound, DESIGN.md) while
each torrent costs the same announce load and libtorrent slot whatever its
size: for a given budget this seeds the most bytes with the fewest torrents.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any


@dataclass(frozen=True)
class Candidate:
    """One package file a verified Packages index lists."""

    sha256: str
    size: int
    package: str
    filename: str  # pool path from the archive root
    section: str | None = None

    @property
    def basename(self) -> str:
        return self.filename.rsplit("/", 1)[-1]


@dataclass(frozen=True)
class Policy:
    min_size: int = 1024**2
    include: tuple[str, ...] = ()  # fnmatch patterns on the package name; empty: all
    exclude: tuple[str, ...] = ()
    sections: tuple[str, ...] = ()  # fnmatch patterns on the section; empty: all
    budget_bytes: int = 0  # 0: unlimited


@dataclass(frozen=True)
class Plan:
    selected: tuple[Candidate, ...]
    considered: int  # distinct files (by SHA-256) in the index
    below_threshold: int
    below_threshold_bytes: int
    filtered_out: int  # by name patterns or sections
    budget_cut: tuple[Candidate, ...] = field(default=())

    @property
    def selected_bytes(self) -> int:
        return sum(c.size for c in self.selected)

    @property
    def budget_cut_bytes(self) -> int:
        return sum(c.size for c in self.budget_cut)

    def summary(self) -> dict[str, Any]:
        """The plan as log fields."""
        return {
            "considered": self.considered,
            "selected": len(self.selected),
            "selected_bytes": self.selected_bytes,
            "below_threshold": self.below_threshold,
            "below_threshold_bytes": self.below_threshold_bytes,
            "filtered_out": self.filtered_out,
            "budget_cut": len(self.budget_cut),
            "budget_cut_bytes": self.budget_cut_bytes,
            "budget_cut_largest": [c.basename for c in self.budget_cut[:5]],
        }


def _section_matches(section: str | None, patterns: tuple[str, ...]) -> bool:
    if not patterns:
        return True
    if section is None:
        return False
    # "non-free/libs" is section "libs" in component "non-free": either form matches.
    forms = {section, section.rsplit("/", 1)[-1]}
    return any(fnmatchcase(form, p) for form in forms for p in patterns)


def _name_matches(name: str, policy: Policy) -> bool:
    if policy.include and not any(fnmatchcase(name, p) for p in policy.include):
        return False
    return not any(fnmatchcase(name, p) for p in policy.exclude)


def plan(candidates: Iterable[Candidate], policy: Policy) -> Plan:
    """Selects the files worth swarming; the same input always gives the same plan."""
    unique: dict[str, Candidate] = {}
    for candidate in sorted(candidates, key=lambda c: (c.filename, c.sha256)):
        unique.setdefault(candidate.sha256, candidate)
    below = [c for c in unique.values() if c.size < policy.min_size]
    large = [c for c in unique.values() if c.size >= policy.min_size]
    wanted = [
        c
        for c in large
        if _name_matches(c.package, policy) and _section_matches(c.section, policy.sections)
    ]
    wanted.sort(key=lambda c: (-c.size, c.filename, c.sha256))
    selected: list[Candidate] = []
    cut: list[Candidate] = []
    room = policy.budget_bytes
    for candidate in wanted:
        if policy.budget_bytes == 0 or candidate.size <= room:
            selected.append(candidate)
            room -= candidate.size
        else:
            cut.append(candidate)
    return Plan(
        selected=tuple(selected),
        considered=len(unique),
        below_threshold=len(below),
        below_threshold_bytes=sum(c.size for c in below),
        filtered_out=len(large) - len(wanted),
        budget_cut=tuple(cut),
    )
