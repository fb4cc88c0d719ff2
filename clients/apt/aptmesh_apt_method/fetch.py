"""The method downloads from the edges itself; apt's http method only ever sees the mirror.

Theory of operation. Each `600 URI Acquire` becomes a `Job`. A few worker
threads (`Fetcher`) take jobs in turn and try the healthy edges in rank
order over kept-alive HTTP/1.1 connections (one per worker and edge). The
first edge that answers 200 (or 304 to an `If-Modified-Since`) with a body
that fits `Maximum-Size` and matches every `Expected-*` hash wins: the
worker reports `200 URI Start` and `201 URI Done`. When no edge serves the
file, the job ends in a `103 Redirect` to the mirror itself, which apt's
own http method then downloads, verifies and retries as it would without
the mesh. An edge that cannot be reached is skipped by every worker for
the rest of the run (`on_dead`), so a dead edge costs one refused
connection, not one per file.

Why not `103 Redirect` to the edge (the mode `redirect`, kept for
comparison): apt >= 2.3.7 can hang forever. A dead edge's http transfers
fail with `Transient-Failure`, apt delays their retries (FetchAfter), and a
redirect that then lands in that host's queue, whose every item is
delayed and none in flight, is never started: `Queue::Enqueue` cycles the
queue only when it was empty, and `pkgAcquire::Run` wakes a queue only when
its first item is a delayed one. Fetching from the edges here means no
apt queue ever holds an edge's failures; this method never sends a
transient failure to apt, so its own queue never holds delayed items
either.

apt verifies every file again (hashes from the signed index); this module
checks hashes only to fall back early, never to vouch for content.
"""

from __future__ import annotations

import contextlib
import enum
import hashlib
import os
import queue
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from aptmesh_apt_method.httpclient import Connection, HttpError, Response
from aptmesh_apt_method.message import Message, make
from aptmesh_apt_method.uris import Target

# apt's Expected-<name> fields and the hashlib name behind each; the reply
# carries `<name>-Hash` for every type apt expects.
HASH_TYPES = {"SHA512": "sha512", "SHA256": "sha256", "SHA1": "sha1", "MD5Sum": "md5"}
CHUNK = 1 << 16
USER_AGENT = "aptmesh-apt-method"


class Outcome(enum.Enum):
    DONE = "done"  # the file is at the job's filename
    NOT_MODIFIED = "not-modified"  # 304 to our If-Modified-Since: apt keeps its copy
    MISSING = "missing"  # this edge answered but cannot serve this file (try the next)
    DEAD = "dead"  # this edge cannot be reached (skip it for the rest of the run)


@dataclass(frozen=True)
class Job:
    uri: str  # as apt sent it; every reply names it
    target: Target
    filename: str
    last_modified: str | None = None
    expected: tuple[tuple[str, str], ...] = ()  # (apt hash name, hex) pairs
    maximum_size: int | None = None

    @classmethod
    def from_message(cls, uri: str, target: Target, message: Message) -> Job:
        expected = []
        for name in HASH_TYPES:
            value = message.get(f"Expected-{name}")
            if value:
                expected.append((name, value.strip().lower()))
        size = message.get("Expected-Checksum-FileSize") or message.get("Maximum-Size")
        return cls(
            uri=uri,
            target=target,
            filename=message.get("Filename") or "",
            last_modified=message.get("Last-Modified") or None,
            expected=tuple(expected),
            maximum_size=int(size) if size and size.isdigit() else None,
        )


@dataclass(frozen=True)
class Result:
    outcome: Outcome
    size: int = 0
    last_modified: str | None = None
    hashes: tuple[tuple[str, str], ...] = ()
    reason: str = ""


