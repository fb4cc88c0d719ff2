"""The metric names the services really export, and the names PromQL uses.

Exported names come from the services' own metrics classes, instantiated on
fresh registries exactly as each service's composition root does (tracker:
`TrackerMetrics`, seeder: `SeederMetrics`, edge: `EdgeMetrics`, all:
`new_registry` for `aptmesh_build_info` and `GrpcServerMetrics`), then read
back from the registry: no list is kept by hand.
"""

from __future__ import annotations

import re

from prometheus_client import CollectorRegistry

from aptmesh.metrics import GrpcServerMetrics, new_registry
from aptmesh.swarm import SwarmStats
from aptmesh_edge.metrics import EdgeMetrics
from aptmesh_seeder.metrics import SeederMetrics
from aptmesh_tracker.metrics import TrackerMetrics
from aptmesh_tracker.peerstore import MemoryPeerStore
from aptmesh_tracker.stores import memory_stores

# Series Prometheus itself adds to every scrape target.
SCRAPE_SERIES = frozenset(
    {"up", "scrape_duration_seconds", "scrape_samples_scraped", "scrape_series_added"}
)

_SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("", "_sum", "_count", "_created"),
    "info": ("_info",),
    "stateset": ("",),
    "unknown": ("",),
}


def registries() -> dict[str, CollectorRegistry]:
    """One registry per service, filled the way the service fills it."""
    zero = SwarmStats(0, 0, 0, 0, 0, 0)
    tracker = new_registry("tracker")
    TrackerMetrics(tracker, MemoryPeerStore(2700, lambda: 0.0), memory_stores())
    GrpcServerMetrics(tracker)
    seeder = new_registry("seeder")
    SeederMetrics(seeder, ["debian"], lambda: zero)
    GrpcServerMetrics(seeder)
    edge = new_registry("edge")
    EdgeMetrics(edge)
    GrpcServerMetrics(edge)
    return {"tracker": tracker, "seeder": seeder, "edge": edge}


def exported_names() -> dict[str, set[str]]:
    """Per service, every series name its /metrics can carry."""
    names: dict[str, set[str]] = {}
    for service, registry in registries().items():
        found: set[str] = set()
        for family in registry.collect():
            found |= {family.name + suffix for suffix in _SUFFIXES[family.type]}
            found |= {sample.name for sample in family.samples}
        names[service] = found
    return names


# PromQL words that look like metric names but are not.
_KEYWORDS = frozenset(
    {
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "bool",
        "offset",
        "and",
        "or",
        "unless",
        "inf",
        "nan",
        "atan2",
    }
)
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_IDENT = re.compile(r"(?<![A-Za-z0-9_:.$])[A-Za-z_:][A-Za-z0-9_:]*")


def promql_metric_names(expr: str) -> set[str]:
    """Metric names an expression selects (strings, label matchers, ranges and calls removed).

    A small lexer, not a parser: enough for the expressions we write (a name
    is an identifier not followed by `(`, outside `{...}`, `[...]` and
    `by (...)`/`without (...)`/`on (...)`/`ignoring (...)` label lists).
    """
    text = _STRING.sub('""', expr)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    names = set()
    for match in _IDENT.finditer(text):
        word = match.group(0)
        rest = text[match.end() :].lstrip()
        if rest.startswith("(") or word.lower() in _KEYWORDS:
            continue
        names.add(word)
    return names
