"""deploy/k8s: every kustomization renders, validates offline against the
Kubernetes schemas, and gives each container a command, environment, ports
and probes that the real services accept."""

from __future__ import annotations

import atexit
import base64
import dataclasses
import importlib.util
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

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
    DEFAULT_K8S,
    FIELD_VALUES,
    K8S,
    NAMESPACE,
    ROOT,
    SECRET_VALUE,
    SERVICES,
    Container,
    Obj,
    all_containers,
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
DEFAULT = DEFAULT_K8S
DEV = Path("deploy/k8s/overlays/dev")
DEV_HA = Path("deploy/k8s/overlays/dev-ha")
PROD = Path("deploy/k8s/overlays/prod")
BARE_METAL = Path("deploy/k8s/overlays/bare-metal")
# What `kubectl apply` users run: the default and the overlays. Together they
# use every component (test_every_component_is_used_by_a_rendered_kustomization).
APPLIED = [DEFAULT, DEV, DEV_HA, PROD, BARE_METAL]
# Renderings with components/ha: the tracker replicated on the shared stores.
REPLICATED = [DEV_HA, PROD]
SINGLE = [p for p in APPLIED if p not in REPLICATED]
# The tracker options components/ha sets, by TrackerConfig field. Another
# change adds them to the tracker; until then the configuration checks below
# leave these two variables out (and say so), and check them fully once the
# fields exist, without any change here.
STORE_OPTIONS = {"store": "APTMESH_TRACKER_STORE", "peer_store": "APTMESH_TRACKER_PEER_STORE"}
STORE_SCHEMES = {"store": "postgresql", "peer_store": "redis"}
# What a store Secret made outside the kustomization holds (prod: CloudNativePG's
# and the operator's Redis), for the configuration checks.
STORE_EXAMPLES = {
    "store": "postgresql://aptmesh:secret@aptmesh-postgresql-rw.aptmesh:5432/aptmesh",
    "peer_store": "redis://:secret@redis.example.internal:6379/0",
}
# What the edge-zone init container would have written (see load_config).
NODE_ZONE = "zone-a"
ZONE_DIR = Path(tempfile.mkdtemp(prefix="aptmesh-k8s-zone-"))
atexit.register(shutil.rmtree, ZONE_DIR, ignore_errors=True)
# Oldest Kubernetes the manifests support (trafficDistribution: beta, on by
# default in 1.31) and the newest schemas kubernetes-validate ships.
K8S_VERSIONS = ["1.31", kubernetes_validate.latest_version()]
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding"}
CRD_GROUPS = ("monitoring.coreos.com/", "postgresql.cnpg.io/")
RECOMMENDED = ("name", "instance", "part-of", "managed-by", "version")
STABLE_SELECTOR_KEYS = {"app.kubernetes.io/name", "app.kubernetes.io/instance"}


def test_the_expected_kustomizations_exist() -> None:
    assert set(APPLIED) | {Path("deploy/k8s/base")} == set(kustomizations())


def test_every_component_has_a_readme() -> None:
    # Parts of other components, not listed on their own.
    internal = {"ha/deployment", "edge-cache-pvc/statefulset", "pss-privileged"}
    listed = K8S.relative_to(ROOT) / "components"
    for component in components():
        if component.is_relative_to(listed) and str(component.relative_to(listed)) not in internal:
            assert (ROOT / component / "README.md").is_file(), component


@pytest.mark.parametrize("path", kustomizations(), ids=str)
def test_every_kustomization_renders(path: Path) -> None:
    objs = render(path)
    assert objs
    for obj in objs:
        if obj["kind"] not in CLUSTER_SCOPED:
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
    objs = render(PROD)
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
    clusters = [o for o in objs if o["kind"] == "Cluster"]
    assert len(clusters) == 1 and clusters[0]["apiVersion"] == "postgresql.cnpg.io/v1"
    cluster = clusters[0]
    assert cluster["spec"]["instances"] >= 3
    # CloudNativePG writes `<cluster>-app` with the application user's `uri`;
    # the tracker's store URL is read from there.
    ref = _secret_ref(service_container(objs, "tracker"), STORE_OPTIONS["store"])
    assert ref == {"name": f"{cluster['metadata']['name']}-app", "key": "uri"}


# -- containers against the services' real configuration ----------------------


