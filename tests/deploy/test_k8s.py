"""deploy/k8s: every kustomization renders, validates offline against the
Kubernetes schemas, and gives each container a command, environment, ports
and probes that the real services accept."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from aptmesh import __version__
from aptmesh.config import ConfigError, build, env_name
from aptmesh.v1 import edge_pb2, index_pb2, registry_pb2, seeder_pb2
from aptmesh_edge.config import EdgeConfig
from aptmesh_seeder.config import SeederConfig
from aptmesh_tracker.config import TrackerConfig
from tests.deploy.manifests import (
    K8S,
    NAMESPACE,
    ROOT,
    SERVICES,
    Container,
    Obj,
    bind_port,
    components,
    containers,
    find,
    kustomizations,
    render,
    service_container,
    workloads,
)

CONFIGS: dict[str, type[Any]] = {
    "tracker": TrackerConfig,
    "seeder": SeederConfig,
    "edge": EdgeConfig,
}
# gRPC health service names each server reports (grpcserver.start): one per
# hosted service, from the generated descriptors, plus the overall "".
HEALTH_NAMES = {
    "tracker": {
        index_pb2.DESCRIPTOR.services_by_name["IndexService"].full_name,
        registry_pb2.DESCRIPTOR.services_by_name["EdgeRegistryService"].full_name,
        "",
    },
    "seeder": {seeder_pb2.DESCRIPTOR.services_by_name["SeederService"].full_name, ""},
    "edge": {edge_pb2.DESCRIPTOR.services_by_name["EdgeService"].full_name, ""},
}
READINESS_NAME = {
    "tracker": index_pb2.DESCRIPTOR.services_by_name["IndexService"].full_name,
    "seeder": seeder_pb2.DESCRIPTOR.services_by_name["SeederService"].full_name,
}
DEFAULT = Path("deploy/k8s")
# What `kubectl apply` users run: the default and the overlays.
APPLIED = [DEFAULT, Path("deploy/k8s/overlays/dev"), Path("deploy/k8s/overlays/prod")]
# Oldest Kubernetes the manifests support (trafficDistribution: beta, on by
# default in 1.31) and the newest schemas kubernetes-validate ships.
K8S_VERSIONS = ["1.31", kubernetes_validate.latest_version()]
CRD_GROUPS = ("monitoring.coreos.com/",)
RECOMMENDED = ("name", "instance", "part-of", "managed-by", "version")
STABLE_SELECTOR_KEYS = {"app.kubernetes.io/name", "app.kubernetes.io/instance"}


def test_the_expected_kustomizations_exist() -> None:
    assert set(APPLIED) | {Path("deploy/k8s/base")} == set(kustomizations())


@pytest.mark.parametrize("path", kustomizations(), ids=str)
def test_every_kustomization_renders(path: Path) -> None:
    objs = render(path)
    assert objs
    for obj in objs:
        if obj["kind"] != "Namespace":
            assert obj["metadata"].get("namespace") == NAMESPACE, obj["metadata"]["name"]


def test_every_component_is_used_by_a_rendered_kustomization() -> None:
    used: set[Path] = set()
    for path in kustomizations():
        doc = yaml.safe_load((ROOT / path / "kustomization.yaml").read_text())
        used |= {(ROOT / path / c).resolve() for c in doc.get("components", [])}
    for component in components():
        doc = yaml.safe_load((ROOT / component / "kustomization.yaml").read_text())
        used |= {(ROOT / component / c).resolve() for c in doc.get("components", [])}
    unused = [c for c in components() if (ROOT / c).resolve() not in used]
    assert not unused, f"components no test renders: {unused}"


def test_the_default_needs_no_crds() -> None:
    kinds = {o["apiVersion"] for o in render(DEFAULT)}
    assert not [k for k in kinds if k.startswith(CRD_GROUPS)]


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("path", APPLIED, ids=str)
def test_objects_validate_against_the_kubernetes_schemas(path: Path, version: str) -> None:
    errors = []
    for obj in render(path):
        if obj["apiVersion"].startswith(CRD_GROUPS):
            continue
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            where = "/".join(str(p) for p in exc.path)
            errors.append(f"{obj['kind']}/{obj['metadata']['name']}: {where}: {exc.message}")
    assert not errors, "\n".join(errors)


def test_operator_objects_are_well_formed() -> None:
    """No schemas for the CRDs here: check what the operator needs by hand."""
    objs = render(Path("deploy/k8s/overlays/prod"))
    monitors = [o for o in objs if o["kind"] == "PodMonitor"]
    assert {m["metadata"]["name"] for m in monitors} == {f"aptmesh-{s}" for s in SERVICES}
    for monitor in monitors:
        service = monitor["metadata"]["labels"]["app.kubernetes.io/component"]
        container = service_container(objs, service)
        assert monitor["spec"]["selector"]["matchLabels"] == selector_of(container.workload)
        for endpoint in monitor["spec"]["podMetricsEndpoints"]:
            assert endpoint["path"] == "/metrics"
            metrics_port = container.port(endpoint["port"])
            assert metrics_port == load_config(container).http_port
    rules = [o for o in objs if o["kind"] == "PrometheusRule"]
    assert len(rules) == 1 and rules[0]["spec"]["groups"]


# -- containers against the services' real configuration ----------------------


def load_config(container: Container) -> Any:
    return build(CONFIGS[container.service], container.service, {}, container.env)


@pytest.mark.parametrize("path", APPLIED, ids=str)
def test_each_service_runs_once_with_its_own_command(path: Path) -> None:
    objs = render(path)
    assert sorted(c.service for c in containers(objs)) == sorted(SERVICES)
    for container in containers(objs):
        assert container.spec["command"] == ["aptmesh"]
        assert container.spec["args"] == [container.service]
        image = container.spec["image"]
        assert image.rsplit(":", 1) == [f"aptmesh-{container.service}", __version__]


@pytest.mark.parametrize("path", APPLIED, ids=str)
def test_environment_is_accepted_by_the_service_config(path: Path) -> None:
    for container in containers(render(path)):
        prefix = f"APTMESH_{container.service.upper()}_"
        foreign = [
            k for k in container.env if k.startswith("APTMESH_") and not k.startswith(prefix)
        ]
        assert not foreign, f"{container.service} gets another service's variables: {foreign}"
        try:
            load_config(container)
        except ConfigError as exc:
            pytest.fail(f"{path} {container.service}: {exc}")
        token = env_name(container.service, "publish_token")
        assert token in container.env, f"{container.service} gets no {token}"


def test_the_config_check_catches_a_typo() -> None:
    container = service_container(render(DEFAULT), "edge")
    env = {**container.env, "APTMESH_EDGE_HTTP_PROT": "3142"}
    with pytest.raises(ConfigError, match="APTMESH_EDGE_HTTP_PROT"):
        build(EdgeConfig, "edge", {}, env)


def _has_main(service: str) -> bool:
    return importlib.util.find_spec(f"aptmesh_{service}.main") is not None


@pytest.mark.parametrize("service", SERVICES)
def test_the_real_entry_point_accepts_the_environment(service: str) -> None:
    """`aptmesh SERVICE --print-config` with exactly the environment the pod gets."""
    if not _has_main(service):
        pytest.skip(f"aptmesh.{service}.main does not exist yet")
    container = service_container(render(DEFAULT), service)
    env = {"PATH": os.environ.get("PATH", ""), **container.env}
    command = [sys.executable, "-m", "aptmesh_cli", *container.spec["args"], "--print-config"]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    printed = dict(line.split("=", 1) for line in result.stdout.splitlines())
    for key in container.env:
        if key.startswith("APTMESH_"):
            assert key in printed
    assert printed[env_name(service, "publish_token")] == "***"


@pytest.mark.parametrize("path", APPLIED, ids=str)
def test_ports_and_probes_match_the_configured_ports(path: Path) -> None:
    objs = render(path)
    for container in containers(objs):
        config = load_config(container)
        service = container.service
        grpc_port = bind_port(config.grpc_bind)
        assert container.port("grpc") == grpc_port
        if service in ("tracker", "edge"):
            assert container.port("http") == config.http_port
        if service == "seeder":
            assert container.port("metrics") == config.http_port
        if service in ("seeder", "edge"):
            assert container.port("bittorrent") == config.listen_port
        probes = {k: container.spec[k] for k in ("startupProbe", "livenessProbe", "readinessProbe")}
        for kind, probe in probes.items():
            if service == "edge":
                assert probe["httpGet"]["port"] == config.http_port, kind
                expected = "/readyz" if kind == "readinessProbe" else "/healthz"
                assert probe["httpGet"]["path"] == expected, kind
            else:
                # Native gRPC probes take numeric ports only, and a name the
                # server reports (an unknown one answers NOT_FOUND: never ready).
                assert probe["grpc"]["port"] == grpc_port, kind
                assert probe["grpc"]["service"] in HEALTH_NAMES[service], kind
        if service in READINESS_NAME:
            assert probes["readinessProbe"]["grpc"]["service"] == READINESS_NAME[service]


@pytest.mark.parametrize("path", APPLIED, ids=str)
def test_services_reach_the_configured_ports(path: Path) -> None:
    objs = render(path)
    for svc in (o for o in objs if o["kind"] == "Service"):
        pods = [
            c
            for c in containers(objs)
            if all(
                c.workload["spec"]["template"]["metadata"]["labels"].get(k) == v
                for k, v in svc["spec"]["selector"].items()
            )
        ]
        assert pods, f"Service {svc['metadata']['name']} selects no workload"
        for port in svc["spec"]["ports"]:
            for container in pods:
                assert container.port(port["targetPort"]) == port["port"]


def test_clients_find_the_tracker_where_it_listens() -> None:
    objs = render(DEFAULT)
    tracker = load_config(service_container(objs, "tracker"))
    grpc = f"aptmesh-tracker:{bind_port(tracker.grpc_bind)}"
    announce = f"http://aptmesh-tracker:{tracker.http_port}/announce"
    find(objs, "Service", "aptmesh-tracker")
    seeder = load_config(service_container(objs, "seeder"))
    edge = load_config(service_container(objs, "edge"))
    assert seeder.tracker_grpc == grpc and edge.tracker_grpc == grpc
    assert seeder.tracker_announce == (announce,) and edge.tracker_announce == announce
    assert edge.public_url == f"http://10.244.1.7:{edge.http_port}"


@pytest.mark.parametrize("path", APPLIED, ids=str)
def test_writable_paths_are_volumes(path: Path) -> None:
    for container in containers(render(path)):
        config = load_config(container)
        if container.service == "tracker":
            writable = str(config.db_path.parent)
        elif container.service == "seeder":
            writable = str(config.data_dir)
        else:
            writable = str(config.cache_dir)
        assert {writable, "/tmp"} <= container.mount_paths()


# -- hardening, availability, labels -------------------------------------------


@pytest.mark.parametrize("path", APPLIED, ids=str)
def test_pods_are_hardened_and_sized(path: Path) -> None:
    for workload in workloads(render(path)):
        pod = workload["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert pod["automountServiceAccountToken"] is False
        for container in pod["containers"] + pod.get("initContainers", []):
            sc = container["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False
            assert sc["readOnlyRootFilesystem"] is True
            assert sc["capabilities"]["drop"] == ["ALL"]
            assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
            for section in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(container["resources"][section])


def test_the_tracker_is_one_stateful_replica_on_a_volume() -> None:
    tracker = find(render(DEFAULT), "StatefulSet", "aptmesh-tracker")
    assert tracker["spec"]["replicas"] == 1
    assert [t["metadata"]["name"] for t in tracker["spec"]["volumeClaimTemplates"]] == ["data"]
    for path in APPLIED:
        assert find(render(path), "StatefulSet", "aptmesh-tracker")["spec"]["replicas"] == 1


def test_overlays_size_the_seeders() -> None:
    def replicas(path: str) -> int:
        seeder = find(render(Path(path)), "StatefulSet", "aptmesh-seeder")
        count: int = seeder["spec"]["replicas"]
        return count

    assert replicas("deploy/k8s/overlays/dev") == 1
    assert replicas("deploy/k8s/overlays/prod") > replicas("deploy/k8s")


def test_the_edge_service_prefers_close_endpoints() -> None:
    objs = render(DEFAULT)
    assert find(objs, "DaemonSet", "aptmesh-edge")
    service = find(objs, "Service", "aptmesh-edge")
    assert service["spec"]["trafficDistribution"] == "PreferClose"
    assert "internalTrafficPolicy" not in service["spec"]


def selector_of(workload: Obj) -> dict[str, str]:
    labels: dict[str, str] = workload["spec"]["selector"]["matchLabels"]
    return labels


@pytest.mark.parametrize("path", APPLIED, ids=str)
def test_every_workload_has_a_pdb_that_allows_drains(path: Path) -> None:
    objs = render(path)
    pdbs = [o for o in objs if o["kind"] == "PodDisruptionBudget"]
    for workload in workloads(objs):
        matching = [
            p for p in pdbs if p["spec"]["selector"]["matchLabels"] == selector_of(workload)
        ]
        assert len(matching) == 1, workload["metadata"]["name"]
        assert matching[0]["spec"]["maxUnavailable"] == 1
        assert matching[0]["spec"]["unhealthyPodEvictionPolicy"] == "AlwaysAllow"
        assert "minAvailable" not in matching[0]["spec"]


def test_seeders_spread_over_zones_and_nodes() -> None:
    seeder = find(render(DEFAULT), "StatefulSet", "aptmesh-seeder")
    constraints = seeder["spec"]["template"]["spec"]["topologySpreadConstraints"]
    keys = {c["topologyKey"] for c in constraints}
    assert keys == {"topology.kubernetes.io/zone", "kubernetes.io/hostname"}
    for constraint in constraints:
        assert constraint["labelSelector"]["matchLabels"] == selector_of(seeder)
        assert constraint["whenUnsatisfiable"] == "ScheduleAnyway"


@pytest.mark.parametrize("path", APPLIED, ids=str)
def test_recommended_labels_everywhere_and_only_stable_ones_in_selectors(path: Path) -> None:
    objs = render(path)
    for obj in objs:
        labels = obj["metadata"].get("labels", {})
        missing = [k for k in RECOMMENDED if f"app.kubernetes.io/{k}" not in labels]
        assert not missing, f"{obj['kind']}/{obj['metadata']['name']} lacks {missing}"
        assert labels["app.kubernetes.io/version"] == __version__
        assert labels["app.kubernetes.io/part-of"] == "aptmesh"
    for workload in workloads(objs):
        assert set(selector_of(workload)) == STABLE_SELECTOR_KEYS
        template = workload["spec"]["template"]["metadata"]["labels"]
        assert template["app.kubernetes.io/version"] == __version__
        for claim in workload["spec"].get("volumeClaimTemplates", []):
            # Immutable: a version label here would make every upgrade fail.
            assert "app.kubernetes.io/version" not in claim["metadata"].get("labels", {})
    for svc in (o for o in objs if o["kind"] == "Service"):
        assert set(svc["spec"]["selector"]) == STABLE_SELECTOR_KEYS
    for pdb in (o for o in objs if o["kind"] == "PodDisruptionBudget"):
        assert set(pdb["spec"]["selector"]["matchLabels"]) == STABLE_SELECTOR_KEYS


def test_no_kustomization_uses_common_labels() -> None:
    for path in K8S.rglob("kustomization.yaml"):
        assert "commonLabels" not in yaml.safe_load(path.read_text()), path


# -- the publish token -----------------------------------------------------------


def test_default_applies_without_the_secret_and_uses_it_when_present() -> None:
    objs = render(DEFAULT)
    assert not [o for o in objs if o["kind"] == "Secret"]
    for container in containers(objs):
        refs = [
            e["valueFrom"]["secretKeyRef"]
            for e in container.spec["env"]
            if "secretKeyRef" in e.get("valueFrom", {})
        ]
        publish = {"name": "aptmesh-publish-token", "key": "token", "optional": True}
        admin = {"name": "aptmesh-admin-token", "key": "token", "optional": True}
        # The tracker takes no control calls; the edges and seeders do, with the admin token.
        assert refs in ([publish], [publish, admin])
        assert (admin in refs) == (container.service != "tracker"), container.service


def test_the_dev_overlay_brings_its_own_token() -> None:
    objs = render(Path("deploy/k8s/overlays/dev"))
    secrets = [o for o in objs if o["kind"] == "Secret"]
    assert len(secrets) == 1
    name = secrets[0]["metadata"]["name"]
    for container in containers(objs):
        ref = next(
            e["valueFrom"]["secretKeyRef"]
            for e in container.spec["env"]
            if "secretKeyRef" in e.get("valueFrom", {})
        )
        assert ref["name"] == name and ref["key"] in secrets[0]["data"]


# -- network policies ------------------------------------------------------------


def _policy_ports(policy: Obj, direction: str) -> set[int]:
    return {p["port"] for rule in policy["spec"].get(direction, []) for p in rule.get("ports", [])}


def test_network_policies_deny_by_default_and_open_the_configured_ports() -> None:
    objs = render(DEFAULT)
    policies = {o["metadata"]["name"]: o for o in objs if o["kind"] == "NetworkPolicy"}
    deny = policies["aptmesh-default-deny"]["spec"]
    assert deny["podSelector"] == {} and set(deny["policyTypes"]) == {"Ingress", "Egress"}
    assert "ingress" not in deny and "egress" not in deny
    assert _policy_ports(policies["aptmesh-allow-dns"], "egress") == {53}
    config = {s: load_config(service_container(objs, s)) for s in SERVICES}
    tracker = {bind_port(config["tracker"].grpc_bind), config["tracker"].http_port}
    assert _policy_ports(policies["aptmesh-tracker"], "ingress") == tracker
    assert _policy_ports(policies["aptmesh-tracker"], "egress") == set()
    seeder = config["seeder"]
    assert _policy_ports(policies["aptmesh-seeder"], "ingress") == {
        seeder.listen_port,
        bind_port(seeder.grpc_bind),
        seeder.http_port,
    }
    edge = config["edge"]
    assert _policy_ports(policies["aptmesh-edge"], "ingress") == {
        edge.http_port,
        edge.listen_port,
        bind_port(edge.grpc_bind),
    }
    for name in ("aptmesh-seeder", "aptmesh-edge"):
        assert tracker | {6881, 80, 443} <= _policy_ports(policies[name], "egress")
    for workload in workloads(objs):
        selected = [
            p
            for p in policies.values()
            if p["spec"]["podSelector"].get("matchLabels") == selector_of(workload)
        ]
        assert len(selected) == 1, workload["metadata"]["name"]
