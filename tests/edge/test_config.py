"""The edge's configuration and its command line."""

from __future__ import annotations

from pathlib import Path

import pytest

from aptmesh import config as aptconfig
from aptmesh_edge import main as edge_main
from aptmesh_edge.config import EdgeConfig


def test_defaults_flags_and_environment(tmp_path: Path) -> None:
    env = {
        "APTMESH_EDGE_UPSTREAMS": "deb.example.org=http://127.0.0.1:1|http://127.0.0.1:2",
        "APTMESH_EDGE_CACHE_MAX_BYTES": "2GiB",
        "APTMESH_EDGE_KEYRING": str(tmp_path / "keyring.gpg"),
        "APTMESH_EDGE_PUBLIC_SWARM": "true",
    }
    config = aptconfig.load(EdgeConfig, "edge", ["--http-port", "0"], env)
    assert config.http_port == 0 and config.grpc_bind == "[::]:50051"
    assert config.cache_max_bytes == 2 * 1024**3 and config.public_swarm
    assert config.upstreams == ("deb.example.org=http://127.0.0.1:1|http://127.0.0.1:2",)
    assert config.index_freeze_seconds == 27 and config.swarm_min_size == 1024**2
    assert config.verify_mode == "enforce" and config.listen_port == 6881
    rendered = aptconfig.render(EdgeConfig(publish_token="s3cret", verify_mode="off"), "edge")
    assert "APTMESH_EDGE_PUBLISH_TOKEN=***" in rendered and "s3cret" not in rendered


@pytest.mark.parametrize(
    ("env", "names"),
    [
        ({"APTMESH_EDGE_UPSTREAMS": "not a url"}, "APTMESH_EDGE_UPSTREAMS"),
        (
            {"APTMESH_EDGE_VERIFY_MODE": "enforce", "APTMESH_EDGE_UPSTREAMS": "http://h.example"},
            "APTMESH_EDGE_KEYRING",
        ),
        ({"APTMESH_EDGE_VERIFY_MODE": "sometimes"}, "APTMESH_EDGE_VERIFY_MODE"),
        ({"APTMESH_EDGE_CACHE_MAX_BYTES": "lots"}, "APTMESH_EDGE_CACHE_MAX_BYTES"),
        ({"APTMESH_EDGE_CACHE_SIZE": "1"}, "APTMESH_EDGE_CACHE_SIZE"),
    ],
)
def test_bad_values_name_the_option(env: dict[str, str], names: str) -> None:
    with pytest.raises(aptconfig.ConfigError, match=names):
        aptconfig.load(EdgeConfig, "edge", [], {"APTMESH_EDGE_VERIFY_MODE": "off", **env})


def test_upload_capacity_is_a_size_and_never_negative() -> None:
    flags = ["--upload-capacity", "10M", "--upload-rate-limit", "4MiB"]
    config = aptconfig.load(EdgeConfig, "edge", flags, {"APTMESH_EDGE_VERIFY_MODE": "off"})
    assert (config.upload_capacity, config.upload_rate_limit) == (10_000_000, 4 * 1024**2)
    assert EdgeConfig().upload_capacity == 0
    with pytest.raises(aptconfig.ConfigError, match="APTMESH_EDGE_UPLOAD_CAPACITY"):
        aptconfig.load(EdgeConfig, "edge", ["--upload-capacity", "-1"], {})
    with pytest.raises(aptconfig.InvalidOption, match="must not be negative"):
        EdgeConfig(upload_capacity=-1)


def test_main_reports_a_config_error_in_one_line_and_exits_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("APTMESH_EDGE_VERIFY_MODE", "sometimes")
    assert edge_main.main([]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "APTMESH_EDGE_VERIFY_MODE" in err


def test_print_config_shows_the_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        edge_main.main(["--print-config"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert "APTMESH_EDGE_HTTP_PORT=3142\n" in out and "APTMESH_EDGE_VERIFY_MODE=enforce\n" in out


def test_the_zone_file_gives_the_zone(tmp_path: Path) -> None:
    """What the Kubernetes init container writes from the node's zone label."""
    zone_file = tmp_path / "zone"
    zone_file.write_text("europe-west1-b\n")
    env = {"APTMESH_EDGE_ZONE_FILE": str(zone_file), "APTMESH_EDGE_ZONE": "fallback"}
    assert aptconfig.load(EdgeConfig, "edge", [], env).zone == "europe-west1-b"
    # A node without the label: the file is empty and the configured zone stays.
    zone_file.write_text("")
    assert aptconfig.load(EdgeConfig, "edge", [], env).zone == "fallback"
    assert EdgeConfig().zone == "" and EdgeConfig().zone_file is None


def test_an_unreadable_zone_file_is_named(tmp_path: Path) -> None:
    env = {"APTMESH_EDGE_ZONE_FILE": str(tmp_path / "missing")}
    with pytest.raises(aptconfig.ConfigError, match="APTMESH_EDGE_ZONE_FILE.*cannot read"):
        aptconfig.load(EdgeConfig, "edge", [], env)
