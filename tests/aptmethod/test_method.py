"""The state machine in process, with a fake edge resolver and clock."""

from __future__ import annotations

import io
import signal
import sys
from collections.abc import Callable

import pytest

from aptmesh_apt_method.config import MeshConfig
from aptmesh_apt_method.main import main
from aptmesh_apt_method.message import Message, make, parse
from aptmesh_apt_method.method import Method

URI = "mesh+http://deb.example.org/debian/pool/main/a/a%2bb%7e1_all.deb"
REDIRECT = "Acquire::mesh::Delivery=redirect"  # these tests read the 103 the edge gets


class Resolver:
    def __init__(self, edges: list[str]) -> None:
        self.edges = edges
        self.calls = 0

    def __call__(self, config: MeshConfig, log: Callable[[str], None]) -> list[str]:
        self.calls += 1
        log(f"resolved {self.edges}")
        return list(self.edges)


class Clock:
    now = 0.0

    def __call__(self) -> float:
        return self.now


def configure(method: Method, *items: str) -> list[Message]:
    return method.handle(make(601, "Configuration", *(("Config-Item", i) for i in items)))


def acquire(method: Method, uri: str = URI) -> list[Message]:
    return method.handle(make(600, "URI Acquire", ("URI", uri), ("Filename", "/tmp/x.deb")))


def test_capabilities() -> None:
    assert Method().capabilities().encode() == (
        b"100 Capabilities\nVersion: aptmesh 0.1\nSingle-Instance: true\nPipeline: true\n"
        b"Send-Config: true\nSend-URI-Encoded: true\n\n"
    )


def test_redirect_to_nearest_edge_with_alternates() -> None:
    method = Method("mesh+http", Resolver(["http://e1:3142", "http://e2:3142"]))
    assert configure(method, "Acquire::mesh::Edges=e1:3142", REDIRECT) == []
    [reply] = acquire(method)
    assert reply.encode().decode() == (
        "103 Redirect\n"
        f"URI: {URI}\n"
        "New-URI: http://e1:3142/deb.example.org/debian/pool/main/a/a%2bb%7e1_all.deb\n"
        "Alternate-URIs: http://e2:3142/deb.example.org/debian/pool/main/a/a%2bb%7e1_all.deb\n"
        " http://deb.example.org/debian/pool/main/a/a%2bb%7e1_all.deb\n\n"
    )


def test_no_edge_redirects_straight_to_the_mirror() -> None:
    method = Method("mesh+https", Resolver([]))
    [reply] = acquire(method, "mesh+https://deb.example.org/debian/x.deb")
    assert reply == make(
        103,
        "Redirect",
        ("URI", "mesh+https://deb.example.org/debian/x.deb"),
        ("New-URI", "https://deb.example.org/debian/x.deb"),
    )


def test_edges_are_resolved_lazily_and_reused_for_cache_seconds() -> None:
    resolver, clock = Resolver(["http://e1"]), Clock()
    method = Method("mesh+http", resolver, clock)
    configure(method, "Acquire::mesh::Cache-Seconds=10")
    assert resolver.calls == 0  # no network before the first request
    acquire(method)
    clock.now = 9.9
    acquire(method)
    assert resolver.calls == 1
    clock.now = 10.0
    acquire(method)
    assert resolver.calls == 2


def test_a_failing_resolver_means_the_mirror() -> None:
    errors: list[str] = []

    def broken(config: MeshConfig, log: Callable[[str], None]) -> list[str]:
        raise RuntimeError("boom")

    method = Method("mesh+http", broken, stderr=errors.append)
    [reply] = acquire(method)
    assert reply.get("New-URI") == "http://deb.example.org/debian/pool/main/a/a%2bb%7e1_all.deb"
    assert len(errors) == 1 and "boom" in errors[0]


def test_unsupported_uri_fails_that_item_only() -> None:
    method = Method("mesh+http", Resolver(["http://e1"]))
    configure(method, REDIRECT)
    [reply] = acquire(method, "mesh+ftp://deb.example.org/x")
    assert (reply.code, reply.get("URI"), reply.get("FailReason")) == (
        400,
        "mesh+ftp://deb.example.org/x",
        "URI",
    )
    assert acquire(method)[0].code == 103


def test_unknown_messages_are_ignored() -> None:
    method = Method("mesh+http", Resolver([]))
    assert method.handle(make(602, "Authorization Credentials", ("Site", "x"))) == []
    assert method.handle(Message(999, "From The Future")) == []
    assert method.handle(make(600, "URI Acquire", ("Filename", "/tmp/x"))) == []


def test_bad_settings_become_apt_warnings() -> None:
    method = Method("mesh+http", Resolver([]))
    [warning] = configure(method, "Acquire::mesh::Cache-Seconds=soon")
    assert warning.code == 104
    assert "Cache-Seconds 'soon'" in (warning.get("Message") or "")


def test_debug_goes_to_stderr_and_101_log_only_when_asked() -> None:
    errors: list[str] = []
    method = Method("mesh+http", Resolver(["http://e1"]), stderr=errors.append)
    configure(method, REDIRECT)
    assert [m.code for m in acquire(method)] == [103]
    assert errors == []
    logs = configure(method, "Debug::Acquire::mesh=true", REDIRECT)
    replies = acquire(method)
    assert [m.code for m in logs] == [101]
    assert [m.code for m in replies] == [101, 101, 103]
    assert errors and all(line.startswith("mesh: ") for line in errors)


def test_uri_carrying_a_newline_yields_single_line_fields() -> None:
    method = Method("mesh+http", Resolver(["http://e1"]))
    configure(method, REDIRECT)
    [incoming] = parse("600 URI Acquire\nURI: mesh+http://h/a.deb\n 201 URI Done\n\n")
    [reply] = method.handle(incoming)
    assert reply.get("URI") == "mesh+http://h/a.deb201 URI Done"
    assert all("\n" not in value for name, value in reply.fields if name != "Alternate-URIs")


def test_a_sigint_after_the_end_of_input_is_ignored(
    monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    """apt closes stdin, then sends SIGINT: one landing during interpreter exit stays quiet."""
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"")))
    previous = signal.getsignal(signal.SIGINT)
    try:
        assert main(["mesh"]) == 0
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, previous)
    assert capfd.readouterr().out.startswith("100 Capabilities")