def pending_store_options() -> set[str]:
    """Variables of STORE_OPTIONS that TrackerConfig does not have yet."""
    have = {f.name for f in dataclasses.fields(TrackerConfig)}
    return {env for field, env in STORE_OPTIONS.items() if field not in have}


def runnable_env(container: Container) -> dict[str, str]:
    """The pod's environment with what only a running pod has put in place:
    the zone file the init container writes (on a volume the container
    mounts), and without the store options the tracker does not know yet."""
    env = dict(container.env)
    zone_file = env.get("APTMESH_EDGE_ZONE_FILE")
    if zone_file is not None:
        assert os.path.dirname(zone_file) in container.mount_paths(), zone_file
        path = ZONE_DIR / "zone"
        path.write_text(NODE_ZONE + "\n")
        env["APTMESH_EDGE_ZONE_FILE"] = str(path)
    if container.service == "tracker":
        for field, name in STORE_OPTIONS.items():
            if env.get(name) == SECRET_VALUE:
                env[name] = STORE_EXAMPLES[field]
        for name in pending_store_options():
            env.pop(name, None)
    return env


def load_config(container: Container) -> Any:
    return build(CONFIGS[container.service], container.service, {}, runnable_env(container))


def _secret_ref(container: Container, name: str) -> dict[str, Any]:
    for item in container.spec.get("env", []):
        if item["name"] == name:
            ref: dict[str, Any] = item["valueFrom"]["secretKeyRef"]
            return ref
    raise AssertionError(f"{container.service} gets no {name}")


@pytest.mark.parametrize("path", APPLIED, ids=str)
def test_each_service_runs_once_with_its_own_command(path: Path) -> None:
    objs = render(path)
    assert sorted(c.service for c in containers(objs)) == sorted(SERVICES)
    for container in containers(objs):
        assert container.spec["command"] == ["aptmesh"]
        assert container.spec["args"] == [container.service]
        pod = container.workload["spec"]["template"]["spec"]
        for spec in [container.spec, *pod.get("initContainers", [])]:
            image = spec["image"]
            if path == PROD:
                # One registry for all, each image pinned by its digest.
                registry, name = image.split("@")[0].rsplit("/", 1)
                assert registry == "registry.example.org/aptmesh", image
                assert name == f"aptmesh-{container.service}", image
                assert re.fullmatch(r"sha256:[0-9a-f]{64}", image.split("@")[1]), image
            else:
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
            config = load_config(container)
        except ConfigError as exc:
            pytest.fail(f"{path} {container.service}: {exc}")
        token = env_name(container.service, "publish_token")
        assert token in container.env, f"{container.service} gets no {token}"
        if container.service != "tracker":
            continue
        for field, name in STORE_OPTIONS.items():
            if path not in REPLICATED:
                assert name not in container.env, f"{path}: the single tracker gets {name}"
                continue
            # The URLs carry passwords: from Secrets, never a ConfigMap.
            assert _secret_ref(container, name)["key"], name
            if name not in pending_store_options():
                value = getattr(config, field)
                assert urlsplit(str(value)).scheme == STORE_SCHEMES[field], name


def test_the_config_check_catches_a_typo() -> None:
    container = service_container(render(DEFAULT), "edge")
    env = {**container.env, "APTMESH_EDGE_HTTP_PROT": "3142"}
    with pytest.raises(ConfigError, match="APTMESH_EDGE_HTTP_PROT"):
        build(EdgeConfig, "edge", {}, env)


def _has_main(service: str) -> bool:
    return importlib.util.find_spec(f"aptmesh_{service}.main") is not None


@pytest.mark.parametrize(
    ("path", "service"), [*((DEFAULT, s) for s in SERVICES), (DEV_HA, "tracker")], ids=str
)
def test_the_real_entry_point_accepts_the_environment(path: Path, service: str) -> None:
    """`aptmesh SERVICE --print-config` with exactly the environment the pod gets."""
    assert _has_main(service), f"aptmesh_{service}.main is missing"
    container = service_container(render(path), service)
    env = {"PATH": os.environ.get("PATH", ""), **runnable_env(container)}
    command = [sys.executable, "-m", "aptmesh_cli", *container.spec["args"], "--print-config"]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    printed = dict(line.split("=", 1) for line in result.stdout.splitlines())
    for key in env:
        if key.startswith("APTMESH_"):
            assert key in printed
    assert printed[env_name(service, "publish_token")] == "***"
    for name in set(STORE_OPTIONS.values()) & set(env):
        # The URLs carry passwords: masked whole or in part, never shown.
        password = urlsplit(env[name]).password
        assert password and password not in printed[name], name
    if service == "edge":
        assert printed["APTMESH_EDGE_ZONE"] == NODE_ZONE


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
            for c in all_containers(objs)
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
    assert seeder.tracker_announce == (announce,) and edge.tracker_announce == (announce,)
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


