"""Alerts and dashboards: promtool checks and tests the rules, the generated
files are current, and every PromQL expression names metrics the services
really export (read back from the services' own metrics classes)."""

from __future__ import annotations

import enum
import json
import re
import shutil
import subprocess
import sys
import types
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.cog.plugins import register_default_plugins
from grafana_foundation_sdk.models import dashboard as dashboard_model
from grafana_foundation_sdk.models import prometheus as prometheus_model
from prometheus_client.exposition import generate_latest

from tests.deploy.manifests import ROOT
from tests.deploy.metricnames import (
    SCRAPE_SERIES,
    exported_names,
    promql_metric_names,
    registries,
)

ALERTS = ROOT / "deploy" / "alerts"
RULES = ALERTS / "aptmesh.rules.yaml"
DASHBOARDS = ROOT / "deploy" / "dashboards"
SEVERITIES = {"critical", "warning", "info"}
# The names DESIGN.md ("Metrics") says dashboards and alerts rely on.
CONTRACT = {
    "aptmesh_edge_served_bytes_total",
    "aptmesh_edge_requests_total",
    "aptmesh_edge_upstream_fallbacks_total",
    "aptmesh_verification_failures_total",
    "aptmesh_torrent_payload_bytes_total",
    "aptmesh_tracker_announces_total",
    "aptmesh_build_info",
}


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool is missing: `make sysdeps` installs Debian's prometheus package")
    return path


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=120, check=False)


def all_exported() -> set[str]:
    return set().union(*exported_names().values()) | SCRAPE_SERIES


# -- alerts ----------------------------------------------------------------------


def test_promtool_checks_the_rules() -> None:
    result = run(promtool(), "check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_runs_the_rule_tests() -> None:
    result = run(promtool(), "test", "rules", str(ALERTS / "aptmesh.rules.test.yaml"))
    assert result.returncode == 0, result.stdout + result.stderr


def rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(RULES.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def test_alerts_follow_the_conventions() -> None:
    names = [r["alert"] for r in rules()]
    expected = {
        "AptmeshTrackerDown",
        "AptmeshEdgeFallingBackToUpstream",
        "AptmeshVerificationFailures",
        "AptmeshSeederSyncStale",
        "AptmeshEdgeMeshUnused",
    }
    assert expected <= set(names)
    for rule in rules():
        assert re.fullmatch(r"Aptmesh[A-Z][A-Za-z]+", rule["alert"])
        assert rule["labels"]["severity"] in SEVERITIES
        assert rule["annotations"]["summary"].endswith(".")
        assert "{{" not in rule["annotations"]["summary"], "summary must be static"
        assert rule["annotations"]["description"]
        assert rule["for"]


def test_every_alert_is_tested() -> None:
    tests = yaml.safe_load((ALERTS / "aptmesh.rules.test.yaml").read_text())["tests"]
    tested = {
        case["alertname"]
        for test in tests
        for case in test.get("alert_rule_test", [])
        if case.get("exp_alerts")
    }
    assert {r["alert"] for r in rules()} == tested


def test_the_prometheusrule_is_generated_from_the_rule_file() -> None:
    result = run(sys.executable, str(ALERTS / "generate.py"), "--check")
    assert result.returncode == 0, result.stderr
    path = ROOT / "deploy/k8s/components/prometheus-operator/prometheusrule.yaml"
    wrapped = yaml.safe_load(path.read_text())
    assert wrapped["spec"]["groups"] == yaml.safe_load(RULES.read_text())["groups"]


def test_alert_expressions_use_exported_metrics() -> None:
    exported = all_exported()
    for rule in rules():
        names = promql_metric_names(rule["expr"])
        assert names, rule["alert"]
        assert names <= exported, f"{rule['alert']}: not exported: {names - exported}"


# -- dashboards ------------------------------------------------------------------


def dashboards() -> dict[str, dict[str, Any]]:
    return {p.name: json.loads(p.read_text()) for p in sorted(DASHBOARDS.glob("*.json"))}


def panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])


def expressions(dashboard: dict[str, Any]) -> Iterator[tuple[str, str]]:
    for panel in panels(dashboard):
        for target in panel.get("targets", []):
            yield panel["title"], target["expr"]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]
            inner = re.fullmatch(r"label_values\((.*),\s*\w+\)", query)
            yield f"${variable['name']}", inner.group(1) if inner else query


def test_the_committed_dashboards_are_what_the_generator_writes() -> None:
    result = run(sys.executable, str(DASHBOARDS / "generate.py"), "--check")
    assert result.returncode == 0, result.stderr


def test_an_overview_and_one_dashboard_per_service() -> None:
    found = dashboards()
    assert set(found) == {f"aptmesh-{n}.json" for n in ("overview", "tracker", "seeder", "edge")}
    uids = [d["uid"] for d in found.values()]
    assert len(set(uids)) == len(uids)
    for name, dashboard in found.items():
        assert dashboard["uid"] == name.removesuffix(".json")  # stable, 8-40 characters
        assert 8 <= len(dashboard["uid"]) <= 40
        assert dashboard["id"] is None
        variables = {v["name"]: v for v in dashboard["templating"]["list"]}
        assert variables["datasource"]["type"] == "datasource"
        assert variables["datasource"]["query"] == "prometheus"
        for panel in panels(dashboard):
            if panel["type"] != "row":
                assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
                for target in panel["targets"]:
                    assert target["datasource"]["uid"] == "${datasource}"


