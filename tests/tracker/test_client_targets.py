"""The tracker client's targets: one address, a `dns:///` name, or several replicas' IPs."""

from __future__ import annotations

import pytest

from aptmesh.config import InvalidOption
from aptmesh_edge.config import EdgeConfig
from aptmesh_seeder.config import SeederConfig
from aptmesh_tracker.client import TargetError, channel_target, target_problem


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("tracker:50051", ("tracker:50051", "pick_first")),
        ("dns:///tracker-headless:50051", ("dns:///tracker-headless:50051", "round_robin")),
        (
            "10.0.0.1:50051, 10.0.0.2:50051",
            ("ipv4:10.0.0.1:50051,10.0.0.2:50051", "round_robin"),
        ),
        (
            "[fd00::1]:50051,[fd00::2]:50051",
            ("ipv6:[fd00::1]:50051,[fd00::2]:50051", "round_robin"),
        ),
    ],
)
def test_targets(target: str, expected: tuple[str, str]) -> None:
    assert channel_target(target) == expected


@pytest.mark.parametrize(
    ("target", "reason"),
    [
        ("", "empty"),
        ("tracker-0:50051,tracker-1:50051", "a list of replicas takes IP addresses"),
        ("10.0.0.1:50051,10.0.0.2", "not host:port"),
        ("10.0.0.1:50051,[fd00::2]:50051", "mixes IPv4 and IPv6"),
    ],
)
def test_unusable_targets_say_why(target: str, reason: str) -> None:
    with pytest.raises(TargetError, match=reason):
        channel_target(target)
    assert reason in target_problem(target)


def test_configs_refuse_a_list_of_names() -> None:
    for config in (EdgeConfig, SeederConfig):
        with pytest.raises(InvalidOption, match="dns:///"):
            config(tracker_grpc="a:1,b:2")
