"""The collection resolver over parsed Packages entries: versions, dependencies, alternatives,
virtual packages, sections and priorities, and what cannot be met."""

from __future__ import annotations

from aptmesh.debian import PackageEntry
from aptmesh.debversion import parse_relation
from aptmesh.resolve import Universe, resolve


def entry(
    name: str, version: str, arch: str = "amd64", section: str = "misc", **fields: str
) -> PackageEntry:
    extra = tuple((k.replace("_", "-"), v) for k, v in fields.items())
    return PackageEntry(
        name,
        version,
        arch,
        f"pool/main/{name[0]}/{name}/{name}_{version}_{arch}.deb",
        100,
        "0" * 64,
        section,
        extra,
    )


UNIVERSE = Universe(
    [
        entry("app", "1.0-1", Depends="libfoo (>= 2), mail-transport-agent, data"),
        entry("app", "2.0-1", Depends="libfoo (>= 3) | libfoo-compat, data"),
        entry("libfoo", "2.5-1", Pre_Depends="libc6"),
        entry("libfoo-compat", "1.0", Provides="libfoo (= 3.0)"),
        entry("libc6", "2.36-9"),
        entry("exim4", "4.96", Provides="mail-transport-agent", Priority="standard"),
        entry("data", "1.0", arch="all", section="net"),
        entry("armonly", "1.0", arch="arm64"),
        entry("broken", "1.0", Depends="nosuch (>= 1)"),
        entry("base", "1", Priority="required"),
    ],
    ["amd64"],
)


def names(
    requests: list[str], deps: bool = True, **kw: tuple[str, ...]
) -> tuple[list[str], list[str]]:
    result = resolve([parse_relation(r) for r in requests], UNIVERSE, with_dependencies=deps, **kw)
    return [f"{e.package}={e.version}" for e in result.entries], result.errors


def test_newest_satisfying_version_and_its_dependencies() -> None:
    # app 2.0 wants libfoo >= 3: only the compat package provides it (a versioned Provides).
    assert names(["app"]) == (["app=2.0-1", "data=1.0", "libfoo-compat=1.0"], [])
    assert names(["app"], deps=False) == (["app=2.0-1"], [])


def test_a_constraint_picks_an_older_version_and_virtual_packages_resolve() -> None:
    chosen, errors = names(["app (<< 2)"])
    assert errors == []
    assert chosen == ["app=1.0-1", "data=1.0", "exim4=4.96", "libc6=2.36-9", "libfoo=2.5-1"]


def test_unknown_and_unsatisfiable_requests_say_why() -> None:
    assert names(["nosuch"])[1] == [
        "nosuch: nothing satisfies it (the indexes have no such package)"
    ]
    assert names(["app (>= 3)"])[1] == [
        "app (>= 3): nothing satisfies it (the indexes have 1.0-1, 2.0-1)"
    ]
    chosen, errors = names(["broken"])
    assert chosen == ["broken=1.0"]
    assert errors == [
        "broken 1.0 depends on nosuch (>= 1): nothing satisfies it"
        " (the indexes have no such package)"
    ]
    assert names(["armonly"])[1] != []  # another architecture's package is not a candidate


def test_sections_and_priorities() -> None:
    assert names([], sections=("net",))[0] == ["data=1.0"]
    assert names([], priorities=("required", "standard"))[0] == ["base=1", "exim4=4.96"]
