"""SeederConfig and the repository spec syntax: what parses, and clear errors for what does not."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from aptmesh.config import ConfigError, build, render
from aptmesh_seeder.config import SERVICE, SeederConfig, SpecError, parse_repository


def test_a_full_spec_parses() -> None:
    spec = parse_repository(
        "debian=https://mirror.example/debian/;suites=bookworm bookworm-updates;"
        "components=main contrib;architectures=amd64 arm64 all;keyring=/etc/k.gpg"
    )
    assert spec.name == "debian" and spec.source == "https://mirror.example/debian"
    assert spec.suites == ("bookworm", "bookworm-updates")
    assert spec.components == ("main", "contrib")
    assert spec.architectures == ("amd64", "arm64", "all")
    assert spec.keyring == Path("/etc/k.gpg")
    assert not spec.is_mirror and spec.webseed == spec.source == spec.upstream_url


def test_defaults_and_local_mirrors() -> None:
    spec = parse_repository("m=/srv/mirror/debian/;suites=stable")
    assert spec.is_mirror and spec.source == "/srv/mirror/debian"
    assert spec.components == ("main",) and spec.architectures == ("amd64", "all")
    assert spec.webseed is None and spec.upstream_url is None
    served = parse_repository("m=file:///srv/m;suites=stable;webseed=http://m.example/debian")
    assert served.source == "/srv/m" and served.upstream_url == "http://m.example/debian"
    off = parse_repository("d=http://m.example/debian;suites=stable;webseed=off")
    assert off.webseed is None and off.upstream_url == "http://m.example/debian"


@pytest.mark.parametrize(
    ("spec", "says"),
    [
        ("http://m.example/debian", "is not NAME=SOURCE"),
        ("d=http://m.example/debian", "suites= is required"),
        ("d=relative/dir;suites=stable", "absolute directory path"),
        ("d=ftp://m.example/debian;suites=stable", "absolute directory path"),
        ("d=http://m.example/debian;suites=stable;color=blue", "unknown part 'color=blue'"),
        ("d=http://m.example/debian;suites=", "suites= is empty"),
        ("d=http://m.example/debian;suites=a;suites=b", "given twice"),
        ("bad name=http://m.example/debian;suites=a", "must be letters"),
        ("d=http://m.example/debian;suites=a a", "twice"),
        ("d=http://m.example/debian;suites=a;webseed=nope", "webseed="),
        ("bookworm-updates;components=main", "commas separate repositories"),
    ],
)
def test_bad_specs_say_what_is_wrong(spec: str, says: str) -> None:
    with pytest.raises(SpecError, match=None) as caught:
        parse_repository(spec)
    assert says in str(caught.value)


def test_environment_lists_repositories_separated_by_commas() -> None:
    env = {
        "APTMESH_SEEDER_REPOSITORIES": (
            "a=http://a.example/debian;suites=bookworm bookworm-updates,"
            "b=/srv/ubuntu;suites=noble;architectures=amd64"
        ),
        "APTMESH_SEEDER_BUDGET_BYTES": "20GiB",
        "APTMESH_SEEDER_EXCLUDE": "*-dbgsym,linux-image-*",
    }
    config = build(SeederConfig, SERVICE, {}, env)
    a, b = config.repository_specs()
    assert a.suites == ("bookworm", "bookworm-updates") and b.is_mirror
    assert config.budget_bytes == 20 * 1024**3
    assert config.exclude == ("*-dbgsym", "linux-image-*")


def test_a_bad_spec_is_a_config_error_naming_the_option() -> None:
    env = {"APTMESH_SEEDER_REPOSITORIES": "a=http://a.example/debian;suites=x,bookworm-updates"}
    with pytest.raises(ConfigError) as caught:
        build(SeederConfig, SERVICE, {}, env)
    message = str(caught.value)
    assert "APTMESH_SEEDER_REPOSITORIES" in message and "commas separate" in message
    with pytest.raises(ConfigError, match="two repositories are named 'a'"):
        build(
            SeederConfig,
            SERVICE,
            {"repositories": ["a=/x;suites=s", "a=/y;suites=s"]},
            {},
        )
    with pytest.raises(ConfigError, match="APTMESH_SEEDER_TRACKER_ANNOUNCE"):
        build(SeederConfig, SERVICE, {}, {"APTMESH_SEEDER_TRACKER_ANNOUNCE": "tracker:6969"})


def test_defaults_follow_the_design() -> None:
    config = SeederConfig()
    assert config.swarm_min_size == 1024**2 and config.budget_bytes == 0
    assert config.grpc_bind == "[::]:50051" and config.http_port == 9090
    assert config.listen_port == 6881 and not config.utp and not config.public_swarm
    shown = render(SeederConfig(publish_token="s3cret"), SERVICE)
    assert "APTMESH_SEEDER_PUBLISH_TOKEN=***" in shown and "s3cret" not in shown


def test_the_seed_box_id_defaults_to_the_host_name_and_follows_the_registry_rule() -> None:
    assert SeederConfig().seed_box_id == socket.gethostname()
    assert build(SeederConfig, SERVICE, {"seed_box_id": "seed-a.dc1"}, {}).seed_box_id == (
        "seed-a.dc1"
    )
    for bad in ("", "-seed", "seed/a", "a" * 129):
        with pytest.raises(ConfigError, match="APTMESH_SEEDER_SEED_BOX_ID"):
            build(SeederConfig, SERVICE, {}, {"APTMESH_SEEDER_SEED_BOX_ID": bad})
