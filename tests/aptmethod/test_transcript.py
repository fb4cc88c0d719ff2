"""The method as a process, in literal protocol transcripts."""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import pytest

from aptmesh.testing import free_port
from aptmesh_apt_method.message import Message, make
from tests.aptmethod.servers import Site, serve

from .proc import MethodProcess

CAPABILITIES = (
    b"100 Capabilities\nVersion: aptmesh 0.1\nSingle-Instance: true\nPipeline: true\n"
    b"Send-Config: true\nSend-URI-Encoded: true\n\n"
)


@pytest.fixture(params=["installed", "console-module"])
def argv(request: pytest.FixtureRequest, method_path: Path) -> list[str]:
    if request.param == "installed":
        return [str(method_path)]
    return [sys.executable, "-m", "aptmesh_apt_method"]


def test_capabilities_come_first_unasked(argv: list[str]) -> None:
    with MethodProcess(argv) as method:
        method.receive()
        assert method.raw == CAPABILITIES
        method.close_stdin()
        assert method.finish() == (0, b"", b"")


DEB_PATH = "deb.example.org/debian/pool/main/h/hello/hello_2.10-3%2bb1_amd64.deb"
DEB = b"!<arch>\n" + bytes(range(256)) * 8
DEB_SHA256 = hashlib.sha256(DEB).hexdigest()


def exchange(method_path: Path, tmp_path: Path, edges: str, *items: str) -> list[Message]:
    """Configures the method, asks for the .deb and InRelease, returns every reply."""
    with MethodProcess([str(method_path)]) as method:
        method.receive()
        config = [
            f"Acquire::mesh::Edges={edges}",
            f"Dir::State={tmp_path}",
            "APT::Sandbox::User=root",  # as apt sends it when the sandbox user has no access
            *items,
        ]
        method.send(
            b"601 Configuration\n"
            + b"".join(f"Config-Item: {item}\n".encode() for item in config)
            + b"Config-Item: Acquire::Send-URI-Encoded=1\n\n"
            + b"600 URI Acquire\n"
            + f"URI: mesh+http://{DEB_PATH}\n".encode()
            + f"Filename: {tmp_path}/hello.deb\n".encode()
            + f"Expected-SHA256: {DEB_SHA256}\n\n".encode()
            + b"600 URI Acquire\n"
            + b"URI: mesh+https://deb.example.org/debian/dists/bookworm/InRelease\n"
            + f"Filename: {tmp_path}/InRelease\n\n".encode()
        )
        replies: list[Message] = []
        while not any(r.code in (201, 103) for r in replies if "InRelease" in (r.get("URI") or "")):
            replies.append(method.receive())
        while not any(r.code in (201, 103) for r in replies if "hello" in (r.get("URI") or "")):
            replies.append(method.receive())
        method.close_stdin()
        code, rest, err = method.finish()
    assert (code, rest, err) == (0, b"", b"")
    return replies


def test_full_exchange_with_live_and_dead_edges(method_path: Path, tmp_path: Path) -> None:
    """The method downloads what the live edge has and hands apt the mirror for the rest."""
    dead = f"http://127.0.0.2:{free_port('127.0.0.2')}"
    with serve(Site(files={f"/{DEB_PATH}": DEB}), "127.0.0.3") as edge:
        replies = exchange(method_path, tmp_path, f"{dead} {edge.url}")
    by_uri = {(r.code, r.get("URI")): r for r in replies}
    deb_uri = f"mesh+http://{DEB_PATH}"
    assert by_uri[(200, deb_uri)].get("Size") == str(len(DEB))
    assert (
        by_uri[(201, deb_uri)]
        .encode()
        .decode()
        .startswith(
            f"201 URI Done\nURI: {deb_uri}\nFilename: {tmp_path}/hello.deb\nSize: {len(DEB)}\n"
        )
    )
    assert by_uri[(201, deb_uri)].get("SHA256-Hash") == DEB_SHA256
    assert (tmp_path / "hello.deb").read_bytes() == DEB
    release = "mesh+https://deb.example.org/debian/dists/bookworm/InRelease"
    assert by_uri[(103, release)].encode().decode() == (
        "103 Redirect\n"
        f"URI: {release}\n"
        "New-URI: https://deb.example.org/debian/dists/bookworm/InRelease\n\n"
    )
    assert not (tmp_path / "InRelease").exists()
    assert len(replies) == 3
    cached = json.loads((tmp_path / "mesh-edges.json").read_text())
    assert [e["url"] for e in cached["edges"]] == [edge.url]
    assert edge.site.file_requests() == [
        f"/{DEB_PATH}",
        "/HTTPS///deb.example.org/debian/dists/bookworm/InRelease",
    ] or edge.site.file_requests() == [
        "/HTTPS///deb.example.org/debian/dists/bookworm/InRelease",
        f"/{DEB_PATH}",
    ]


