"""A real Prometheus server (Debian's) scrapes a running mesh (`aptmesh up`) through real apt
traffic; every dashboard expression and every alert rule must evaluate without error,
every dashboard expression must return data unless EXPECTED_EMPTY says why it is empty,
and on this healthy mesh every alert's expression is empty (nothing fires).

Dashboard variables are given what Grafana would: `$instance` every instance,
`$__rate_interval` and `$__range` windows the test's 1 s scrapes fill.
"""

from __future__ import annotations

import json
import shutil
import urllib.parse
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml

from aptmesh.testing import free_port
from aptmesh.v1 import edge_pb2, edge_pb2_grpc
from tests.e2e.conftest import Mesh
from tests.fixtures.mesh import http_get, mesh_apt, running, wait_for

ROOT = Path(__file__).resolve().parents[2]
DASHBOARDS = ROOT / "deploy" / "dashboards"
RULES = ROOT / "deploy" / "alerts" / "aptmesh.rules.yaml"
NAMES = ("aptmesh-huge", "aptmesh-large", "aptmesh-medium", "aptmesh-tiny")

# Expressions that are right to be empty on a healthy mesh after a clean apt run, and why.
EXPECTED_EMPTY: dict[str, str] = {
    'sum by (service, kind) (increase(aptmesh_verification_failures_total{instance=~"$instance"'
    ',service="edge"}[$__rate_interval]))': "the edge has no series until its first refusal "
    "(its kinds come from several checks and are not initialized)",
    'sum by (reason) (rate(aptmesh_tracker_bad_requests_total{instance=~"$instance"}'
    "[$__rate_interval])) > 0": "no announce or scrape was refused",
    'sum by (limit) (rate(aptmesh_tracker_refused_peers_total{instance=~"$instance"}'
    "[$__rate_interval])) > 0": "no peer flood: every announce was stored",
}


def dashboard_expressions() -> list[tuple[str, str, str]]:
    """(dashboard, panel title, expression) of every query of every committed dashboard."""
    found = []
    for path in sorted(DASHBOARDS.glob("*.json")):
        doc = json.loads(path.read_text())
        for panel in doc["panels"]:
            for target in panel.get("targets", []):
                if "expr" in target:
                    found.append((path.stem, panel["title"], target["expr"]))
    return found


def grafana_variables(expr: str) -> str:
    return (
        expr.replace("$__rate_interval", "1m").replace("$__range", "5m").replace("$instance", ".*")
    )


def api(base: str, path: str, **params: str) -> dict[str, Any]:
    query = urllib.parse.urlencode(params)
    status, body = http_get(f"{base}/api/v1/{path}?{query}" if params else f"{base}/api/v1/{path}")
    document: dict[str, Any] = json.loads(body)
    assert status == 200 and document["status"] == "success", (path, params, document)
    return document


def scalar(base: str, query: str) -> float | None:
    result = api(base, "query", query=query)["data"]["result"]
    return float(result[0]["value"][1]) if result else None


def prometheus_config(mesh: Mesh) -> dict[str, Any]:
    jobs = []
    for service, url in sorted(mesh.endpoints["metrics"].items()):
        split = urllib.parse.urlsplit(url)
        jobs.append(
            {
                "job_name": f"aptmesh-{service}",
                "metrics_path": split.path,
                "static_configs": [{"targets": [split.netloc]}],
            }
        )
    return {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(RULES)],
        "scrape_configs": jobs,
    }


def test_every_dashboard_expression_and_alert_rule_evaluates(mesh: Mesh, tmp_path: Path) -> None:
    binary = shutil.which("prometheus") or "/usr/bin/prometheus"
    if not Path(binary).exists():
        pytest.fail("prometheus is missing: `make sysdeps` installs Debian's prometheus package")
    config = tmp_path / "prometheus.yml"
    config.write_text(yaml.safe_dump(prometheus_config(mesh)))
    port = free_port()
    argv = [
        binary,
        f"--config.file={config}",
        f"--storage.tsdb.path={tmp_path / 'tsdb'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--log.level=warn",
    ]
    base = f"http://127.0.0.1:{port}"
    with running("prometheus", argv, tmp_path / "prometheus") as prom:

        def ready() -> bool:
            try:
                if http_get(f"{base}/-/ready")[0] != 200:
                    return False
            except OSError:
                return False
            targets = api(base, "targets")["data"]["activeTargets"]
            return len(targets) == 3 and all(t["health"] == "up" for t in targets)

        wait_for(ready, "Prometheus to scrape the three services", procs=[prom])
        # Real traffic while Prometheus scrapes: apt through the mesh twice (the second run
        # from the edge's cache), and a gRPC call to the edge.
        for run in ("first", "second"):
            env = mesh_apt(tmp_path / run, mesh.repo, mesh.edge_http)
            for command in (("update",), ("download", *NAMES)):
                done = env.run("apt-get", *command)
                assert done.returncode == 0, done.stdout + done.stderr
        with grpc.insecure_channel(mesh.endpoints["edge_grpc"]) as channel:
            edge_pb2_grpc.EdgeServiceStub(channel).GetCacheStats(
                edge_pb2.GetCacheStatsRequest(), timeout=5
            )
        served = mesh.metrics("edge").value("aptmesh_edge_requests_total")
        wait_for(
            lambda: scalar(base, "sum(aptmesh_edge_requests_total)") == served,
            "Prometheus to scrape the edge after the traffic",
            procs=[prom],
        )
        # rate() needs two samples of a series, and series born in the traffic (the second
        # run's cache hits) may have one yet: two more scrapes of every service.
        scrapes = 'min(count_over_time(up{job=~"aptmesh-.*"}[10m]))'
        after = scalar(base, scrapes) or 0.0
        wait_for(
            lambda: (scalar(base, scrapes) or 0.0) >= after + 2,
            "two more scrapes",
            procs=[prom],
        )

        expressions = dashboard_expressions()
        assert set(EXPECTED_EMPTY) <= {expr for _, _, expr in expressions}, "stale entries"
        empty = []
        for dashboard, title, expr in expressions:
            result = api(base, "query", query=grafana_variables(expr))
            assert "warnings" not in result, (dashboard, title, result["warnings"])
            if not result["data"]["result"] and expr not in EXPECTED_EMPTY:
                empty.append(f"{dashboard} / {title}: {expr}")
        assert not empty, "expressions without data:\n" + "\n".join(empty)

        def rules_evaluated() -> list[dict[str, Any]] | None:
            groups = api(base, "rules")["data"]["groups"]
            rules = [rule for group in groups for rule in group["rules"]]
            # Before its first evaluation a rule's lastEvaluation is Go's zero time (year 1).
            if rules and all(not r["lastEvaluation"].startswith("0001") for r in rules):
                return rules
            return None

        rules = wait_for(rules_evaluated, "every rule to be evaluated", procs=[prom])
        expected = [r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]
        assert len(rules) == len(expected)
        for rule in rules:
            assert rule["health"] == "ok", rule
            assert rule.get("lastError", "") == "", rule
        # A healthy mesh fires nothing: each alert's expression is empty right now.
        for rule in expected:
            result = api(base, "query", query=rule["expr"])
            assert "warnings" not in result, (rule["alert"], result["warnings"])
            assert result["data"]["result"] == [], (rule["alert"], result["data"]["result"])
