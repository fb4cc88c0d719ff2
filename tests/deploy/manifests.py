"""Rendering the kustomizations and reading what the pods would really get.

`kubectl kustomize` renders offline; the helpers here resolve a container's
environment the way the kubelet would (ConfigMaps from `envFrom`, `$(VAR)`
references, the downward API, Secrets) so the tests can hand it to the
services' own configuration loader.
"""

from __future__ import annotations

import base64
import functools
import re
import subprocess
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
DEFAULT_K8S = Path("deploy/k8s")
NAMESPACE = "aptmesh"
SERVICES = ("tracker", "seeder", "edge")
WORKLOAD_KINDS = ("Deployment", "StatefulSet", "DaemonSet")

# What the downward API and Secrets would give a pod, for resolving env.
FIELD_VALUES = {
    "status.podIP": "10.244.1.7",
    "status.hostIP": "192.0.2.10",
    "spec.nodeName": "node-a",
    "metadata.name": "pod-0",
    "metadata.namespace": NAMESPACE,
}
SECRET_VALUE = "0123456789abcdef0123456789abcdef"

Obj = dict[str, Any]


def kustomizations() -> list[Path]:
    """Every Kustomization (not Component) under deploy/k8s, relative to the repository."""
    found = []
    for path in sorted(K8S.rglob("kustomization.yaml")):
        doc = yaml.safe_load(path.read_text())
        if doc.get("kind", "Kustomization") == "Kustomization":
            found.append(path.parent.relative_to(ROOT))
    return found


def components() -> list[Path]:
    found = []
    for path in sorted((ROOT / "deploy").rglob("kustomization.yaml")):
        doc = yaml.safe_load(path.read_text())
        if doc.get("kind") == "Component":
            found.append(path.parent.relative_to(ROOT))
    return found


@functools.cache
def render(path: Path) -> tuple[Obj, ...]:
    """`kubectl kustomize PATH` as a tuple of objects (cached: rendering takes a while)."""
    result = subprocess.run(
        ["kubectl", "kustomize", str(ROOT / path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, f"kubectl kustomize {path} failed:\n{result.stderr}"
    return tuple(doc for doc in yaml.safe_load_all(result.stdout) if doc)


def find(objs: tuple[Obj, ...], kind: str, name: str) -> Obj:
    for obj in objs:
        if obj["kind"] == kind and obj["metadata"]["name"] == name:
            return obj
    raise AssertionError(f"no {kind} {name} in the rendered output")


@dataclass(frozen=True)
class Container:
    """A container of a workload, with the environment the kubelet would give it."""

    workload: Obj
    spec: Obj
    env: dict[str, str]

    @property
    def service(self) -> str:
        labels: dict[str, str] = self.workload["spec"]["template"]["metadata"]["labels"]
        return labels["app.kubernetes.io/component"]

    def port(self, name: str) -> int:
        for port in self.spec.get("ports", []):
            if port["name"] == name:
                number: int = port["containerPort"]
                return number
        raise AssertionError(f"{self.spec['name']} has no port named {name}")

    def mount_paths(self) -> set[str]:
        return {m["mountPath"] for m in self.spec.get("volumeMounts", [])}


def workloads(objs: tuple[Obj, ...]) -> list[Obj]:
    return [o for o in objs if o["kind"] in WORKLOAD_KINDS]


def all_containers(objs: tuple[Obj, ...]) -> Iterator[Container]:
    """Every main container, aptmesh's and the stores' of the development overlay."""
    for workload in workloads(objs):
        for spec in workload["spec"]["template"]["spec"]["containers"]:
            yield Container(workload, spec, resolve_env(objs, spec))


def containers(objs: tuple[Obj, ...]) -> Iterator[Container]:
    """The main containers of aptmesh's own services (tracker, seeder, edge)."""
    return (c for c in all_containers(objs) if c.service in SERVICES)


def service_container(objs: tuple[Obj, ...], service: str) -> Container:
    matches = [c for c in containers(objs) if c.service == service]
    assert len(matches) == 1, f"expected one {service} container, found {len(matches)}"
    return matches[0]


_REF = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")


def resolve_env(objs: tuple[Obj, ...], container: Obj) -> dict[str, str]:
    """The container's environment as the kubelet builds it (envFrom first, then env)."""
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        ref = source.get("configMapRef")
        assert ref is not None, f"unsupported envFrom {source}"
        data: Mapping[str, str] = find(objs, "ConfigMap", ref["name"]).get("data", {})
        env.update({source.get("prefix", "") + k: v for k, v in data.items()})
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = _REF.sub(lambda m: env.get(m.group(1), m.group(0)), item["value"])
            continue
        source = item["valueFrom"]
        if "fieldRef" in source:
            env[item["name"]] = FIELD_VALUES[source["fieldRef"]["fieldPath"]]
        elif "secretKeyRef" in source:
            env[item["name"]] = _secret(objs, source["secretKeyRef"])
        elif "configMapKeyRef" in source:
            ref = source["configMapKeyRef"]
            env[item["name"]] = find(objs, "ConfigMap", ref["name"])["data"][ref["key"]]
        else:
            raise AssertionError(f"unsupported valueFrom {source}")
    return env


def _secret(objs: tuple[Obj, ...], ref: Mapping[str, str]) -> str:
    """A Secret the kustomization generates, decoded; SECRET_VALUE for one
    created outside it (by hand, or by an operator such as CloudNativePG)."""
    for obj in objs:
        if obj["kind"] == "Secret" and obj["metadata"]["name"] == ref["name"]:
            return base64.b64decode(obj["data"][ref["key"]]).decode()
    return SECRET_VALUE


def bind_port(bind: str) -> int:
    """The port of a `host:port` bind address such as `[::]:50051`."""
    return int(bind.rsplit(":", 1)[1])
