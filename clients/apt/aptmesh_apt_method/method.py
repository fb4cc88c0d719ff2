"""The method's state machine: messages from apt in, messages to apt out.

Theory of operation. `capabilities()` is the first message. `601
Configuration` sets the settings. Each `600 URI Acquire` goes, with the
healthy edges best first, to the `Fetcher` (fetch.py), whose workers
download it from the first edge that serves it (`200`/`201`, sent through
`emit` from their threads) or else answer `103 Redirect` to the mirror, so
apt's own http method fetches it as it would without the mesh. With no
healthy edge the redirect to the mirror is immediate: a broken mesh never
breaks apt. apt verifies every file; this method never vouches for content.

In the `redirect` delivery (kept for comparison) each `600` is answered
with one `103 Redirect`: `New-URI` on the best edge, `Alternate-URIs` the
other edges and, last, the mirror. apt >= 2.3.7 can hang in it when an
edge dies mid-run (fetch.py says why). Other messages are ignored.

The edge choice is made on the first request (so apt's capabilities-only
start costs no network) and kept for `Cache-Seconds`. No I/O here besides
calling the injected `resolve`.
"""

from __future__ import annotations

import dataclasses
import sys
import threading
import time
from collections.abc import Callable

from aptmesh_apt_method import config as configmod
from aptmesh_apt_method.capabilities import CAPABILITIES, VERSION  # noqa: F401 (re-export)
from aptmesh_apt_method.fetch import Fetcher, Job
from aptmesh_apt_method.message import Message, clean_line, make, parse
from aptmesh_apt_method.uris import UriError, parse_mesh_uri, redirect_targets

# settle(config items, Dir::State) -> the cache file: drops root (privileges.settle).
Settle = Callable[["dict[str, str]", "str | None"], "str | None"]
# resolve(config, log) -> healthy edge base URLs, best first.
Resolver = Callable[[configmod.MeshConfig, Callable[[str], None]], "list[str]"]


def default_resolver(config: configmod.MeshConfig, log: Callable[[str], None]) -> list[str]:
    from aptmesh_apt_method.edges import discover  # imported on first use: keeps startup cheap

    return [edge.url for edge in discover(config, log=log)]


def default_forget(config: configmod.MeshConfig, url: str) -> None:
    from aptmesh_apt_method.edges import forget

    forget(config, url)


class Method:
    def __init__(
        self,
        name: str = "mesh",
        resolve: Resolver = default_resolver,
        clock: Callable[[], float] = time.monotonic,
        stderr: Callable[[str], None] | None = None,
        emit: Callable[[Message], None] | None = None,
        forget: Callable[[configmod.MeshConfig, str], None] = default_forget,
        settle: Settle | None = None,
    ) -> None:
        self.name = name
        self.config = configmod.MeshConfig()
        self._resolve = resolve
        self._clock = clock
        self._stderr = stderr or _write_stderr
        self._edges: list[str] | None = None
        self._edges_at = 0.0
        self._out: list[Message] = []
        # Messages from the fetch workers; without `emit` they wait for `take()`.
        self._emit = emit or self._keep
        self._kept: list[Message] = []
        self._lock = threading.Lock()  # guards _edges and _kept against the workers
        self._forget = forget
        self._settle = settle
        self._fetcher: Fetcher | None = None

    def capabilities(self) -> Message:
        [message] = parse(CAPABILITIES)
        return message

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

    def close(self) -> None:
        """Finishes the downloads in progress (their messages are emitted first)."""
        if self._fetcher is not None:
            self._fetcher.close()
            self._fetcher = None

    def take(self) -> list[Message]:
        """The workers' messages so far, when no `emit` was given."""
        with self._lock:
            kept, self._kept = self._kept, []
        return kept

    def _keep(self, message: Message) -> None:
        with self._lock:
            self._kept.append(message)

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
        if self._settle is not None:  # may raise PrivilegeError: never go on as root
            # Everything is imported first: after the drop the code may be unreadable.
            import aptmesh_apt_method.edges  # noqa: F401

            cache_file = self._settle(items, configmod.state_dir(items))
            self.config = dataclasses.replace(self.config, cache_file=cache_file)
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
        edges = self._current_edges()
        if self.config.delivery is configmod.Delivery.FETCH and edges:
            self._fetch(Job.from_message(uri, target, message), edges)
            return
        targets = redirect_targets(target, edges)
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

    def _fetch(self, job: Job, edges: list[str]) -> None:
        if self._fetcher is None:
            self._fetcher = Fetcher(
                self._emit,
                connect_timeout=self.config.probe_timeout,
                read_timeout=self.config.timeout,
                on_dead=self._edge_died,
                log=self._worker_debug,
            )
        self._fetcher.submit(job, edges)

    def _edge_died(self, url: str) -> None:
        """A worker could not reach `url`: nothing more goes there, in this run or the next."""
        with self._lock:
            if self._edges is not None and url in self._edges:
                self._edges = [e for e in self._edges if e != url]
        try:
            self._forget(self.config, url)
        except Exception as exc:  # the cache is an optimisation; losing it costs a probe
            self._worker_debug(f"could not drop {url} from the edge cache: {exc!r}")

    def _worker_debug(self, text: str) -> None:
        if self.config.debug:
            self._stderr(f"mesh: {text}")
            self._emit(make(101, "Log", ("Message", text)))

    def _current_edges(self) -> list[str]:
        now = self._clock()
        with self._lock:
            if self._edges is not None and now - self._edges_at < self.config.cache_seconds:
                return list(self._edges)
        try:
            edges = self._resolve(self.config, self.debug)
        except Exception as exc:  # a bug in discovery must not stop apt
            self._stderr(f"mesh: finding edges failed, using the mirror: {exc!r}")
            edges = []
        with self._lock:
            self._edges, self._edges_at = list(edges), now
        return list(edges)


def _write_stderr(text: str) -> None:
    try:
        sys.stderr.write(text + "\n")
        sys.stderr.flush()
    except (OSError, ValueError):
        pass
