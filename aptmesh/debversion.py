"""Debian version numbers and relations: dpkg's ordering, written once (pure).

A version is `[epoch:]upstream_version[-debian_revision]` (Debian Policy 5.6.12).
`compare` is dpkg's `verrevcmp` applied to the epoch (numerically), then the
upstream version, then the revision: each compared as alternating runs of
non-digits (by a character order where `~` sorts before everything, even the
end of the string, and letters before other characters) and digits
(numerically). `tests/unit/test_debversion.py` holds it to `dpkg
--compare-versions` on generated pairs.

A relation (`Depends: foo (>= 1.2) | bar`) is parsed by `parse_relations` into
alternatives of `Relation`s; `Relation.satisfied_by` is the one place that
reads the five operators (`<<`, `<=`, `=`, `>=`, `>>`; the obsolete `<` and `>`
mean `<=` and `>=`, as dpkg reads them).
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from functools import cmp_to_key


class VersionError(ValueError):
    """A version or relation is not of Debian's form; the text says which."""


@dataclass(frozen=True)
class Version:
    epoch: int
    upstream: str
    revision: str

    @classmethod
    def parse(cls, text: str) -> Version:
        text = text.strip()
        epoch, rest = 0, text
        if ":" in text:
            head, _, rest = text.partition(":")
            if not head.isdigit():
                raise VersionError(f"version {text!r}: the epoch is not a number")
            epoch = int(head)
        upstream, sep, revision = rest.rpartition("-")
        if not sep:
            upstream, revision = rest, ""
        if not re.fullmatch(r"[0-9][A-Za-z0-9.+~:-]*", upstream):
            raise VersionError(f"version {text!r}: not a Debian version")
        if sep and not re.fullmatch(r"[A-Za-z0-9.+~]+", revision):
            raise VersionError(f"version {text!r}: bad Debian revision")
        return cls(epoch, upstream, revision)


def _order(c: str) -> int:
    if c == "~":
        return -1
    if c.isdigit():
        return 0
    if c.isalpha():
        return ord(c)
    return ord(c) + 256


def _verrevcmp(a: str, b: str) -> int:
    i = j = 0
    while i < len(a) or j < len(b):
        first_diff = 0
        while (i < len(a) and not a[i].isdigit()) or (j < len(b) and not b[j].isdigit()):
            ac = _order(a[i]) if i < len(a) else 0
            bc = _order(b[j]) if j < len(b) else 0
            if ac != bc:
                return ac - bc
            i += 1
            j += 1
        while i < len(a) and a[i] == "0":
            i += 1
        while j < len(b) and b[j] == "0":
            j += 1
        while i < len(a) and a[i].isdigit() and j < len(b) and b[j].isdigit():
            if not first_diff:
                first_diff = ord(a[i]) - ord(b[j])
            i += 1
            j += 1
        if i < len(a) and a[i].isdigit():
            return 1
        if j < len(b) and b[j].isdigit():
            return -1
        if first_diff:
            return first_diff
    return 0


def compare(a: str, b: str) -> int:
    """<0, 0 or >0 as version `a` sorts before, with or after `b` (dpkg's order)."""
    va, vb = Version.parse(a), Version.parse(b)
    if va.epoch != vb.epoch:
        return -1 if va.epoch < vb.epoch else 1
    result = _verrevcmp(va.upstream, vb.upstream) or _verrevcmp(va.revision, vb.revision)
    return (result > 0) - (result < 0)


version_key = cmp_to_key(compare)


class Op(enum.Enum):
    LT = "<<"
    LE = "<="
    EQ = "="
    GE = ">="
    GT = ">>"

    def holds(self, order: int) -> bool:
        """Whether `compare(candidate, target) == order` satisfies this operator."""
        return {
            Op.LT: order < 0,
            Op.LE: order <= 0,
            Op.EQ: order == 0,
            Op.GE: order >= 0,
            Op.GT: order > 0,
        }[self]


_OPS = {"<<": Op.LT, "<=": Op.LE, "=": Op.EQ, ">=": Op.GE, ">>": Op.GT, "<": Op.LE, ">": Op.GE}
_RELATION = re.compile(
    r"^\s*([a-z0-9][a-z0-9+.-]*)(?::([a-z0-9-]+))?\s*"
    r"(?:\(\s*(<<|<=|>=|>>|=|<|>)\s*([^)\s]+)\s*\))?\s*(?:\[[^]]*\])?\s*(?:<[^>]*>\s*)*$"
)


@dataclass(frozen=True)
class Relation:
    """One package of a relation field: a name, an optional `:arch` qualifier and constraint."""

    name: str
    arch: str = ""  # "any", "native", an architecture, or empty
    op: Op | None = None
    version: str = ""

    def satisfied_by(self, version: str) -> bool:
        if self.op is None:
            return True
        return self.op.holds(compare(version, self.version))

    def __str__(self) -> str:
        arch = f":{self.arch}" if self.arch else ""
        constraint = f" ({self.op.value} {self.version})" if self.op else ""
        return f"{self.name}{arch}{constraint}"


def parse_relation(text: str) -> Relation:
    m = _RELATION.match(text)
    if m is None:
        raise VersionError(f"relation {text.strip()!r}: not `name [(op version)]`")
    name, arch, op, version = m.groups()
    if op is not None:
        Version.parse(version)
    return Relation(name, arch or "", _OPS[op] if op else None, version or "")


def parse_relations(field: str) -> list[list[Relation]]:
    """`a (>= 1) | b, c` -> [[a (>= 1), b], [c]]: a list of alternatives, all needed."""
    groups = [g for g in (part.strip() for part in field.split(",")) if g]
    return [[parse_relation(alt) for alt in group.split("|")] for group in groups]