def _quantity(text: str) -> float:
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 1e3, "M": 1e6, "G": 1e9}
    match = re.fullmatch(r"([0-9.]+)([A-Za-z]*)", str(text))
    assert match, text
    return float(match.group(1)) * units.get(match.group(2), 1)


@pytest.mark.parametrize("path", APPLIED, ids=str)
def test_ephemeral_storage_is_requested_where_emptydirs_remain(path: Path) -> None:
    """The scheduler counts disk emptyDirs only through ephemeral-storage requests."""
    for workload in workloads(render(path)):
        pod = workload["spec"]["template"]["spec"]
        on_disk = [
            v["emptyDir"]
            for v in pod.get("volumes", [])
            if "emptyDir" in v and v["emptyDir"].get("medium") != "Memory"
        ]
        every = pod["containers"] + pod.get("initContainers", [])
        requests = [c["resources"]["requests"].get("ephemeral-storage") for c in every]
        limits = [c["resources"]["limits"].get("ephemeral-storage") for c in every]
        name = workload["metadata"]["name"]
        assert all(requests) and all(limits), f"{path} {name}: no ephemeral-storage"
        assert all(v.get("sizeLimit") for v in on_disk), f"{path} {name}: unbounded emptyDir"
        needed = sum(_quantity(v["sizeLimit"]) for v in on_disk)
        main = pod["containers"]
        requested = sum(_quantity(c["resources"]["requests"]["ephemeral-storage"]) for c in main)
        assert requested >= needed, f"{path} {name}: requests {requested} < emptyDirs {needed}"


@pytest.mark.parametrize("path", SINGLE, ids=str)
def test_the_single_tracker_is_one_stateful_replica_on_a_volume(path: Path) -> None:
    tracker = find(render(path), "StatefulSet", "aptmesh-tracker")
    assert tracker["spec"]["replicas"] == 1
    assert [t["metadata"]["name"] for t in tracker["spec"]["volumeClaimTemplates"]] == ["data"]


