"""The mesh status's convergence part survives its protobuf form (status.py)."""

from __future__ import annotations

from aptmesh_tracker.convergence import GenerationServed, SuiteConvergence
from aptmesh_tracker.status import MeshStatus, from_proto, to_proto


def test_suites_round_trip_through_the_proto() -> None:
    suites = (
        SuiteConvergence(
            "http_deb.example.org_80/debian/dists/stable",
            3,
            (
                GenerationServed(1_700_000_060, "b" * 16, 1_700_000_100, 2),
                GenerationServed(0, "a" * 16, 1_600_000_000, 1),  # no Date
            ),
        ),
    )
    status = MeshStatus(1_700_000_200.0, "0.1.0", 60, (), (), 0, 0, 0, 0, (), suites)
    assert from_proto(to_proto(status)) == status
    assert suites[0].lag_seconds(1_700_000_200) == 100
