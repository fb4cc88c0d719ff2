"""`aptmesh up`'s decisions: what it runs when the user leaves things out."""

from __future__ import annotations

from pathlib import Path

import pytest

from aptmesh.aptsources import AptSource
from aptmesh.config import ConfigError, build
from aptmesh_cli.up import UpConfig, apt_lines, origin, plan, repository_spec


def _keyring(tmp_path: Path) -> Path:
    path = tmp_path / "k.gpg"
    path.write_bytes(b"key")
    return path


def test_without_upstream_the_machines_debian_mirror_and_keyring_are_used(tmp_path: Path) -> None:
    keyring = _keyring(tmp_path)
    sources = [
        AptSource("http://mirror.example/debian-security", ("bookworm-security",), ("main",)),
        AptSource(
            "http://mirror.example/debian", ("bookworm", "bookworm-updates"), ("main",), keyring
        ),
    ]
    p = plan(UpConfig(), sources, "arm64")
    assert p.upstreams == ("http://mirror.example/debian",)
    assert p.suites == ("bookworm",) and p.keyring == keyring
    assert p.architectures == ("arm64", "all")


def test_given_upstream_and_keyring_win(tmp_path: Path) -> None:
    keyring = _keyring(tmp_path)
    cfg = UpConfig(upstream=("http://127.0.0.1:8080/debian/",), keyring=keyring, suites=("stable",))
    p = plan(cfg, [], "amd64")
    assert p.upstreams == ("http://127.0.0.1:8080/debian",) and p.suites == ("stable",)
    spec = repository_spec(0, p.upstreams[0], p, ("main",))
    assert spec == (
        "127.0.0.1-8080-debian=http://127.0.0.1:8080/debian;suites=stable"
        ";components=main;architectures=amd64 all"
    )
    assert origin(p.upstreams[0]) == "http://127.0.0.1:8080"
    assert apt_lines(p, "http://127.0.0.1:3142", ("main",)) == [
        f"deb [signed-by={keyring}] mesh+http://127.0.0.1:8080/debian stable main"
    ]


def test_nothing_to_run_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no Debian mirror"):
        plan(UpConfig(), [], "amd64")
    with pytest.raises(ConfigError, match="APTMESH_UP_KEYRING: no such file"):
        plan(
            UpConfig(upstream=("http://x.example/debian",), keyring=tmp_path / "nope"), [], "amd64"
        )
    with pytest.raises(ConfigError, match="--upstream / APTMESH_UP_UPSTREAM: 'ftp://x' is not"):
        build(UpConfig, "up", {}, {"APTMESH_UP_UPSTREAM": "ftp://x"})
