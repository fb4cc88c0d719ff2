"""How far the mesh converged on each suite's newest repository generation.

Derived from the live leases, with no table of its own: every registration
carries the generations its edge serves, each with the time the edge first
verified it (`records.SuiteGeneration`), so per suite and generation the
count of live edges serving it and its first-seen time (the earliest over
those edges) are read from one listing of the leases. Every backend, and
every replica sharing one, answers alike, and a restarted tracker knows the
history at once. What it cannot know is a generation no live edge serves any
more, which the convergence view does not need. First-seen times are the
edges' clocks (NTP-synchronised, as the leases already assume).

Bounds: an edge reports at most `records.MAX_GENERATIONS` suites; the view
keeps at most `MAX_SUITES` suites (those the most edges serve, then by name),
so metric labels stay bounded whatever the edges report.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from aptmesh_tracker.records import Edge, SuiteGeneration

MAX_SUITES = 32


@dataclass(frozen=True)
class GenerationServed:
    date: int  # InRelease Date, epoch seconds; 0: none
    hash: str
    first_seen: int  # the earliest first_seen of the live edges serving it
    edges: int


@dataclass(frozen=True)
class SuiteConvergence:
    suite: str
    edges: int  # live edges that report the suite
    generations: tuple[GenerationServed, ...]  # the newest first

    @property
    def newest(self) -> GenerationServed:
        return self.generations[0]

    def lag_seconds(self, now: float) -> float:
        """Seconds since the newest generation was first seen while some edge reporting the
        suite serves an older one; 0 once every one serves it."""
        newest = self.newest
        if newest.edges >= self.edges:
            return 0.0
        return max(0.0, now - newest.first_seen)


def converge(edges: Iterable[Edge], max_suites: int = MAX_SUITES) -> tuple[SuiteConvergence, ...]:
    """Per suite, the generations the edges (never seed boxes) serve."""
    by_suite: dict[str, dict[tuple[int, str], list[SuiteGeneration]]] = {}
    for edge in edges:
        if edge.seed_box:
            continue
        for generation in edge.generations:
            by_suite.setdefault(generation.suite, {}).setdefault(generation.order, []).append(
                generation
            )
    suites = [
        SuiteConvergence(
            suite,
            sum(len(served) for served in generations.values()),
            tuple(
                GenerationServed(date, digest, min(g.first_seen for g in served), len(served))
                for (date, digest), served in sorted(generations.items(), reverse=True)
            ),
        )
        for suite, generations in by_suite.items()
    ]
    suites.sort(key=lambda s: (-s.edges, s.suite))
    return tuple(sorted(suites[:max_suites], key=lambda s: s.suite))
