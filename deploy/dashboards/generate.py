"""Generates the aptmesh Grafana dashboards (committed next to this file as JSON).

Built with grafana-foundation-sdk (Grafana's own generated builders; the
version pinned in requirements.lock targets Grafana 10.1 and later). Every
dashboard has a stable uid, a `datasource` variable (any Prometheus works)
and an `instance` variable. The metric names are the services' own
(DESIGN.md "Metrics"); tests/deploy checks every expression against what the
services export.

    python deploy/dashboards/generate.py          # rewrite the JSON
    python deploy/dashboards/generate.py --check  # exit 1 if the JSON is stale
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from grafana_foundation_sdk.builders import common as common_builder
from grafana_foundation_sdk.builders import dashboard as dash
from grafana_foundation_sdk.builders import prometheus, stat, timeseries
from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models import dashboard as dashboard_model
from grafana_foundation_sdk.models.dashboard import (
    DashboardCursorSync,
    DashboardLinkType,
    DataSourceRef,
    Threshold,
    ThresholdsMode,
    VariableHide,
    VariableRefresh,
    VariableSort,
)

from aptmesh_edge.decisions import Outcome, SourceKind

HERE = Path(__file__).resolve().parent
DATASOURCE = DataSourceRef(type_val="prometheus", uid="${datasource}")
RATE = "$__rate_interval"
TAGS = ["aptmesh"]
# aptmesh_tracker_swarms counts torrents: the tracker pairs a hybrid torrent's
# v1 and v2 swarms through the index (aptmesh_tracker/swarms.py).
SWARMS_PER_TORRENT = (
    "Torrents with at least one peer at the tracker. A hybrid torrent's v1 and v2 swarms "
    "count once."
)


@dataclass(frozen=True)
class Query:
    expr: str
    legend: str = ""


def _targets(queries: Sequence[Query]) -> list[prometheus.Dataquery]:
    targets = []
    for ref, query in zip("ABCDEFGH", queries, strict=False):
        target = prometheus.Dataquery().expr(query.expr).ref_id(ref).datasource(DATASOURCE)
        if query.legend:
            target = target.legend_format(query.legend)
        targets.append(target)
    return targets


def graph(
    title: str,
    description: str,
    queries: Sequence[Query],
    unit: str = "short",
    *,
    stacked: bool = False,
    width: int = 12,
    max_value: float | None = None,
) -> timeseries.Panel:
    panel = (
        timeseries.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .unit(unit)
        .span(width)
        .height(8)
        .fill_opacity(20 if stacked else 5)
        .legend(
            common_builder.VizLegendOptions()
            .display_mode(common.LegendDisplayMode.LIST)
            .placement(common.LegendPlacement.BOTTOM)
            .show_legend(True)
        )
        .tooltip(common_builder.VizTooltipOptions().mode(common.TooltipDisplayMode.MULTI))
        .min(0)
    )
    if max_value is not None:
        panel = panel.max(max_value)
    if stacked:
        panel = panel.stacking(common_builder.StackingConfig().mode(common.StackingMode.NORMAL))
    for target in _targets(queries):
        panel = panel.with_target(target)
    return panel


def single(
    title: str,
    description: str,
    expr: str,
    unit: str = "short",
    *,
    width: int = 4,
    good_above: float | None = None,
) -> stat.Panel:
    panel = (
        stat.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .unit(unit)
        .span(width)
        .height(4)
        .graph_mode(common.BigValueGraphMode.AREA)
        .reduce_options(common_builder.ReduceDataOptions().calcs(["lastNotNull"]))
        .with_target(_targets([Query(expr)])[0])
    )
    if good_above is not None:
        steps = [Threshold(value=None, color="orange"), Threshold(value=good_above, color="green")]
    else:
        steps = [Threshold(value=None, color="blue")]
    return panel.thresholds(dash.ThresholdsConfig().mode(ThresholdsMode.ABSOLUTE).steps(steps))


def base(uid: str, title: str, description: str, instances_of: str) -> dash.Dashboard:
    """A dashboard with the shared settings and variables; `instances_of` selects instances."""
    datasource = dash.DatasourceVariable("datasource").label("Data source").type("prometheus")
    instance = (
        dash.QueryVariable("instance")
        .label("Instance")
        .datasource(DATASOURCE)
        .query(f"label_values({instances_of}, instance)")
        .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(VariableSort.ALPHABETICAL_ASC)
        .multi(True)
        .include_all(True)
        .all_value(".*")
    )
    return (
        dash.Dashboard(title)
        .uid(uid)
        .description(description)
        .tags(TAGS)
        .timezone("browser")
        .time("now-6h", "now")
        .refresh("1m")
        .tooltip(DashboardCursorSync.CROSSHAIR)
        .editable()
        .with_variable(datasource)
        .with_variable(instance.hide(VariableHide.DONT_HIDE))
        .link(
            dash.DashboardLink("aptmesh")
            .type(DashboardLinkType.DASHBOARDS)
            .tags(TAGS)
            .as_dropdown(True)
            .include_vars(False)
            .keep_time(True)
        )
    )


SEL = 'instance=~"$instance"'
PanelBuilder = cogbuilder.Builder[dashboard_model.Panel]


def add(d: dash.Dashboard, *panels: PanelBuilder, width: int | None = None) -> dash.Dashboard:
    """Adds panels left to right, wrapping at 24 columns; `width` overrides their spans."""
    for panel in panels:
        if width is not None and isinstance(panel, timeseries.Panel | stat.Panel):
            panel = panel.span(width)
        d = d.with_panel(panel)
    return d


def _grpc_panels() -> list[timeseries.Panel]:
    return [
        graph(
            "gRPC calls by method and code",
            "Calls the server finished, per second.",
            [
                Query(
                    f"sum by (grpc_method, grpc_code) "
                    f"(rate(grpc_server_handled_total{{{SEL}}}[{RATE}]))",
                    "{{grpc_method}} {{grpc_code}}",
                )
            ],
            "reqps",
        ),
        graph(
            "gRPC latency (p50, p99)",
            "Server-side handling time, all methods.",
            [
                Query(
                    f"histogram_quantile(0.5, sum by (le) "
                    f"(rate(grpc_server_handling_seconds_bucket{{{SEL}}}[{RATE}])))",
                    "p50",
                ),
                Query(
                    f"histogram_quantile(0.99, sum by (le) "
                    f"(rate(grpc_server_handling_seconds_bucket{{{SEL}}}[{RATE}])))",
                    "p99",
                ),
            ],
            "s",
        ),
    ]


def _payload_panel(service_label: str) -> timeseries.Panel:
    return graph(
        "BitTorrent payload",
        "Payload bytes exchanged with peers, per second, by service and direction.",
        [
            Query(
                f"sum by (service, direction) "
                f"(rate(aptmesh_torrent_payload_bytes_total{{{SEL}{service_label}}}[{RATE}]))",
                "{{service}} {{direction}}",
            )
        ],
        "Bps",
    )


def _verification_panel(service_label: str) -> timeseries.Panel:
    return graph(
        "Verification failures",
        "Files refused because a signature or hash did not verify (nothing unverified is "
        "served). Any value here deserves a look at the logs.",
        [
            Query(
                f"sum by (service, kind) "
                f"(increase(aptmesh_verification_failures_total{{{SEL}{service_label}}}[{RATE}]))",
                "{{service}} {{kind}}",
            )
        ],
    )


def overview() -> dash.Dashboard:
    served = "aptmesh_edge_served_bytes_total"
    requests = "aptmesh_edge_requests_total"
    offload = (
        f'1 - sum(rate({served}{{{SEL},source="{SourceKind.UPSTREAM.value}"}}[@window])) '
        f"/ sum(rate({served}{{{SEL}}}[@window]))"
    )
    hit_ratio = (
        f'sum(rate({requests}{{{SEL},cache="{Outcome.HIT.value}"}}[@window])) '
        f"/ sum(rate({requests}{{{SEL}}}[@window]))"
    )
    d = base(
        "aptmesh-overview",
        "aptmesh / Overview",
        "Where apt's bytes come from (cache, swarm, upstream), how much the mesh saves the "
        "upstream mirrors, and the health of the swarm.",
        'aptmesh_build_info{service="edge"}',
    )
    d = d.with_row(dash.Row("Savings"))
    d = add(
        d,
        single(
            "Origin offload",
            "Share of the bytes served to clients that did not come from the upstream "
            "(1 - upstream / total) over the time range.",
            offload.replace("@window", "$__range"),
            "percentunit",
            width=6,
            good_above=0.5,
        ),
        single(
            "Cache hit ratio",
            "Share of file requests answered from the edges' caches over the time range.",
            hit_ratio.replace("@window", "$__range"),
            "percentunit",
            width=6,
            good_above=0.5,
        ),
        single(
            "Served",
            "Bytes served to clients over the time range.",
            f"sum(increase({served}{{{SEL}}}[$__range]))",
            "bytes",
            width=4,
        ),
        single(
            "Edges registered",
            "Edges with a live registration at the tracker.",
            "sum(aptmesh_tracker_edges)",
            width=4,
        ),
        single(
            "Swarms",
            SWARMS_PER_TORRENT,
            "sum(aptmesh_tracker_swarms)",
            width=4,
        ),
    )
    d = d.with_row(dash.Row("Traffic"))
    d = add(
        d,
        graph(
            "Bytes served by source",
            "Bytes of file bodies sent to clients per second, by where the edge got them.",
            [Query(f"sum by (source) (rate({served}{{{SEL}}}[{RATE}]))", "{{source}}")],
            "Bps",
            stacked=True,
        ),
        graph(
            "Origin offload and cache hit ratio",
            "1 - upstream / total bytes served, and cache hits / requests.",
            [
                Query(offload.replace("@window", RATE), "origin offload"),
                Query(hit_ratio.replace("@window", RATE), "cache hit ratio"),
            ],
            "percentunit",
            max_value=1,
        ),
        graph(
            "Upstream fallbacks by reason",
            "Package fetches that went to the upstream instead of the swarm, per second. "
            "below_threshold is by design (small files); the others say why the swarm was "
            "not used.",
            [
                Query(
                    f"sum by (reason) (rate(aptmesh_edge_upstream_fallbacks_total{{{SEL}}}"
                    f"[{RATE}])) > 0",
                    "{{reason}}",
                )
            ],
            "ops",
            stacked=True,
        ),
        graph(
            "Requests by file class and cache outcome",
            "File requests answered by the edges, per second.",
            [
                Query(
                    f"sum by (file_class, cache) (rate({requests}{{{SEL}}}[{RATE}]))",
                    "{{file_class}} {{cache}}",
                )
            ],
            "reqps",
            stacked=True,
        ),
        graph(
            "Mirror really used?",
            "Per edge, the share of the bytes served over the last hour that came from its "
            "cache or the swarm instead of the upstream. An edge near 0 serves everything from "
            "the upstream, so the mesh saves the mirror nothing through it (alert "
            "AptmeshEdgeMeshUnused). Clients that bypass the edges cannot be seen here.",
            [
                Query(
                    f'1 - sum by (instance) (rate({served}{{{SEL},source="upstream"}}[1h])) '
                    f"/ sum by (instance) (rate({served}{{{SEL}}}[1h]))",
                    "{{instance}}",
                )
            ],
            "percentunit",
            max_value=1,
        ),
    )
    d = d.with_row(dash.Row("Swarm health"))
    d = add(
        d,
        graph(
            "Peers at the tracker",
            "Peers in all swarms by role (per infohash: a hybrid client is in both of its "
            "torrent's swarms), and torrents with at least one peer.",
            [
                Query("sum by (role) (aptmesh_tracker_peers)", "{{role}}"),
                Query("sum(aptmesh_tracker_swarms)", "torrents"),
            ],
        ),
        _payload_panel(""),
        _verification_panel(""),
        width=8,
    )
    return d


def _convergence_panels() -> list[timeseries.Panel]:
    """Time from a new repository generation to N % of the edges serving it, per suite (the
    tracker derives both from the edges' registrations: aptmesh_tracker.convergence). Replicas
    of one tracker report the same figures, hence max, never sum."""
    return [
        graph(
            "Convergence: edges on the newest generation",
            "Per suite, the share of the live edges that serve its newest repository "
            "generation (InRelease Date). After a republish it climbs to 100 %: the time it "
            "takes to cross N % is the time until N % of the edges serve the new generation.",
            [
                Query(
                    f"100 * max by (suite) (aptmesh_tracker_generation_edges{{{SEL}}})"
                    f" / max by (suite) (aptmesh_tracker_suite_edges{{{SEL}}})",
                    "{{suite}}",
                )
            ],
            "percent",
            max_value=100,
        ),
        graph(
            "Convergence: time the newest generation waits",
            "Per suite, seconds since its newest generation was first seen while some edge "
            "still serves an older one (0 once every edge serves it), and the longest such "
            "wait in the range: the time until 100 % of the edges served a new generation.",
            [
                Query(
                    f"max by (suite) (aptmesh_tracker_generation_lag_seconds{{{SEL}}})",
                    "{{suite}} now",
                ),
                Query(
                    f"max by (suite) "
                    f"(max_over_time(aptmesh_tracker_generation_lag_seconds{{{SEL}}}[$__range]))",
                    "{{suite}} longest",
                ),
            ],
            "s",
        ),
    ]


def tracker() -> dash.Dashboard:
    d = base(
        "aptmesh-tracker",
        "aptmesh / Tracker",
        "The package index, the BitTorrent tracker and the edge registry.",
        'aptmesh_build_info{service="tracker"}',
    )
    d = add(
        d,
        single(
            "Index records", "Package records in the index.", "sum(aptmesh_tracker_index_records)"
        ),
        single("Swarms", SWARMS_PER_TORRENT, "sum(aptmesh_tracker_swarms)"),
        single("Edges", "Edges with a live registration.", "sum(aptmesh_tracker_edges)"),
        single(
            "Seeding peers",
            "Peers that have the whole file, in all swarms.",
            'sum(aptmesh_tracker_peers{role="seeder"})',
        ),
        single(
            "Leeching peers",
            "Peers still downloading, in all swarms.",
            'sum(aptmesh_tracker_peers{role="leecher"})',
        ),
        single(
            "Announces",
            "Announces per second.",
            f"sum(rate(aptmesh_tracker_announces_total{{{SEL}}}[{RATE}]))",
            "reqps",
        ),
    )
    d = add(
        d,
        graph(
            "Announces by event",
            "Announces answered per second (none = a regular re-announce).",
            [
                Query(
                    f"sum by (event) (rate(aptmesh_tracker_announces_total{{{SEL}}}[{RATE}]))",
                    "{{event}}",
                ),
                Query(f"sum(rate(aptmesh_tracker_scrapes_total{{{SEL}}}[{RATE}]))", "scrapes"),
            ],
            "reqps",
        ),
        graph(
            "Refused requests by reason",
            "Announce and scrape requests refused with a failure reason, per second.",
            [
                Query(
                    f"sum by (reason) "
                    f"(rate(aptmesh_tracker_bad_requests_total{{{SEL}}}[{RATE}])) > 0",
                    "{{reason}}",
                )
            ],
            "reqps",
        ),
        graph(
            "Peers and swarms",
            "Peers by role (per infohash: a hybrid client is in both of its torrent's swarms), "
            "torrents with peers, and peers forgotten because they stopped announcing.",
            [
                Query(f"sum by (role) (aptmesh_tracker_peers{{{SEL}}})", "{{role}}"),
                Query(f"sum(aptmesh_tracker_swarms{{{SEL}}})", "torrents"),
                Query(
                    f"sum(rate(aptmesh_tracker_expired_peers_total{{{SEL}}}[{RATE}])) * 60",
                    "expired per minute",
                ),
            ],
        ),
        graph(
            "Peer flood: announces not stored",
            "Announces answered but not stored because a peer bound was reached, per second, "
            "by bound (address_swarm, address, swarm, total). Anything here for long is a "
            "flood or a bound set too low for a real swarm.",
            [
                Query(
                    f"sum by (limit) "
                    f"(rate(aptmesh_tracker_refused_peers_total{{{SEL}}}[{RATE}])) > 0",
                    "{{limit}}",
                ),
                Query(
                    f'max(aptmesh_tracker_peer_limit{{limit="total",{SEL}}})',
                    "total bound (peers)",
                ),
            ],
            "reqps",
        ),
        graph(
            "Index and registry",
            "Package records in the index and edges with a live lease.",
            [
                Query(f"sum(aptmesh_tracker_index_records{{{SEL}}})", "records"),
                Query(f"sum(aptmesh_tracker_edges{{{SEL}}})", "edges"),
            ],
        ),
        *_convergence_panels(),
        *_grpc_panels(),
    )
    return d


def seeder() -> dash.Dashboard:
    service = ',service="seeder"'
    d = base(
        "aptmesh-seeder",
        "aptmesh / Seeder",
        "Repository syncs, selection, upstream traffic and seeding.",
        'aptmesh_build_info{service="seeder"}',
    )
    d = add(
        d,
        single(
            "Oldest good sync",
            "Time since the least recently synced repository last synced well.",
            f"time() - min(aptmesh_seeder_last_good_sync_timestamp_seconds{{{SEL}}} > 0)",
            "s",
            width=6,
        ),
        single(
            "Torrents seeded",
            "Torrents being seeded.",
            f"sum(aptmesh_seeder_torrents{{{SEL}}})",
            width=6,
        ),
        single("Peers", "Peers connected.", f"sum(aptmesh_seeder_peers{{{SEL}}})", width=6),
        single(
            "Upload rate",
            "BitTorrent payload upload rate.",
            f"sum(aptmesh_seeder_upload_rate_bytes_per_second{{{SEL}}})",
            "Bps",
            width=6,
        ),
    )
    d = add(
        d,
        graph(
            "Syncs by repository and result",
            "Repository syncs per hour (unchanged: InRelease had not changed).",
            [
                Query(
                    f"sum by (repository, result) "
                    f"(increase(aptmesh_seeder_syncs_total{{{SEL}}}[1h]))",
                    "{{repository}} {{result}}",
                )
            ],
        ),
        graph(
            "Time since last good sync",
            "Per repository. The AptmeshSeederSyncStale alert fires above one hour.",
            [
                Query(
                    f"time() - max by (repository) "
                    f"(aptmesh_seeder_last_good_sync_timestamp_seconds{{{SEL}}} > 0)",
                    "{{repository}}",
                )
            ],
            "s",
        ),
        graph(
            "Sync duration (p90)",
            "90th percentile of sync durations per repository.",
            [
                Query(
                    f"histogram_quantile(0.9, sum by (repository, le) "
                    f"(rate(aptmesh_seeder_sync_duration_seconds_bucket{{{SEL}}}[1h])))",
                    "{{repository}}",
                )
            ],
            "s",
        ),
        graph(
            "Selection",
            "Bytes of package files the last good sync selected, and what the budget cut.",
            [
                Query(
                    f"sum by (repository) (aptmesh_seeder_selected_bytes{{{SEL}}})",
                    "{{repository}} selected",
                ),
                Query(
                    f"sum by (repository) (aptmesh_seeder_budget_cut_bytes{{{SEL}}})",
                    "{{repository}} cut by budget",
                ),
            ],
            "bytes",
        ),
        graph(
            "Upstream and hashing",
            "Bytes fetched from upstream by kind, and bytes hashed, per second.",
            [
                Query(
                    f"sum by (kind) (rate(aptmesh_seeder_upstream_bytes_total{{{SEL}}}[{RATE}]))",
                    "upstream {{kind}}",
                ),
                Query(f"sum(rate(aptmesh_seeder_hashed_bytes_total{{{SEL}}}[{RATE}]))", "hashed"),
            ],
            "Bps",
        ),
        graph(
            "Files fetched, published, retired",
            "Per hour.",
            [
                Query(f"sum(increase(aptmesh_seeder_fetched_files_total{{{SEL}}}[1h]))", "fetched"),
                Query(f"sum(increase(aptmesh_seeder_published_total{{{SEL}}}[1h]))", "published"),
                Query(f"sum(increase(aptmesh_seeder_retired_total{{{SEL}}}[1h]))", "retired"),
            ],
        ),
        _payload_panel(service),
        _verification_panel(service),
        *_grpc_panels(),
    )
    return d


def edge() -> dash.Dashboard:
    service = ',service="edge"'
    d = base(
        "aptmesh-edge",
        "aptmesh / Edge",
        "The apt-facing caches: requests, sources, fallbacks, cache and swarm.",
        'aptmesh_build_info{service="edge"}',
    )
    d = add(
        d,
        single(
            "Requests",
            "File requests per second.",
            f"sum(rate(aptmesh_edge_requests_total{{{SEL}}}[{RATE}]))",
            "reqps",
        ),
        single(
            "Served",
            "Bytes served to clients per second.",
            f"sum(rate(aptmesh_edge_served_bytes_total{{{SEL}}}[{RATE}]))",
            "Bps",
        ),
        single(
            "Cache used",
            "Package cache size against its limit.",
            f"sum(aptmesh_edge_cache_size_bytes{{{SEL}}}) "
            f"/ sum(aptmesh_edge_cache_limit_bytes{{{SEL}}})",
            "percentunit",
        ),
        single(
            "Downloads in flight",
            "Package downloads in progress.",
            f"sum(aptmesh_edge_downloads_in_flight{{{SEL}}})",
        ),
        single("Swarm peers", "Peers connected.", f"sum(aptmesh_edge_swarm_peers{{{SEL}}})"),
        single(
            "Torrents",
            "Torrents downloading or seeding.",
            f"sum(aptmesh_edge_swarm_torrents{{{SEL}}})",
        ),
    )
    d = add(
        d,
        graph(
            "Bytes served by source",
            "Per edge and source, per second.",
            [
                Query(
                    f"sum by (instance, source) "
                    f"(rate(aptmesh_edge_served_bytes_total{{{SEL}}}[{RATE}]))",
                    "{{instance}} {{source}}",
                )
            ],
            "Bps",
            stacked=True,
        ),
        graph(
            "Requests by file class and cache outcome",
            "Per second.",
            [
                Query(
                    f"sum by (file_class, cache) "
                    f"(rate(aptmesh_edge_requests_total{{{SEL}}}[{RATE}]))",
                    "{{file_class}} {{cache}}",
                )
            ],
            "reqps",
            stacked=True,
        ),
        graph(
            "Upstream fallbacks by reason",
            "Package fetches that went to the upstream instead of the swarm, per second.",
            [
                Query(
                    f"sum by (reason) "
                    f"(rate(aptmesh_edge_upstream_fallbacks_total{{{SEL}}}[{RATE}])) > 0",
                    "{{reason}}",
                )
            ],
            "ops",
            stacked=True,
        ),
        graph(
            "Upstream requests by outcome",
            "HTTP requests the edges made to upstreams, per second; and stale index files "
            "served because the upstream could not be reached.",
            [
                Query(
                    f"sum by (outcome) "
                    f"(rate(aptmesh_edge_upstream_fetches_total{{{SEL}}}[{RATE}]))",
                    "{{outcome}}",
                ),
                Query(
                    f"sum(rate(aptmesh_edge_stale_index_served_total{{{SEL}}}[{RATE}]))",
                    "stale index served",
                ),
            ],
            "reqps",
        ),
        graph(
            "Cache",
            "Package cache size and limit, and the in-memory tier.",
            [
                Query(
                    f"sum by (instance) (aptmesh_edge_cache_size_bytes{{{SEL}}})",
                    "{{instance}} size",
                ),
                Query(
                    f"sum by (instance) (aptmesh_edge_cache_limit_bytes{{{SEL}}})",
                    "{{instance}} limit",
                ),
                Query(
                    f"sum by (instance) (aptmesh_edge_memory_cache_bytes{{{SEL}}})",
                    "{{instance}} memory",
                ),
            ],
            "bytes",
        ),
        graph(
            "Cache entries",
            "Package files in the cache, and those pinned (being served or seeded).",
            [
                Query(f"sum(aptmesh_edge_cache_entries{{{SEL}}})", "entries"),
                Query(f"sum(aptmesh_edge_cache_pinned_entries{{{SEL}}})", "pinned"),
            ],
        ),
        graph(
            "Collections",
            "Bytes of the files the collections of each edge's zone hold, present and missing "
            "(missing for long: see `aptmesh collection status`).",
            [
                Query(
                    f'sum by (instance) (aptmesh_edge_collection_bytes{{{SEL},state="present"}})',
                    "{{instance}} present",
                ),
                Query(
                    f'sum by (instance) (aptmesh_edge_collection_bytes{{{SEL},state="missing"}})',
                    "{{instance}} missing",
                ),
            ],
            "bytes",
        ),
        graph(
            "Collection complete time",
            "Seconds from a collection change (a new version or repository generation) to "
            "every file on an edge (90th percentile).",
            [
                Query(
                    f"histogram_quantile(0.9, sum by (le) "
                    f"(rate(aptmesh_edge_collection_complete_seconds_bucket{{{SEL}}}[1h])))",
                    "p90",
                ),
            ],
            "s",
        ),
        _payload_panel(service),
        _verification_panel(service),
        *_grpc_panels(),
    )
    return d


DASHBOARDS = {
    "aptmesh-overview.json": overview,
    "aptmesh-tracker.json": tracker,
    "aptmesh-seeder.json": seeder,
    "aptmesh-edge.json": edge,
}


def render(builder: dash.Dashboard) -> str:
    model: dict[str, Any] = json.loads(json.dumps(builder.build(), cls=JSONEncoder))
    model["id"] = None  # provisioning keys on the uid
    return json.dumps(model, indent=2, sort_keys=True) + "\n"


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if a committed file is stale")
    args = parser.parse_args(list(argv))
    stale = []
    for name, make in DASHBOARDS.items():
        path = HERE / name
        text = render(make())
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(name)
        else:
            path.write_text(text)
            print(f"wrote deploy/dashboards/{name}")
    if stale:
        print(
            f"stale: {', '.join(stale)}: run python deploy/dashboards/generate.py",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
