"""The peer's configuration: the variables the Debian package's debconf answers write
(packaging/aptmesh-peer/postinst) parse into the limits the policy decides on."""

from __future__ import annotations

import subprocess
import sys

import pytest

from aptmesh.config import ConfigError, build
from aptmesh_peer.config import PeerConfig
from aptmesh_peer.policy import Participation, Profile, swarm_plan

# What postinst writes for a contributing home peer (every variable it manages).
POSTINST_ENV = {
    "APTMESH_PEER_PARTICIPATION": "contribute",
    "APTMESH_PEER_PROFILE": "home",
    "APTMESH_PEER_UPLOAD_RATE_LIMIT": "1MiB",
    "APTMESH_PEER_SHARE_RATIO": "1.5",
    "APTMESH_PEER_SEED_HOURS": "24",
    "APTMESH_PEER_UPLOAD_WINDOWS": "22:00-07:00,12:00-13:00",
    "APTMESH_PEER_DAILY_UPLOAD_BUDGET": "500MiB",
    "APTMESH_PEER_MONTHLY_UPLOAD_BUDGET": "10GB",
    "APTMESH_PEER_PORT_MAPPING": "false",
    "APTMESH_PEER_LAN_RANGES": "10.0.0.0/8,192.168.0.0/16",
}


def test_the_debconf_answers_become_limits() -> None:
    config = build(PeerConfig, "peer", {}, POSTINST_ENV)
    limits = config.limits()
    assert limits.participation is Participation.CONTRIBUTE
    assert limits.profile is Profile.HOME
    assert limits.upload_rate_limit == 1024**2
    assert limits.share_ratio == 1.5 and limits.seed_seconds == 24 * 3600
    assert [str(w) for w in limits.windows] == ["22:00-07:00", "12:00-13:00"]
    assert limits.daily_budget == 500 * 1024**2 and limits.monthly_budget == 10 * 1000**3
    assert swarm_plan(limits).upload_rate_limit == 1024**2


def test_empty_windows_mean_any_time_and_the_default_is_opted_out() -> None:
    config = build(PeerConfig, "peer", {}, {"APTMESH_PEER_UPLOAD_WINDOWS": ""})
    assert config.limits().windows == ()
    assert not swarm_plan(config.limits()).enabled


@pytest.mark.parametrize(
    ("variable", "value", "named"),
    [
        ("APTMESH_PEER_PARTICIPATION", "yes", "--participation"),
        ("APTMESH_PEER_UPLOAD_WINDOWS", "22-7", "--upload-windows"),
        ("APTMESH_PEER_LAN_RANGES", "lan", "--lan-ranges"),
        ("APTMESH_PEER_SHARE_RATIO", "-1", "--share-ratio"),
        ("APTMESH_PEER_UPLOAD_RATE", "1MiB", "APTMESH_PEER_UPLOAD_RATE"),
    ],
)
def test_a_bad_or_unknown_variable_is_an_error_that_names_it(
    variable: str, value: str, named: str
) -> None:
    with pytest.raises(ConfigError, match=named):
        build(PeerConfig, "peer", {}, {variable: value})


def test_the_command_reports_a_bad_value_without_a_traceback() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "aptmesh_cli.main", "peer"],
        env={"APTMESH_PEER_UPLOAD_WINDOWS": "25:00-01:00", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.startswith("aptmesh peer: bad value for --upload-windows")
    assert "Traceback" not in result.stderr
