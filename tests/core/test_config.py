"""The configuration contract: flags, APTMESH_<SERVICE>_<OPTION> variables, clear errors."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pytest

from aptmesh.config import (
    ConfigError,
    build,
    load,
    mask_url_password,
    option,
    parse_size,
    render,
    require,
)


@dataclass(frozen=True)
class DemoConfig:
    port: int = option(3142, "HTTP port")
    min_size: int = option(1 << 20, "smallest swarmed file", size=True)
    mode: Literal["enforce", "auto", "off"] = option("enforce", "verification mode")
    upstreams: tuple[str, ...] = option((), "configured upstreams")
    public: bool = option(False, "join the public swarm")
    data: Path = option(Path("/var/lib/x"), "data directory")
    token: str = option("", "publish token", secret=True)

    def __post_init__(self) -> None:
        require(0 < self.port < 65536, "port", "must be between 1 and 65535")


def test_defaults_env_and_flags_in_order_of_precedence() -> None:
    assert build(DemoConfig, "demo", {}, {}) == DemoConfig()
    env = {"APTMESH_DEMO_PORT": "8080", "APTMESH_DEMO_UPSTREAMS": "a=http://x, b=http://y"}
    config = build(DemoConfig, "demo", {}, env)
    assert config.port == 8080 and config.upstreams == ("a=http://x", "b=http://y")
    config = load(DemoConfig, "demo", ["--port", "9000", "--upstreams", "c=http://z"], env)
    assert config.port == 9000 and config.upstreams == ("c=http://z",)


def test_values_parse_by_type() -> None:
    env = {
        "APTMESH_DEMO_MIN_SIZE": "64KiB",
        "APTMESH_DEMO_MODE": "auto",
        "APTMESH_DEMO_PUBLIC": "yes",
        "APTMESH_DEMO_DATA": "/srv/d",
    }
    config = build(DemoConfig, "demo", {}, env)
    assert (config.min_size, config.mode, config.public) == (65536, "auto", True)
    assert config.data == Path("/srv/d")
    assert parse_size("1MiB") == 1 << 20 and parse_size("2GB") == 2_000_000_000


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"APTMESH_DEMO_PROT": "1"}, "unknown environment variable APTMESH_DEMO_PROT"),
        ({"APTMESH_DEMO_PORT": "x"}, "--port / APTMESH_DEMO_PORT: not an integer"),
        ({"APTMESH_DEMO_PORT": "70000"}, "APTMESH_DEMO_PORT: must be between 1 and 65535"),
        ({"APTMESH_DEMO_MODE": "strict"}, "APTMESH_DEMO_MODE: 'strict' is not one of"),
        ({"APTMESH_DEMO_PUBLIC": "maybe"}, "not a boolean"),
        ({"APTMESH_DEMO_MIN_SIZE": "1XB"}, "not a size"),
    ],
)
def test_bad_values_name_the_option(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        build(DemoConfig, "demo", {}, env)
    assert message in str(caught.value)


def test_other_services_variables_are_not_ours() -> None:
    assert build(DemoConfig, "demo", {}, {"APTMESH_EDGE_ANYTHING": "1"}) == DemoConfig()


def test_print_config_masks_secrets(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        load(DemoConfig, "demo", ["--print-config"], {"APTMESH_DEMO_TOKEN": "s3cret"})
    assert exited.value.code == 0
    out = capsys.readouterr().out
    assert "APTMESH_DEMO_TOKEN=***" in out and "s3cret" not in out
    assert "APTMESH_DEMO_PORT=3142" in out
    assert render(DemoConfig(), "demo").count("\n") == 7


@dataclass(frozen=True)
class UrlConfig:
    store: str = option("", "database URL", mask=mask_url_password)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (
            "postgresql://u:p%40ss@db:5432/x?sslmode=require",
            "postgresql://u:***@db:5432/x?sslmode=require",
        ),
        ("redis://:hunter2@cache:6379/0", "redis://:***@cache:6379/0"),
        ("postgresql://u@db/x", "postgresql://u@db/x"),
        ("", ""),
    ],
)
def test_print_config_masks_a_url_password_only(url: str, shown: str) -> None:
    assert render(UrlConfig(url), "demo") == f"APTMESH_DEMO_STORE={shown}\n"
