"""The selection policy: threshold, patterns, sections, budget, determinism."""

from __future__ import annotations

import hashlib

from hypothesis import given
from hypothesis import strategies as st

from aptmesh_seeder.select import Candidate, Policy, plan

MiB = 1024**2


def _c(name: str, size: int, section: str | None = "misc", sha: str | None = None) -> Candidate:
    digest = sha or hashlib.sha256(f"{name}/{size}".encode()).hexdigest()
    return Candidate(digest, size, name, f"pool/{name}.deb", section)


def test_threshold_is_inclusive() -> None:
    result = plan([_c("at", MiB), _c("under", MiB - 1), _c("over", MiB + 1)], Policy())
    assert {c.package for c in result.selected} == {"at", "over"}
    assert result.below_threshold == 1 and result.below_threshold_bytes == MiB - 1


def test_patterns_and_sections() -> None:
    candidates = [
        _c("linux-image-6.1", 80 * MiB, "kernel"),
        _c("linux-image-6.1-dbg", 900 * MiB, "debug"),
        _c("libreoffice-core", 40 * MiB, "non-free/editors"),
        _c("texlive-fonts", 300 * MiB, "tex"),
    ]
    only_linux = plan(candidates, Policy(include=("linux-*",), exclude=("*-dbg",)))
    assert [c.package for c in only_linux.selected] == ["linux-image-6.1"]
    assert only_linux.filtered_out == 3
    editors = plan(candidates, Policy(sections=("editors", "tex")))
    assert [c.package for c in editors.selected] == ["texlive-fonts", "libreoffice-core"]


def test_budget_takes_largest_first_and_fills_with_smaller_ones() -> None:
    candidates = [_c("a", 5 * MiB), _c("b", 4 * MiB), _c("c", 3 * MiB), _c("d", 2 * MiB)]
    result = plan(candidates, Policy(budget_bytes=8 * MiB))
    assert [c.package for c in result.selected] == ["a", "c"]
    assert [c.package for c in result.budget_cut] == ["b", "d"]
    assert result.selected_bytes == 8 * MiB and result.budget_cut_bytes == 6 * MiB
    summary = result.summary()
    assert summary["budget_cut"] == 2 and summary["budget_cut_largest"] == ["b.deb", "d.deb"]


def test_the_same_file_listed_twice_counts_once() -> None:
    one = _c("x", 2 * MiB, sha="a" * 64)
    twin = Candidate("a" * 64, 2 * MiB, "x", "pool/other/x.deb", "misc")
    result = plan([one, twin], Policy())
    assert result.considered == 1 and len(result.selected) == 1


@given(
    st.lists(
        st.tuples(st.integers(0, 20 * MiB), st.sampled_from(["a", "b", "c", "d"])), max_size=30
    ),
    st.integers(0, 60 * MiB),
)
def test_plans_are_deterministic_and_within_budget(
    items: list[tuple[int, str]], budget: int
) -> None:
    candidates = [
        Candidate(f"{i:064x}", size, name, f"pool/{name}{i}.deb")
        for i, (size, name) in enumerate(items)
    ]
    policy = Policy(budget_bytes=budget)
    result = plan(candidates, policy)
    assert result == plan(list(reversed(candidates)), policy)
    if budget:
        assert result.selected_bytes <= budget
        room = budget - result.selected_bytes
        assert all(c.size > room for c in result.budget_cut)
    assert all(c.size >= policy.min_size for c in result.selected)
    assert len(result.selected) + len(result.budget_cut) + result.below_threshold == len(candidates)
