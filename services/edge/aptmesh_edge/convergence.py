"""Edges of a zone converge on each suite's newest repository generation.

An edge reports the generation it serves of each suite with every registration
(`reported`: suite key, InRelease Date, a short hash of the signed Release and
when it first verified it), and renews at once when it verifies a new one. On
each listing of the registry (`app.EDGES_EVERY`), an edge compares what the
other edges of its zone serve with what it serves (`behind`): a suite where
one of them serves a newer Date is revalidated at once (its InRelease, one
conditional request), instead of waiting out the freeze window. So after one
edge of a zone has verified a new InRelease, every other edge of the zone
serves it within one listing interval plus one InRelease fetch (the bound,
as long as their upstream serves it too). An edge whose upstream lags the
others' (another mirror) asks again at each listing, one conditional request
per suite, counted in `aptmesh_edge_zone_revalidations_total`.

Only a newer Date counts: two generations of one Date (unordered, DESIGN
integrity rule 5) never make edges chase each other. What a client gets from
one edge stays one generation: revalidating is the same path a request takes
(`IndexService`), with its by-hash grace for the replaced generation.
"""

from __future__ import annotations

from collections.abc import Iterable

from aptmesh_edge.trust import Served
from aptmesh_tracker.records import MAX_GENERATIONS, MAX_SUITE_CHARS, Edge, SuiteGeneration

HASH_DIGITS = 16


def reported(served: Iterable[Served]) -> tuple[SuiteGeneration, ...]:
    """What the registration carries: at most `MAX_GENERATIONS` suites (by suite key), and
    none whose key is longer than the registry takes."""
    out = []
    for one in served:
        if len(one.suite) > MAX_SUITE_CHARS or not one.suite.isprintable():
            continue  # the registry would refuse the whole registration
        date = one.generation.date
        out.append(
            SuiteGeneration(
                one.suite,
                max(0, int(date.timestamp())) if date is not None else 0,
                one.generation.sha256[:HASH_DIGITS],
                int(one.first_seen),
            )
        )
    return tuple(sorted(out, key=lambda g: g.suite)[:MAX_GENERATIONS])


def behind(served: Iterable[Served], me: str, zone: str, edges: Iterable[Edge]) -> list[Served]:
    """The suites this edge (`me`) serves where another edge of `zone` serves a newer Date."""
    newest: dict[str, int] = {}
    for edge in edges:
        if edge.id == me or edge.zone != zone or edge.seed_box:
            continue
        for generation in edge.generations:
            newest[generation.suite] = max(generation.date, newest.get(generation.suite, 0))
    out = []
    for one in served:
        date = one.generation.date
        ours = int(date.timestamp()) if date is not None else 0
        if newest.get(one.suite, 0) > ours:
            out.append(one)
    return out
