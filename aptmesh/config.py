"""Configuration: frozen dataclasses filled from flags and environment variables.

Each service declares one frozen dataclass; each field is an option with a
default (the one source of truth for it) and help text made with `option()`.
An option `swarm_min_size` of service `edge` is the flag `--swarm-min-size`
and the variable `APTMESH_EDGE_SWARM_MIN_SIZE`. Precedence: flag, then
variable, then default. An unknown `APTMESH_<SERVICE>_*` variable or a value
that does not parse or validate is a `ConfigError` naming the option, so a
typo in a Kubernetes manifest fails at start-up instead of being ignored.

Supported field types: str, int, float, bool, Path, tuple[str, ...] (comma
separated in a variable, a repeatable flag) and Literal choices. Integer
fields declared with `size=True` accept units (`64KiB`, `1MiB`, `2GB`).
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar
from urllib.parse import urlsplit, urlunsplit

ENV_PREFIX = "APTMESH_"

C = TypeVar("C")


class ConfigError(Exception):
    """A configuration value is unknown, malformed or invalid; the text names it."""


class InvalidOption(ValueError):
    """Raised from a config's `__post_init__`; the loader adds the option's names."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(reason)
        self.field = field
        self.reason = reason


def option(
    default: Any,
    help: str,  # noqa: A002 - the argparse word
    *,
    size: bool = False,
    secret: bool = False,
    mask: Callable[[str], str] | None = None,
) -> Any:
    """Declares a config field. `secret` values are masked by --print-config; `mask` shows
    a value that holds a secret in part (e.g. `mask_url_password`)."""
    meta = {"help": help, "size": size, "secret": secret, "mask": mask}
    if isinstance(default, list | dict | set):
        raise TypeError("config defaults must be immutable (use a tuple)")
    return dataclasses.field(default=default, metadata=meta)


_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "kib": 1024,
    "m": 1000**2,
    "mb": 1000**2,
    "mib": 1024**2,
    "g": 1000**3,
    "gb": 1000**3,
    "gib": 1024**3,
    "t": 1000**4,
    "tb": 1000**4,
    "tib": 1024**4,
}
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")


def parse_size(text: str) -> int:
    match = _SIZE_RE.match(text)
    unit = match.group(2).lower() if match else ""
    if not match or unit not in _SIZE_UNITS:
        raise ValueError(f"not a size: {text!r} (examples: 1048576, 64KiB, 1MiB, 2GB)")
    return int(float(match.group(1)) * _SIZE_UNITS[unit])


def _parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise ValueError(f"not a boolean: {text!r} (use true or false)")


def _parse_value(field: dataclasses.Field[Any], hint: Any, text: str) -> Any:
    origin = typing.get_origin(hint)
    if origin is Literal:
        choices = typing.get_args(hint)
        if text not in choices:
            raise ValueError(f"{text!r} is not one of {', '.join(map(str, choices))}")
        return text
    if origin is tuple:
        return tuple(part.strip() for part in text.split(",") if part.strip())
    if hint is bool:
        return _parse_bool(text)
    if hint is int:
        if field.metadata.get("size"):
            return parse_size(text)
        try:
            return int(text)
        except ValueError:
            raise ValueError(f"not an integer: {text!r}") from None
    if hint is float:
        try:
            return float(text)
        except ValueError:
            raise ValueError(f"not a number: {text!r}") from None
    if hint is Path:
        return Path(text)
    if hint is str:
        return text
    if isinstance(hint, types.UnionType) or origin is typing.Union:
        inner = [a for a in typing.get_args(hint) if a is not type(None)]
        if text == "":
            return None
        return _parse_value(field, inner[0], text)
    raise TypeError(f"unsupported config type {hint!r}")


def env_name(service: str, field_name: str) -> str:
    return f"{ENV_PREFIX}{service.upper()}_{field_name.upper()}"


def flag_name(field_name: str) -> str:
    return "--" + field_name.replace("_", "-")


def _names(service: str, field_name: str) -> str:
    return f"{flag_name(field_name)} / {env_name(service, field_name)}"


def add_arguments(parser: argparse.ArgumentParser, cls: type[Any], service: str) -> None:
    """Adds one flag per field; defaults stay None so the loader can see what was given."""
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        hint = hints[field.name]
        help_text = f"{field.metadata['help']} [{env_name(service, field.name)}]"
        shown = "***" if field.metadata.get("secret") else _format(field.default)
        help_text += f" (default: {shown})"
        if typing.get_origin(hint) is tuple:
            parser.add_argument(flag_name(field.name), action="append", help=help_text)
        else:
            parser.add_argument(flag_name(field.name), help=help_text)


def build(
    cls: type[C],
    service: str,
    given: Mapping[str, Any],
    environ: Mapping[str, str],
) -> C:
    """Builds a config from parsed flags (`given`, None = not given) and the environment."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    prefix = f"{ENV_PREFIX}{service.upper()}_"
    unknown = sorted(
        k for k in environ if k.startswith(prefix) and k[len(prefix) :].lower() not in fields
    )
    if unknown:
        raise ConfigError(
            f"unknown environment variable {unknown[0]} for `aptmesh {service}` "
            f"(known: {', '.join(env_name(service, n) for n in fields)})"
        )
    values: dict[str, Any] = {}
    for name, field in fields.items():
        hint = hints[name]
        raw = given.get(name)
        try:
            if raw is not None:
                if typing.get_origin(hint) is tuple:
                    values[name] = tuple(
                        item for text in raw for item in _parse_value(field, hint, text)
                    )
                else:
                    values[name] = _parse_value(field, hint, raw)
            elif env_name(service, name) in environ:
                values[name] = _parse_value(field, hint, environ[env_name(service, name)])
        except ValueError as exc:
            raise ConfigError(f"bad value for {_names(service, name)}: {exc}") from None
    try:
        return cls(**values)
    except InvalidOption as exc:
        raise ConfigError(f"bad value for {_names(service, exc.field)}: {exc.reason}") from None


def load(
    cls: type[C],
    service: str,
    argv: Sequence[str],
    environ: Mapping[str, str],
    *,
    description: str = "",
) -> C:
    """Parses a service's command line and environment; handles --print-config."""
    parser = argparse.ArgumentParser(prog=f"aptmesh {service}", description=description)
    add_arguments(parser, cls, service)
    parser.add_argument(
        "--print-config", action="store_true", help="print the effective configuration and exit"
    )
    args = parser.parse_args(list(argv))
    given = {k: v for k, v in vars(args).items() if k != "print_config"}
    config = build(cls, service, given, environ)
    if args.print_config:
        print(render(config, service), end="")
        raise SystemExit(0)
    return config


def mask_url_password(url: str) -> str:
    """The URL with its password, if it has one, shown as ***."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))


def _format(value: Any) -> str:
    if isinstance(value, tuple):
        return ",".join(str(v) for v in value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return ""
    return str(value)


def render(config: Any, service: str) -> str:
    """The effective configuration as `VARIABLE=value` lines, secrets masked."""
    lines = []
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        mask = field.metadata.get("mask")
        if field.metadata.get("secret") and value:
            shown = "***"
        elif mask is not None and value:
            shown = mask(value)
        else:
            shown = _format(value)
        lines.append(f"{env_name(service, field.name)}={shown}\n")
    return "".join(lines)


def require(condition: bool, field: str, reason: str) -> None:
    """For `__post_init__`: raise InvalidOption naming `field` unless `condition`."""
    if not condition:
        raise InvalidOption(field, reason)