@pytest.mark.parametrize("path", REPLICATED, ids=str)
def test_the_replicated_tracker_is_three_spread_replicas_on_the_shared_stores(path: Path) -> None:
    objs = render(path)
    assert not [
        o
        for o in workloads(objs)
        if o["kind"] == "StatefulSet" and "tracker" in o["metadata"]["name"]
    ]
    assert not [o for o in objs if o["metadata"]["name"] == "aptmesh-tracker-headless"]
    tracker = find(objs, "Deployment", "aptmesh-tracker")
    assert tracker["spec"]["replicas"] == 3
    assert tracker["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    pod = tracker["spec"]["template"]["spec"]
    constraints = pod["topologySpreadConstraints"]
    assert {c["topologyKey"] for c in constraints} == {
        "topology.kubernetes.io/zone",
        "kubernetes.io/hostname",
    }
    for constraint in constraints:
        assert constraint["labelSelector"]["matchLabels"] == selector_of(tracker)
        assert constraint["matchLabelKeys"] == ["pod-template-hash"]
    # Readiness is the index's health (the store behind it), liveness the
    # server's: a store outage takes replicas out of the Service, no restarts.
    container = service_container(objs, "tracker")
    assert container.spec["readinessProbe"]["grpc"]["service"] == READINESS_NAME["tracker"]
    assert container.spec["livenessProbe"]["grpc"]["service"] == ""
    for name in STORE_OPTIONS.values():
        assert "optional" not in _secret_ref(container, name), name


def test_overlays_size_the_seeders() -> None:
    def replicas(path: str) -> int:
        seeder = find(render(Path(path)), "StatefulSet", "aptmesh-seeder")
        count: int = seeder["spec"]["replicas"]
        return count

    assert replicas(str(DEV)) == 1
    assert replicas(str(PROD)) > replicas("deploy/k8s")


def test_the_edge_service_prefers_close_endpoints() -> None:
    objs = render(DEFAULT)
    assert find(objs, "DaemonSet", "aptmesh-edge")
    service = find(objs, "Service", "aptmesh-edge")
    assert service["spec"]["trafficDistribution"] == "PreferClose"
    assert "internalTrafficPolicy" not in service["spec"]


def selector_of(workload: Obj) -> dict[str, str]:
    labels: dict[str, str] = workload["spec"]["selector"]["matchLabels"]
    return labels


# Replicas a DaemonSet is assumed to have for the budget arithmetic.
NODES = 3


def _budget(workload: Obj, pdb: Obj) -> tuple[int, int]:
    """(pods a drain may evict, pods the budget keeps) for the workload's replicas."""
    replicas = NODES if workload["kind"] == "DaemonSet" else workload["spec"]["replicas"]
    spec = pdb["spec"]
    if "maxUnavailable" in spec:
        allowed = int(spec["maxUnavailable"])
    else:
        minimum = spec["minAvailable"]
        if isinstance(minimum, str) and minimum.endswith("%"):
            kept = math.ceil(replicas * int(minimum[:-1]) / 100)
        else:
            kept = int(minimum)
        allowed = replicas - kept
    return allowed, replicas - allowed


@pytest.mark.parametrize("path", APPLIED, ids=str)
def test_every_budget_protects_something_and_allows_drains(path: Path) -> None:
    objs = render(path)
    pdbs = [o for o in objs if o["kind"] == "PodDisruptionBudget"]
    for workload in workloads(objs):
        name = workload["metadata"]["name"]
        matching = [
            p for p in pdbs if p["spec"]["selector"]["matchLabels"] == selector_of(workload)
        ]
        if workload["kind"] != "DaemonSet" and workload["spec"]["replicas"] == 1:
            # One replica: a budget would block every drain or protect nothing.
            assert not matching, f"{path} {name}: a budget for one replica"
            continue
        assert len(matching) == 1, f"{path} {name}"
        assert matching[0]["spec"]["unhealthyPodEvictionPolicy"] == "AlwaysAllow"
        allowed, kept = _budget(workload, matching[0])
        assert allowed >= 1, f"{path} {name}: blocks drains"
        assert kept >= 1, f"{path} {name}: protects nothing"
        if name == "aptmesh-tracker":
            replicas = workload["spec"]["replicas"]
            assert kept > replicas / 2, f"{path}: the tracker's budget keeps no majority"
            for scaled in (3, 5, 7):
                allowed, kept = _budget({**workload, "spec": {"replicas": scaled}}, matching[0])
                assert allowed >= 1 and kept > scaled / 2, scaled


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


def _selects(selector: Obj, labels: dict[str, str]) -> bool:
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expression in selector.get("matchExpressions", []):
        assert expression["operator"] == "In", expression
        if labels.get(expression["key"]) not in expression["values"]:
            return False
    return True


def _allowed_ports(objs: tuple[Obj, ...], workload: Obj, direction: str) -> set[int]:
    """The ports every NetworkPolicy selecting the workload opens (they add up)."""
    labels = workload["spec"]["template"]["metadata"]["labels"]
    return {
        port
        for policy in objs
        if policy["kind"] == "NetworkPolicy" and _selects(policy["spec"]["podSelector"], labels)
        for port in _policy_ports(policy, direction)
    }


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
    for service in ("seeder", "edge"):
        workload = service_container(objs, service).workload
        assert tracker | {6881, 80, 443} <= _allowed_ports(objs, workload, "egress")
    # The edge-zone init container reaches the API server.
    assert {443, 6443} <= _allowed_ports(objs, service_container(objs, "edge").workload, "egress")
    for workload in workloads(objs):
        own = policies[workload["metadata"]["name"]]
        assert own["spec"]["podSelector"]["matchLabels"] == selector_of(workload)


# -- edges that survive rollouts and can be reached -------------------------------


def _edge(objs: tuple[Obj, ...]) -> Container:
    return service_container(objs, "edge")


def _volume(workload: Obj, name: str) -> Obj:
    for volume in workload["spec"]["template"]["spec"]["volumes"]:
        if volume["name"] == name:
            return volume  # type: ignore[no-any-return]
    raise AssertionError(f"{workload['metadata']['name']} has no volume {name}")


def _mount(container: Container, path: str) -> str:
    for mount in container.spec["volumeMounts"]:
        if mount["mountPath"] == path:
            name: str = mount["name"]
            return name
    raise AssertionError(f"nothing mounted at {path}")


def test_prod_edges_keep_their_cache_on_a_claim_one_per_node() -> None:
    objs = render(PROD)
    edge = _edge(objs)
    workload = edge.workload
    assert workload["kind"] == "StatefulSet"
    assert not [o for o in objs if o["kind"] == "DaemonSet"]
    cache = _mount(edge, str(load_config(edge).cache_dir))
    claims = {t["metadata"]["name"]: t for t in workload["spec"]["volumeClaimTemplates"]}
    assert cache in claims
    assert cache not in {v["name"] for v in workload["spec"]["template"]["spec"]["volumes"]}
    requested = _quantity(claims[cache]["spec"]["resources"]["requests"]["storage"])
    assert load_config(edge).cache_max_bytes < requested
    assert workload["spec"]["persistentVolumeClaimRetentionPolicy"]["whenScaled"] == "Retain"
    anti = workload["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"]
    (term,) = anti["requiredDuringSchedulingIgnoredDuringExecution"]
    assert term["topologyKey"] == "kubernetes.io/hostname"
    assert term["labelSelector"]["matchLabels"] == selector_of(workload)


def test_bare_metal_edges_keep_their_cache_in_a_node_directory() -> None:
    objs = render(BARE_METAL)
    edge = _edge(objs)
    volume = _volume(edge.workload, _mount(edge, str(load_config(edge).cache_dir)))
    assert "emptyDir" not in volume
    assert volume["hostPath"] == {"path": "/var/cache/aptmesh/edge", "type": "Directory"}
    # hostPath and hostPort need privileged admission; the exception stays visible.
    labels = find(objs, "Namespace", NAMESPACE)["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "privileged"
    assert labels["pod-security.kubernetes.io/warn"] == "restricted"
    assert labels["pod-security.kubernetes.io/audit"] == "restricted"


@pytest.mark.parametrize("path", [DEFAULT, DEV, DEV_HA, PROD], ids=str)
def test_the_restricted_standard_holds_without_host_access(path: Path) -> None:
    labels = find(render(path), "Namespace", NAMESPACE)["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
    for workload in workloads(render(path)):
        pod = workload["spec"]["template"]["spec"]
        assert not [v for v in pod.get("volumes", []) if "hostPath" in v]
        assert not pod.get("hostNetwork")
        for container in pod["containers"]:
            assert not [p for p in container.get("ports", []) if p.get("hostPort")]


def test_host_ports_advertise_the_node_address() -> None:
    edge = _edge(render(BARE_METAL))
    config = load_config(edge)
    host_ports = {p["containerPort"]: p.get("hostPort") for p in edge.spec["ports"]}
    assert host_ports[config.http_port] == config.http_port
    assert host_ports[config.listen_port] == config.listen_port
    assert config.public_url == f"http://{FIELD_VALUES['status.hostIP']}:{config.http_port}"


def test_a_node_port_advertises_the_node_address_and_stays_on_the_node() -> None:
    objs = render(PROD)
    edge = _edge(objs)
    config = load_config(edge)
    service = find(objs, "Service", "aptmesh-edge-node")
    assert service["spec"]["type"] == "NodePort"
    assert service["spec"]["externalTrafficPolicy"] == "Local"
    (port,) = service["spec"]["ports"]
    assert edge.port(port["targetPort"]) == config.http_port
    assert config.public_url == f"http://{FIELD_VALUES['status.hostIP']}:{port['nodePort']}"
    site = find(objs, "Service", "aptmesh-edge-site")
    assert site["spec"]["type"] == "LoadBalancer"
    assert site["spec"]["externalTrafficPolicy"] == "Local"


# -- the edge's zone from its node ------------------------------------------------


def test_the_zone_comes_from_the_node_through_the_init_container() -> None:
    for path in APPLIED:
        objs = render(path)
        edge = _edge(objs)
        pod = edge.workload["spec"]["template"]["spec"]
        (init,) = pod["initContainers"]
        assert init["image"] == edge.spec["image"], path
        zone_file = next(e["value"] for e in init["env"] if e["name"] == "ZONE_FILE")
        assert edge.env["APTMESH_EDGE_ZONE_FILE"] == zone_file
        assert load_config(edge).zone == NODE_ZONE
        # Only the init container holds the API token.
        token_volumes = {
            v["name"]
            for v in pod["volumes"]
            if any("serviceAccountToken" in s for s in v.get("projected", {}).get("sources", []))
        }
        assert token_volumes and not token_volumes & {m["name"] for m in edge.spec["volumeMounts"]}
        assert token_volumes <= {m["name"] for m in init["volumeMounts"]}
        assert pod["serviceAccountName"] == "aptmesh-edge"
    objs = render(DEFAULT)
    role = find(objs, "ClusterRole", "aptmesh-edge-node-reader")
    assert role["rules"] == [{"apiGroups": [""], "resources": ["nodes"], "verbs": ["get"]}]
    binding = find(objs, "ClusterRoleBinding", "aptmesh-edge-node-reader")
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "aptmesh-edge", "namespace": NAMESPACE}
    ]


def test_the_images_have_the_python_the_init_container_runs() -> None:
    dockerfile = (ROOT / "deploy/docker/Dockerfile").read_text()
    pod = _edge(render(DEFAULT)).workload["spec"]["template"]["spec"]
    (container,) = pod["initContainers"]
    interpreter = container["command"][0]
    assert interpreter == "/opt/aptmesh/bin/python"
    assert "python3 -m venv --without-pip /opt/aptmesh" in dockerfile


# -- the shared stores -------------------------------------------------------------


def _secret_value(objs: tuple[Obj, ...], ref: dict[str, Any]) -> str:
    secret = find(objs, "Secret", ref["name"])
    return base64.b64decode(secret["data"][ref["key"]]).decode()


def _store_password(objs: tuple[Obj, ...], store: Container) -> str:
    """Redis's from its variable, PostgreSQL's from the Secret file it reads."""
    if "REDIS_PASSWORD" in store.env:
        return _secret_value(objs, _secret_ref(store, "REDIS_PASSWORD"))
    path = Path(store.env["POSTGRES_PASSWORD_FILE"])
    mount = next(m for m in store.spec["volumeMounts"] if m["mountPath"] == str(path.parent))
    secret = _volume(store.workload, mount["name"])["secret"]["secretName"]
    return _secret_value(objs, {"name": secret, "key": path.name})


def test_dev_ha_points_the_tracker_at_its_own_stores() -> None:
    """The generated URLs name the dev Services, on ports they serve and the
    network policies open, with the passwords the two pods start with."""
    objs = render(DEV_HA)
    tracker = service_container(objs, "tracker")
    tracker_labels = tracker.workload["spec"]["template"]["metadata"]["labels"]
    allowed = _allowed_ports(objs, tracker.workload, "egress")
    for field, env in STORE_OPTIONS.items():
        url = urlsplit(_secret_value(objs, _secret_ref(tracker, env)))
        assert url.scheme == STORE_SCHEMES[field]
        assert url.port in allowed, f"the tracker may not reach {url.port}"
        service = find(objs, "Service", str(url.hostname))
        assert [p["port"] for p in service["spec"]["ports"]] == [url.port]
        store = next(
            c for c in all_containers(objs) if c.workload["metadata"]["name"] == url.hostname
        )
        assert url.password == _store_password(objs, store)
        if url.scheme == "postgresql":
            assert url.username == store.env["POSTGRES_USER"]
            assert url.path == "/" + store.env["POSTGRES_DB"]
        # Only the tracker reaches the store.
        policy = find(objs, "NetworkPolicy", str(url.hostname))
        (rule,) = policy["spec"]["ingress"]
        assert [p["port"] for p in rule["ports"]] == [url.port]
        assert all(_selects(peer["podSelector"], tracker_labels) for peer in rule["from"])


def test_the_readme_patch_opens_another_upstream_port(tmp_path: Path) -> None:
    """deploy/README.md's example, applied in an overlay of the default: both
    seeders and edges may then reach a mirror on 8080."""
    readme = (ROOT / "deploy/README.md").read_text()
    blocks = re.findall(r"```yaml\n(.*?)```", readme, re.S)
    (example,) = [b for b in blocks if "name: aptmesh-upstream" in b]
    overlay = yaml.safe_load(example)
    overlay["resources"] = [os.path.relpath(ROOT / DEFAULT, tmp_path)]
    (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump(overlay))
    result = subprocess.run(
        ["kubectl", "kustomize", str(tmp_path)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    objs = tuple(doc for doc in yaml.safe_load_all(result.stdout) if doc)
    for service in ("seeder", "edge"):
        workload = service_container(objs, service).workload
        assert {80, 443, 8080} <= _allowed_ports(objs, workload, "egress"), service
    assert 8080 not in _allowed_ports(objs, service_container(objs, "tracker").workload, "egress")