def test_full_exchange_in_the_redirect_delivery(method_path: Path, tmp_path: Path) -> None:
    dead = f"http://127.0.0.2:{free_port('127.0.0.2')}"
    with serve(Site(), "127.0.0.3") as edge:
        first, second = exchange(
            method_path, tmp_path, f"{dead} {edge.url}", "Acquire::mesh::Delivery=redirect"
        )
    assert first.encode().decode() == (
        "103 Redirect\n"
        f"URI: mesh+http://{DEB_PATH}\n"
        f"New-URI: {edge.url}/{DEB_PATH}\n"
        f"Alternate-URIs: http://{DEB_PATH}\n\n"
    )
    assert second.encode().decode() == (
        "103 Redirect\n"
        "URI: mesh+https://deb.example.org/debian/dists/bookworm/InRelease\n"
        f"New-URI: {edge.url}/HTTPS///deb.example.org/debian/dists/bookworm/InRelease\n"
        "Alternate-URIs: https://deb.example.org/debian/dists/bookworm/InRelease\n\n"
    )
    assert edge.site.file_requests() == []


def test_malformed_and_unknown_input_is_tolerated(method_path: Path) -> None:
    with MethodProcess([str(method_path)]) as method:
        method.receive()
        method.send(
            b"this is not a message\n\n"
            b"602 Authorization Credentials\nSite: deb.example.org\n\n"
            b"777 Something New\nField: value\n\n"
            b"600 URI Acquire\nURI: mesh+http://deb.example.org/x.deb\nFilename: /tmp/x.deb\n\n"
        )
        reply = method.receive()
        method.close_stdin()
        code, rest, err = method.finish()
    assert reply == make(
        103,
        "Redirect",
        ("URI", "mesh+http://deb.example.org/x.deb"),
        ("New-URI", "http://deb.example.org/x.deb"),
    )
    assert (code, rest) == (0, b"")
    assert err == (
        b"mesh: ignoring a malformed message from apt: "
        b"reading an apt message: bad header line 'this is not a message'\n"
    )


def test_field_carrying_a_newline_is_not_echoed_as_one(method_path: Path) -> None:
    with MethodProcess([str(method_path)]) as method:
        method.receive()
        method.send(
            b"600 URI Acquire\nURI: mesh+http://h/a.deb\n 201 URI Done\nFilename: /tmp/a\n\n"
        )
        method.receive()
        method.close_stdin()
        method.finish()
    # The continuation line folds into URI; the reply carries it on one line.
    assert method.raw[len(CAPABILITIES) :] == (
        b"103 Redirect\nURI: mesh+http://h/a.deb201 URI Done\n"
        b"New-URI: http://h/a.deb201 URI Done\n\n"
    )


def test_sigint_while_waiting_is_quiet(argv: list[str]) -> None:
    with MethodProcess(argv) as method:
        method.receive()
        method.interrupt()
        code, rest, err = method.finish()
    assert (rest, err) == (b"", b"")
    assert code == 0


def test_eof_in_the_middle_of_a_message_is_quiet(method_path: Path) -> None:
    with MethodProcess([str(method_path)]) as method:
        method.receive()
        method.send(b"600 URI Acquire\nURI: mesh+http://h/a.deb\n")
        method.close_stdin()
        assert method.finish() == (0, b"", b"")
