"""Debian version ordering against the real `dpkg --compare-versions`, and relation parsing."""

from __future__ import annotations

import itertools
import random
import shutil
import subprocess

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aptmesh.debversion import Op, Relation, VersionError, compare, parse_relation, parse_relations

CASES = [
    ("1.0", "1.0", 0),
    ("1.0", "1.0-0", 0),
    ("1.0-1", "1.0-2", -1),
    ("1:0.1", "2.0", 1),
    ("1.0~rc1", "1.0", -1),
    ("1.0~~", "1.0~", -1),
    ("1.0a", "1.0", 1),
    ("1.0+b1", "1.0", 1),
    ("1.0.1", "1.0a", 1),  # letters sort before other characters
    ("2.30-1", "2.4-1", 1),
    ("0010", "10", 0),
    ("1.2-3ubuntu1", "1.2-3", 1),
    ("7.88.1-10+deb12u5", "7.88.1-10+deb12u12", -1),
]


@pytest.mark.parametrize(("a", "b", "order"), CASES)
def test_known_orders(a: str, b: str, order: int) -> None:
    assert compare(a, b) == order
    assert compare(b, a) == -order


def _dpkg_order(a: str, b: str) -> int:
    for op, order in (("lt", -1), ("eq", 0)):
        if subprocess.run(["dpkg", "--compare-versions", a, op, b], check=False).returncode == 0:
            return order
    return 1


_PIECES = ["0", "1", "2", "10", "01", "a", "b", "~", "+", ".", "~a", "rc", "+b1", "9"]


def _version(rng: random.Random) -> str:
    upstream = rng.choice("0123456789") + "".join(rng.choices(_PIECES, k=rng.randint(0, 4)))
    epoch = f"{rng.randint(0, 2)}:" if rng.random() < 0.2 else ""
    revision = (
        "-" + "".join(rng.choices(_PIECES, k=rng.randint(1, 3))) if rng.random() < 0.5 else ""
    )
    return epoch + upstream + revision


@pytest.mark.skipif(shutil.which("dpkg") is None, reason="needs dpkg")
def test_the_order_is_dpkgs() -> None:
    rng = random.Random(17)
    versions = [_version(rng) for _ in range(40)] + [c[0] for c in CASES]
    pairs = list(itertools.combinations(versions, 2))
    rng.shuffle(pairs)
    for a, b in pairs[:150]:  # bounded: one dpkg process or two per pair
        assert compare(a, b) == _dpkg_order(a, b), (a, b)


@given(st.lists(st.sampled_from(_PIECES), min_size=0, max_size=5))
@settings(max_examples=100)
def test_the_order_is_total_and_antisymmetric(pieces: list[str]) -> None:
    a = "1" + "".join(pieces)
    b = "1" + "".join(reversed(pieces))
    assert compare(a, b) == -compare(b, a)
    assert compare(a, a) == 0


def test_relations() -> None:
    assert parse_relations("libc6 (>= 2.36), foo | bar:any (<< 2), baz [amd64] <!nocheck>") == [
        [Relation("libc6", "", Op.GE, "2.36")],
        [Relation("foo"), Relation("bar", "any", Op.LT, "2")],
        [Relation("baz")],
    ]
    assert parse_relation("old (< 1)").op is Op.LE  # obsolete spelling, as dpkg reads it
    rel = parse_relation("pkg (= 1:2.0-1)")
    assert rel.satisfied_by("1:2.0-1") and not rel.satisfied_by("2.0-1")
    assert str(rel) == "pkg (= 1:2.0-1)"
    for bad in ("", "Foo", "pkg (>= )", "pkg (~ 1)", "pkg (>= 1:x)"):
        with pytest.raises(VersionError):
            parse_relation(bad)
