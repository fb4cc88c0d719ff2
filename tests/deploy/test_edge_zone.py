"""components/edge-zone's script, run as the init container would run it: the
rendered ConfigMap's zone.py against an HTTPS API server on loopback that
checks the bearer token and serves node objects, with a CA made here."""

from __future__ import annotations

import http.server
import json
import os
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.deploy.manifests import DEFAULT_K8S, find, render

TOKEN = "projected-token-for-the-test"
NODES = {
    "node-a": {"topology.kubernetes.io/zone": "eu-west-1b", "kubernetes.io/hostname": "node-a"},
    "node-bare": {"kubernetes.io/hostname": "node-bare"},
}


class _ApiServer(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - the handler's protocol
        if self.headers.get("Authorization") != f"Bearer {TOKEN}":
            self._send(401, {"kind": "Status", "code": 401})
            return
        prefix = "/api/v1/nodes/"
        name = self.path[len(prefix) :] if self.path.startswith(prefix) else ""
        if name not in NODES:
            self._send(404, {"kind": "Status", "code": 404})
            return
        self._send(200, {"kind": "Node", "metadata": {"name": name, "labels": NODES[name]}})

    def _send(self, status: int, body: object) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


def _self_signed(subject: str, key: Path, cert: Path, extension: str) -> None:
    command = ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt"]
    command += ["ec_paramgen_curve:prime256v1", "-nodes", "-days", "1", "-subj", subject]
    command += ["-addext", extension, "-keyout", str(key), "-out", str(cert)]
    subprocess.run(command, check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, Path]]:
    """(port, credentials directory with token and ca.crt) of a TLS API server on 127.0.0.1."""
    tmp = tmp_path_factory.mktemp("api")
    key, cert = tmp / "server.key", tmp / "server.crt"
    _self_signed("/CN=kubernetes", key, cert, "subjectAltName=IP:127.0.0.1")
    credentials = tmp / "credentials"
    credentials.mkdir()
    (credentials / "token").write_text(TOKEN + "\n")
    (credentials / "ca.crt").write_bytes(cert.read_bytes())
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _ApiServer)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], credentials
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def script(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """zone.py exactly as the rendered ConfigMap holds it."""
    objs = render(DEFAULT_K8S)
    maps = [o for o in objs if o["kind"] == "ConfigMap" and "zone.py" in o.get("data", {})]
    (config_map,) = maps
    find(objs, "ConfigMap", config_map["metadata"]["name"])
    path = tmp_path_factory.mktemp("script") / "zone.py"
    path.write_text(config_map["data"]["zone.py"])
    return path


def _run(script: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-I", str(script)],
        env={"PATH": os.environ.get("PATH", ""), **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def _env(port: int, credentials: Path, node: str, zone_file: Path) -> dict[str, str]:
    return {
        "NODE_NAME": node,
        "ZONE_FILE": str(zone_file),
        "TOKEN_DIR": str(credentials),
        "KUBERNETES_SERVICE_HOST": "127.0.0.1",
        "KUBERNETES_SERVICE_PORT": str(port),
    }


def test_it_writes_the_node_zone(api: tuple[int, Path], script: Path, tmp_path: Path) -> None:
    port, credentials = api
    zone_file = tmp_path / "zone"
    result = _run(script, _env(port, credentials, "node-a", zone_file))
    assert result.returncode == 0, result.stderr
    assert zone_file.read_text() == "eu-west-1b\n"
    assert json.loads(result.stderr.splitlines()[-1])["event"] == "zone_found"


def test_a_node_without_the_label_gives_an_empty_zone(
    api: tuple[int, Path], script: Path, tmp_path: Path
) -> None:
    port, credentials = api
    zone_file = tmp_path / "zone"
    result = _run(script, _env(port, credentials, "node-bare", zone_file))
    assert result.returncode == 0, result.stderr
    assert zone_file.read_text() == ""


def test_a_refused_lookup_never_stops_the_edge(
    api: tuple[int, Path], script: Path, tmp_path: Path
) -> None:
    """A wrong token (401) is retried, then logged; the edge still starts, zone empty."""
    port, credentials = api
    wrong = tmp_path / "wrong"
    wrong.mkdir()
    (wrong / "token").write_text("not-the-token")
    (wrong / "ca.crt").write_bytes((credentials / "ca.crt").read_bytes())
    zone_file = tmp_path / "zone"
    env = {**_env(port, wrong, "node-a", zone_file), "ZONE_ATTEMPTS": "2"}
    result = _run(script, env)
    assert result.returncode == 0, result.stderr
    assert zone_file.read_text() == ""
    events = [json.loads(line)["event"] for line in result.stderr.splitlines()]
    assert events == ["zone_lookup_failed", "zone_lookup_failed"]
    assert "401" in result.stderr


def test_an_untrusted_server_is_refused(
    api: tuple[int, Path], script: Path, tmp_path: Path
) -> None:
    """The CA file is the trust anchor: another CA's certificate does not pass."""
    port, credentials = api
    other = tmp_path / "other"
    other.mkdir()
    (other / "token").write_text(TOKEN)
    _self_signed("/CN=other", tmp_path / "k", other / "ca.crt", "subjectAltName=IP:127.0.0.1")
    zone_file = tmp_path / "zone"
    env = {**_env(port, other, "node-a", zone_file), "ZONE_ATTEMPTS": "1"}
    result = _run(script, env)
    assert result.returncode == 0 and zone_file.read_text() == ""
    assert "CERTIFICATE_VERIFY_FAILED" in result.stderr


def test_a_pod_spec_without_its_variables_is_an_error(script: Path) -> None:
    result = _run(script, {})
    assert result.returncode == 2
    assert json.loads(result.stderr)["missing"] == "NODE_NAME"