class EdgeSession:
    """One worker's kept-alive connection to one edge."""

    def __init__(self, edge: str, connect_timeout: float, read_timeout: float) -> None:
        self.edge = edge
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
        self._conn: Connection | None = None
        # The edge's own path prefix, if any (http://host:port/prefix, no trailing slash).
        _, slash, prefix = edge.partition("://")[2].partition("/")
        self._prefix = slash + prefix

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def fetch(self, job: Job) -> Result:
        """GETs the job's file from this edge into `job.filename`."""
        path = self._prefix + job.target.via_edge("")
        headers = {"User-Agent": USER_AGENT}
        if job.last_modified:
            headers["If-Modified-Since"] = job.last_modified
        # A kept-alive connection the edge closed meanwhile fails on first use:
        # that is one retry on a fresh connection, not a dead edge.
        for fresh in (self._conn is None, True):
            try:
                response = self._request(path, headers)
            except (OSError, HttpError) as exc:
                self.close()
                if fresh:
                    return Result(Outcome.DEAD, reason=f"{self.edge}: {exc}")
                continue
            try:
                return self._receive(job, response)
            except (OSError, HttpError) as exc:
                self.close()
                return Result(Outcome.MISSING, reason=f"{self.edge}: reading the answer: {exc}")
        raise AssertionError("unreachable")

    def _request(self, path: str, headers: dict[str, str]) -> Response:
        if self._conn is None:
            self._conn = Connection.for_url(self.edge, self._connect_timeout, self._read_timeout)
        return self._conn.get(path, headers)

    def _receive(self, job: Job, response: Response) -> Result:
        if response.status == 304 and job.last_modified:
            response.read()
            return Result(Outcome.NOT_MODIFIED, last_modified=job.last_modified)
        if response.status != 200:
            response.read(CHUNK)
            self.close()  # what is left of an error body is not worth reading
            return Result(Outcome.MISSING, reason=f"{self.edge}: HTTP {response.status}")
        hashers = {name: hashlib.new(HASH_TYPES[name]) for name, _ in job.expected}
        if not hashers:
            hashers = {"SHA256": hashlib.sha256()}
        size = 0
        limit = job.maximum_size
        with open(job.filename, "wb") as out:
            while True:
                chunk = response.read(CHUNK)
                if not chunk:
                    break
                size += len(chunk)
                if limit is not None and size > limit:
                    self.close()
                    return Result(Outcome.MISSING, reason=f"{self.edge}: larger than {limit}")
                out.write(chunk)
                for hasher in hashers.values():
                    hasher.update(chunk)
        if response.will_close:
            self.close()
        hashes = tuple((name, h.hexdigest()) for name, h in hashers.items())
        got = dict(hashes)
        for name, value in job.expected:
            if got.get(name) != value:
                return Result(Outcome.MISSING, reason=f"{self.edge}: {name} mismatch")
        return Result(Outcome.DONE, size, response.getheader("Last-Modified"), hashes)


Emit = Callable[[Message], None]


@dataclass
class _Shared:
    dead: set[str] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)


class Fetcher:
    """Worker threads that serve jobs from the edges and report to apt through `emit`."""

    def __init__(
        self,
        emit: Emit,
        *,
        workers: int = 4,
        connect_timeout: float = 0.5,
        read_timeout: float = 30.0,
        on_dead: Callable[[str], None] | None = None,
        log: Callable[[str], None] | None = None,
    ) -> None:
        self._emit = emit
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
        self._on_dead = on_dead
        self._log = log
        self._jobs: queue.Queue[tuple[Job, Sequence[str]] | None] = queue.Queue()
        self._shared = _Shared()
        self._threads = [
            threading.Thread(target=self._work, name=f"mesh-fetch-{n}", daemon=True)
            for n in range(max(1, workers))
        ]
        for thread in self._threads:
            thread.start()

    def submit(self, job: Job, edges: Sequence[str]) -> None:
        self._jobs.put((job, tuple(edges)))

    def close(self, timeout: float | None = None) -> None:
        """Finishes the queued jobs, then stops the workers."""
        for _ in self._threads:
            self._jobs.put(None)
        for thread in self._threads:
            thread.join(timeout)

    def _work(self) -> None:
        sessions: dict[str, EdgeSession] = {}
        try:
            while True:
                item = self._jobs.get()
                if item is None:
                    return
                job, edges = item
                try:
                    self._serve(job, edges, sessions)
                except Exception as exc:  # a bug here must not cost apt the file
                    self._note(f"fetching {job.uri} failed: {exc!r}")
                    self._emit(redirect_to_mirror(job))
        finally:
            for session in sessions.values():
                session.close()

    def _serve(self, job: Job, edges: Sequence[str], sessions: dict[str, EdgeSession]) -> None:
        for edge in edges:
            with self._shared.lock:
                if edge in self._shared.dead:
                    continue
            session = sessions.get(edge)
            if session is None:
                session = EdgeSession(edge, self._connect_timeout, self._read_timeout)
                sessions[edge] = session
            result = session.fetch(job)
            if result.outcome in (Outcome.DONE, Outcome.NOT_MODIFIED):
                for message in done_messages(job, result):
                    self._emit(message)
                return
            self._note(f"{job.uri}: {result.reason}")
            if result.outcome is Outcome.DEAD:
                with self._shared.lock:
                    first = edge not in self._shared.dead
                    self._shared.dead.add(edge)
                if first and self._on_dead is not None:
                    self._on_dead(edge)
        with contextlib.suppress(OSError):
            os.unlink(job.filename)  # no half-written file for apt's http method to resume
        self._emit(redirect_to_mirror(job))

    def _note(self, text: str) -> None:
        if self._log is not None:
            self._log(text)


def done_messages(job: Job, result: Result) -> list[Message]:
    if result.outcome is Outcome.NOT_MODIFIED:
        return [
            make(
                201,
                "URI Done",
                ("URI", job.uri),
                ("Filename", job.filename),
                ("Last-Modified", result.last_modified),
                ("IMS-Hit", "true"),
            )
        ]
    size = str(result.size)
    return [
        make(200, "URI Start", ("URI", job.uri), ("Size", size)),
        make(
            201,
            "URI Done",
            ("URI", job.uri),
            ("Filename", job.filename),
            ("Size", size),
            ("Last-Modified", result.last_modified),
            *((f"{name}-Hash", value) for name, value in result.hashes),
        ),
    ]


def redirect_to_mirror(job: Job) -> Message:
    return make(103, "Redirect", ("URI", job.uri), ("New-URI", job.target.mirror_uri))
