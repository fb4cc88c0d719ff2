"""The method's settings, read from apt's `601 Configuration`.

Options live under `Acquire::<name>::` where <name> is the method's own name
(`mesh+http`, `mesh+https`) and then plain `mesh`, the order apt's own methods
use for `tor+http` / `tor`. Every option:

  Acquire::mesh::Edges          edge URLs to start from, comma or space
                                separated, or an apt list; "http://" is
                                assumed. Give each edge its own host name:
                                apt only falls back between different hosts.
  Acquire::mesh::Zone           prefer edges that report this zone.
  Acquire::mesh::Discover       also use the live edge list an edge serves at
                                /_aptmesh/edges (default true).
  Acquire::mesh::Probe-Timeout  seconds a health probe may take (default 0.5).
                                All of discovery takes at most 5 times this
                                (2.5 s): the longest apt's first request
                                waits, whatever an edge does.
  Acquire::mesh::Delivery       "fetch" (default): the method downloads from
                                the edges itself and hands apt only the
                                mirror; "redirect": 103 Redirect to the edge
                                (apt >= 2.3.7 can hang when an edge dies:
                                see fetch.py).
  Acquire::mesh::Timeout        seconds an edge may stay silent during a
                                download before the next one is tried
                                (default 30, apt's http Timeout).
  Acquire::mesh::Cache-Seconds  how long the chosen edges are reused, in
                                memory and in Dir::State/mesh-edges.json
                                (default 60; 0 disables the cache).
  Debug::Acquire::mesh          diagnostics on stderr and as `101 Log`.

Pure: a function of the config items. A bad value never stops apt: the
default applies and the value is reported in `warnings`.
"""

from __future__ import annotations

import enum
import hashlib
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from urllib.parse import unquote

DEFAULT_PROBE_TIMEOUT = 0.5
DEFAULT_CACHE_SECONDS = 60.0
DEFAULT_TIMEOUT = 30.0
CACHE_FILE_NAME = "mesh-edges.json"
# Edges beyond this many (from configuration and listing together) are ignored:
# the listing comes from the network and each edge costs a probe.
MAX_EDGES = 32

_TRUE = {"1", "yes", "true", "with", "on", "enable"}
_FALSE = {"0", "no", "false", "without", "off", "disable"}


class Delivery(enum.Enum):
    """Who downloads a file an edge can serve."""

    FETCH = "fetch"  # this method, from the edges; apt's http method only for the mirror
    REDIRECT = "redirect"  # apt's http method, after a 103 Redirect to the edge


@dataclass(frozen=True)
class MeshConfig:
    edges: tuple[str, ...] = ()
    zone: str | None = None
    discover: bool = True
    probe_timeout: float = DEFAULT_PROBE_TIMEOUT
    cache_seconds: float = DEFAULT_CACHE_SECONDS
    delivery: Delivery = Delivery.FETCH
    timeout: float = DEFAULT_TIMEOUT
    debug: bool = False
    # Where the edge choice is cached; None: no cache file (memory only).
    cache_file: str | None = None
    warnings: tuple[str, ...] = field(default=(), compare=False)

    def cache_key(self) -> str:
        """Identifies the settings a cached choice was made for."""
        material = json.dumps([list(self.edges), self.zone, self.discover])
        return hashlib.sha256(material.encode()).hexdigest()[:16]


def normalize_edge_url(text: str) -> str | None:
    """`text` as an edge base URL (`http://host:port[/prefix]`), or None if unusable."""
    text = text.strip()
    if not text:
        return None
    if "://" not in text:
        text = "http://" + text
    scheme, _, rest = text.partition("://")
    scheme = scheme.lower()
    host = rest.split("/", 1)[0]
    if scheme not in ("http", "https") or not host or "@" in host:
        return None
    if re.search(r"[\s\x00-\x1f\x7f?#]", rest):
        return None
    return f"{scheme}://{rest.rstrip('/')}"


def split_edges(values: Iterable[str]) -> tuple[list[str], list[str]]:
    """Edge URLs from setting values (comma/space separated); and what was rejected."""
    urls: list[str] = []
    bad: list[str] = []
    for value in values:
        for item in re.split(r"[,\s]+", value):
            if not item:
                continue
            url = normalize_edge_url(item)
            if url is None:
                bad.append(item)
            elif url not in urls:
                urls.append(url)
    return urls, bad


