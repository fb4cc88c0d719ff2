"""Loopback HTTP servers that stand in for a Debian mirror and aptmesh edges."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Site:
    """What one server answers. Paths are raw request paths (still percent-encoded)."""

    files: dict[str, bytes] = field(default_factory=dict)
    healthy: bool = True
    edges: list[dict[str, str]] | None = None  # /_aptmesh/edges; None: 404
    files_status: int = 200  # anything else: every file request fails with it
    requests: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def paths(self) -> list[str]:
        with self.lock:
            return list(self.requests)

    def file_requests(self) -> list[str]:
        return [p for p in self.paths() if not p.startswith(("/healthz", "/_aptmesh/"))]


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _answer(self, status: int, body: bytes, ctype: str, head: bool) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def _serve(self, head: bool) -> None:
        site = self.server.site
        with site.lock:
            site.requests.append(self.path)
        if self.path == "/healthz":
            status = 200 if site.healthy else 503
            self._answer(status, b"ok\n", "text/plain", head)
        elif self.path == "/_aptmesh/edges" and site.edges is not None:
            body = json.dumps({"edges": site.edges}).encode()
            self._answer(200, body, "application/json", head)
        elif self.path in site.files and site.files_status == 200:
            self._answer(200, site.files[self.path], "application/octet-stream", head)
        else:
            status = site.files_status if site.files_status != 200 else 404
            self._answer(status, b"no\n", "text/plain", head)

    def do_GET(self) -> None:
        self._serve(head=False)

    def do_HEAD(self) -> None:
        self._serve(head=True)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    site: Site


@dataclass
class Running:
    site: Site
    host: str
    port: int

    @property
    def hostport(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.hostport}"


@contextmanager
def serve(site: Site, host: str = "127.0.0.1") -> Iterator[Running]:
    """Serves `site` on a free port of loopback address `host` until the block ends."""
    server = _Server((host, 0), _Handler)
    server.site = site
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield Running(site, host, server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
