"""The method's state machine: messages from apt in, messages to apt out.

Theory of operation. `capabilities()` is the first message. `601
Configuration` sets the settings. Each `600 URI Acquire` is answered with one
`103 Redirect`: `New-URI` on the best healthy edge, `Alternate-URIs` the
other healthy edges and, last, the mirror itself. apt's own http method then
downloads, verifies, retries and falls back; this method never vouches for
content. With no healthy edge the redirect goes straight to the mirror: a
broken mesh never breaks apt. Other messages are ignored.

The edge choice is made on the first request (so apt's capabilities-only
start costs no network) and kept for `Cache-Seconds`. No I/O here besides
calling the injected `resolve`.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

from aptmesh_apt_method import config as configmod
from aptmesh_apt_method.message import Message, clean_line, make
from aptmesh_apt_method.uris import UriError, parse_mesh_uri, redirect_targets

VERSION = "aptmesh 0.1"

# resolve(config, log) -> healthy edge base URLs, best first.
Resolver = Callable[[configmod.MeshConfig, Callable[[str], None]], "list[str]"]


def default_resolver(config: configmod.MeshConfig, log: Callable[[str], None]) -> list[str]:
    from aptmesh_apt_method.edges import discover  # imported on first use: keeps startup cheap

    return [edge.url for edge in discover(config, log=log)]


class Method:
    def __init__(
        self,
        name: str = "mesh",
        resolve: Resolver = default_resolver,
        clock: Callable[[], float] = time.monotonic,
        stderr: Callable[[str], None] | None = None,
    ) -> None:
        self.name = name
        self.config = configmod.MeshConfig()
        self._resolve = resolve
        self._clock = clock
        self._stderr = stderr or _write_stderr
        self._edges: list[str] | None = None
        self._edges_at = 0.0
        self._out: list[Message] = []

    def capabilities(self) -> Message:
        return make(
            100,
            "Capabilities",
            ("Version", VERSION),
            ("Single-Instance", "true"),
            ("Pipeline", "true"),
            ("Send-Config", "true"),
            ("Send-URI-Encoded", "true"),
        )

    def handle(self, message: Message) -> list[Message]:
        """The messages to send in answer to `message` (maybe none)."""
        if message.code == 601:
            self._configure(message)
        elif message.code == 600:
            self._acquire(message)
        else:
            self.debug(f"ignoring message {message.code} {message.text}")
        out, self._out = self._out, []
        return out

    def debug(self, text: str) -> None:
        """A diagnostic: only under Debug::Acquire::mesh, on stderr and as `101 Log`."""
        if self.config.debug:
            self._stderr(f"mesh: {text}")
            self._out.append(make(101, "Log", ("Message", text)))

    def warn(self, text: str) -> None:
        """Something the user should fix: apt shows it as a warning (W:)."""
        self._out.append(make(104, "Warning", ("Message", text)))

    def _configure(self, message: Message) -> None:
        items = configmod.items_from_message(message.get_all("Config-Item"))
        self.config = configmod.from_items(items, self.name)
        self._edges = None
        for warning in self.config.warnings:
            self.warn(warning)
        self.debug(f"configured: {self.config}")

    def _acquire(self, message: Message) -> None:
        # apt never sends control characters in a URI; if one did, no field we
        # write may carry it (message.encode would fold a newline, this drops it).
        uri = clean_line(message.get("URI") or "")
        if not uri:
            self.debug("ignoring 600 URI Acquire without URI")
            return
        try:
            target = parse_mesh_uri(uri)
        except UriError as exc:
            self._out.append(
                make(400, "URI Failure", ("URI", uri), ("Message", str(exc)), ("FailReason", "URI"))
            )
            return
        targets = redirect_targets(target, self._current_edges())
        self.debug(f"{uri} -> {targets}")
        self._out.append(
            make(
                103,
                "Redirect",
                ("URI", uri),
                ("New-URI", targets[0]),
                ("Alternate-URIs", "\n".join(targets[1:]) or None),
            )
        )

    def _current_edges(self) -> list[str]:
        now = self._clock()
        if self._edges is None or now - self._edges_at >= self.config.cache_seconds:
            try:
                self._edges = self._resolve(self.config, self.debug)
            except Exception as exc:  # a bug in discovery must not stop apt
                self._stderr(f"mesh: finding edges failed, using the mirror: {exc!r}")
                self._edges = []
            self._edges_at = now
        return self._edges


def _write_stderr(text: str) -> None:
    try:
        sys.stderr.write(text + "\n")
        sys.stderr.flush()
    except (OSError, ValueError):
        pass