def parse_bool(text: str) -> bool | None:
    lowered = text.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    return None


def state_dir(items: dict[str, str]) -> str | None:
    """apt's Dir::State, made absolute against Dir as apt's FindDir does."""
    state = items.get("dir::state")
    if not state:
        return None
    if state.startswith("/"):
        return state
    root = items.get("dir", "/") or "/"
    return str(PurePosixPath(root) / state)


def items_from_message(values: Iterable[str]) -> dict[str, str]:
    """`Config-Item: Key=Value` values as a dict with lower-case keys.

    apt percent-encodes both halves (its QuoteString: a space arrives as
    %20). List entries (`Key::=value`, as apt dumps `Key { "a"; "b"; };`)
    are kept under keys of their own, with a counter, so none is lost.
    """
    items: dict[str, str] = {}
    for value in values:
        key, eq, val = value.partition("=")
        if not eq:
            continue
        key = unquote(key.strip().strip('"'), errors="replace").lower()
        val = unquote(val.strip().strip('"'), errors="replace")
        if key.endswith("::"):
            key = f"{key}{len(items)}"
        items[key] = val
    return items


def from_items(items: dict[str, str], name: str = "mesh") -> MeshConfig:
    """The settings for a method called `name` (`mesh+http`, ...)."""
    prefixes = [f"acquire::{name.lower()}::"]
    if name.lower() != "mesh":
        prefixes.append("acquire::mesh::")
    warnings: list[str] = []

    def values(option: str) -> list[str]:
        for prefix in prefixes:
            key = prefix + option
            found = [v for k, v in items.items() if k == key or k.startswith(key + "::")]
            if found:
                return found
        return []

    def one(option: str) -> str | None:
        found = values(option)
        return found[0] if found else None

    def number(option: str, default: float, low: float, high: float) -> float:
        text = one(option)
        if text is None:
            return default
        try:
            result = float(text)
        except ValueError:
            result = float("nan")
        if not low <= result <= high:
            warnings.append(
                f"Acquire::mesh::{option.title()} {text!r} is not a number from {low:g} to "
                f"{high:g}; using {default:g}"
            )
            return default
        return result

    def boolean(key: str, default: bool, label: str) -> bool:
        text = items.get(key)
        if text is None:
            return default
        result = parse_bool(text)
        if result is None:
            warnings.append(f"{label} {text!r} is not a boolean; using {str(default).lower()}")
            return default
        return result

    delivery = Delivery.FETCH
    delivery_text = one("delivery")
    if delivery_text is not None:
        try:
            delivery = Delivery(delivery_text.strip().lower())
        except ValueError:
            choices = ", ".join(d.value for d in Delivery)
            warnings.append(
                f"Acquire::mesh::Delivery {delivery_text!r} is not one of {choices}; using fetch"
            )

    edges, bad = split_edges(values("edges"))
    if bad:
        warnings.append(f"Acquire::mesh::Edges: ignoring what is not an http(s) URL: {bad!r}")
    discover_key = next(
        (p + "discover" for p in prefixes if p + "discover" in items), "acquire::mesh::discover"
    )
    directory = state_dir(items)
    zone = (one("zone") or "").strip() or None
    return MeshConfig(
        edges=tuple(edges[:MAX_EDGES]),
        zone=zone,
        discover=boolean(discover_key, True, "Acquire::mesh::Discover"),
        probe_timeout=number("probe-timeout", DEFAULT_PROBE_TIMEOUT, 0.01, 30.0),
        cache_seconds=number("cache-seconds", DEFAULT_CACHE_SECONDS, 0.0, 86400.0),
        delivery=delivery,
        timeout=number("timeout", DEFAULT_TIMEOUT, 0.1, 3600.0),
        debug=boolean("debug::acquire::mesh", False, "Debug::Acquire::mesh"),
        cache_file=str(PurePosixPath(directory) / CACHE_FILE_NAME) if directory else None,
        warnings=tuple(warnings),
    )
