"""Fuzz targets for what collections read from outside: relation fields of an archive's
Packages, package requests and specs of an administrator (via the wire), and resolution over
whatever an index holds. Bounded (the `default` profile) in `make test`, deep in `make fuzz`."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aptmesh import collection as col
from aptmesh.debian import PackageEntry
from aptmesh.debversion import VersionError, compare, parse_relation, parse_relations
from aptmesh.resolve import Universe, resolve

pytestmark = pytest.mark.fuzz

NAMES = st.sampled_from(["a", "b", "c", "lib-x", "virt"])
VERSIONS = st.sampled_from(["1", "1.0-1", "2:0.1", "1.0~rc1", "10", "x", "1:", "-1", "1.0-"])
FIELD = st.text(alphabet="abcvirt-x0123456789.:~+()<>=|,! []", max_size=60)


@given(FIELD)
def test_relation_fields_parse_or_say_why(text: str) -> None:
    try:
        groups = parse_relations(text)
    except VersionError:
        return
    for group in groups:
        for rel in group:
            assert parse_relation(str(rel)) == rel  # what it prints, it reads back


@given(VERSIONS, VERSIONS)
def test_versions_compare_or_say_why(a: str, b: str) -> None:
    try:
        order = compare(a, b)
    except VersionError:
        return
    assert compare(b, a) == -order


def _entry(name: str, version: str, depends: str, provides: str) -> PackageEntry:
    extra = tuple((k, v) for k, v in (("Depends", depends), ("Provides", provides)) if v)
    return PackageEntry(
        name, version, "amd64", f"pool/{name}_{version}.deb", 1, "0" * 64, None, extra
    )


@given(
    st.lists(st.tuples(NAMES, VERSIONS, FIELD, FIELD), max_size=8),
    st.lists(st.tuples(NAMES, VERSIONS), max_size=4),
    st.booleans(),
)
def test_resolution_never_raises(
    packages: list[tuple[str, str, str, str]], requests: list[tuple[str, str]], deps: bool
) -> None:
    universe = Universe([_entry(*p) for p in packages], ["amd64"])
    wanted = []
    for name, version in requests:
        try:
            wanted.append(parse_relation(f"{name} (>= {version})"))
        except VersionError:
            wanted.append(parse_relation(name))
    result = resolve(wanted, universe, with_dependencies=deps)
    assert len(result.errors) <= result.error_count
    for (name, _), entry in result.chosen.items():
        assert entry.package == name


@given(
    st.text(max_size=20),
    st.lists(st.text(max_size=30), max_size=3),
    st.lists(
        st.tuples(st.text(max_size=10), st.text(max_size=70), st.integers(-5, 10)), max_size=2
    ),
)
def test_specs_are_checked_without_surprises(
    name: str, packages: list[str], files: list[tuple[str, str, int]]
) -> None:
    spec = col.CollectionSpec(
        name,
        sources=("http://h/debian stable main",),
        packages=tuple(packages),
        files=tuple(col.PlainFile(n, s, size, ("http://h/f",)) for n, s, size in files),
    )
    try:
        checked = col.check_spec(spec)
    except col.SpecError:
        return
    assert col.check_spec(checked) == checked
    assert col.spec_from_proto(col.spec_to_proto(checked)) == checked