def test_the_overview_shows_what_operators_ask_first() -> None:
    overview = dashboards()["aptmesh-overview.json"]
    text = json.dumps([expr for _, expr in expressions(overview)])
    assert 'source=\\"upstream\\"' in text  # origin offload
    assert 'cache=\\"hit\\"' in text  # cache hit ratio
    assert "sum by (reason)" in text  # fallbacks by reason
    assert "aptmesh_tracker_peers" in text  # swarm health
    assert "sum by (source)" in text  # bytes by source
    # "Is the mirror really used?": per edge, the share not from the upstream.
    titles = {panel["title"] for panel in panels(overview)}
    assert "Mirror really used?" in titles


def test_dashboard_expressions_use_exported_metrics() -> None:
    exported = all_exported()
    used: set[str] = set()
    for name, dashboard in dashboards().items():
        for title, expr in expressions(dashboard):
            names = promql_metric_names(expr)
            assert names, f"{name} {title}: no metric in {expr}"
            assert names <= exported, f"{name} {title}: not exported: {names - exported}"
            used |= names
    assert used >= CONTRACT


def test_the_design_contract_metrics_are_exported() -> None:
    assert all_exported() >= CONTRACT


@pytest.mark.parametrize("service", ["tracker", "seeder", "edge"])
def test_promtool_accepts_the_exposition(service: str, tmp_path: Path) -> None:
    exposition = generate_latest(registries()[service])
    result = subprocess.run(
        [promtool(), "check", "metrics"], input=exposition, capture_output=True, timeout=60
    )
    assert result.returncode == 0, (result.stdout + result.stderr).decode()


# -- dashboards against Grafana's schema ----------------------------------------


def schema_problems(dashboard: dict[str, Any]) -> list[str]:
    """Where the dashboard leaves Grafana's schema, as grafana-foundation-sdk's
    models (generated from Grafana's own schemas) decode it: fields the schema
    does not know (dropped on decoding), values of the wrong type or outside an
    enum (decoding raises), panels of a type without a registered schema, and
    queries that are not Prometheus queries."""
    register_default_plugins()
    try:
        decoded = dashboard_model.Dashboard.from_json(dashboard)
    except (KeyError, TypeError, ValueError) as exc:
        return [f"does not decode: {exc!r}"]
    problems = []
    for panel in decoded.panels or []:
        inner = getattr(panel, "panels", None) or []
        for each in [panel, *inner]:
            if isinstance(each, dashboard_model.RowPanel):
                continue
            if isinstance(each.options, dict):
                problems.append(f"{each.title}: panel type {each.type_val} has no schema")
            for target in each.targets or []:
                if not isinstance(target, prometheus_model.Dataquery):
                    problems.append(f"{each.title}: not a Prometheus query: {target!r}")
    encoded = json.loads(json.dumps(decoded, cls=JSONEncoder))
    problems += [f"not in the schema: {p}" for p in _dropped(dashboard, encoded, "")]
    problems += list(_mistyped(decoded, ""))
    return problems


def _mistyped(obj: Any, where: str) -> Iterator[str]:
    """Values whose type or enum the model's annotations do not allow (the
    SDK's decoders copy values as they are)."""
    if isinstance(obj, list):
        for index, item in enumerate(obj):
            yield from _mistyped(item, f"{where}[{index}]")
        return
    if isinstance(obj, dict):
        for key, item in obj.items():
            yield from _mistyped(item, f"{where}/{key}")
        return
    if not type(obj).__module__.startswith("grafana_foundation_sdk.models"):
        return
    for name, hint in typing.get_type_hints(type(obj)).items():
        value = getattr(obj, name, None)
        if value is None:
            continue
        if not _conforms(value, hint):
            yield f"{where}/{name}: {value!r} is not {hint}"
        yield from _mistyped(value, f"{where}/{name}")


def _conforms(value: Any, hint: Any) -> bool:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is typing.Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_conforms(value, arg) for arg in args)
    if origin is typing.Literal:
        return value in args
    if origin is list:
        return isinstance(value, list) and all(_conforms(v, args[0]) for v in value)
    if origin is dict:
        return isinstance(value, dict)
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return isinstance(value, hint) or value in {member.value for member in hint}
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if isinstance(hint, type):
        return isinstance(value, hint)
    return True  # a construct the models do not use for values


def _dropped(given: Any, kept: Any, where: str) -> Iterator[str]:
    if isinstance(given, dict) and isinstance(kept, dict):
        for key, value in given.items():
            if key not in kept:
                # null ids are how Grafana marks a dashboard to import.
                if not (key == "id" and value is None):
                    yield f"{where}/{key}"
            else:
                yield from _dropped(value, kept[key], f"{where}/{key}")
    elif isinstance(given, list) and isinstance(kept, list):
        if len(given) != len(kept):
            yield f"{where}: {len(given)} items, {len(kept)} kept"
        for index, (a, b) in enumerate(zip(given, kept, strict=False)):
            yield from _dropped(a, b, f"{where}[{index}]")


@pytest.mark.parametrize("name", sorted(dashboards()))
def test_dashboards_follow_grafanas_schema(name: str) -> None:
    assert schema_problems(dashboards()[name]) == []


def test_the_schema_check_catches_what_grafana_would_not_understand() -> None:
    good = dashboards()["aptmesh-overview.json"]
    graph_index = next(i for i, p in enumerate(good["panels"]) if p["type"] == "timeseries")

    def broken(change: Any) -> dict[str, Any]:
        copy: dict[str, Any] = json.loads(json.dumps(good))
        change(copy, copy["panels"][graph_index])
        return copy

    cases = {
        "unknown field": lambda d, p: p["fieldConfig"]["defaults"].update(unitx="bytes"),
        "unknown option": lambda d, p: p["options"].update(legendd={}),
        "enum value": lambda d, p: p["options"]["tooltip"].update(mode="sometimes"),
        "panel type": lambda d, p: p.update(type="no-such-panel"),
        "dashboard field": lambda d, p: d.update(refreshh="1m"),
    }
    for case, change in cases.items():
        assert schema_problems(broken(change)), case
