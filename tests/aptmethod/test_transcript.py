"""The method as a process, in literal protocol transcripts."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from aptmesh.testing import free_port
from aptmesh_apt_method.message import make
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


def test_full_exchange_with_live_and_dead_edges(method_path: Path, tmp_path: Path) -> None:
    dead = f"http://127.0.0.2:{free_port('127.0.0.2')}"
    with serve(Site(), "127.0.0.3") as edge, MethodProcess([str(method_path)]) as method:
        method.receive()
        method.send(
            b"601 Configuration\n"
            + f"Config-Item: Acquire::mesh::Edges={dead} {edge.url}\n".encode()
            + f"Config-Item: Dir::State={tmp_path}\n".encode()
            + b"Config-Item: Acquire::Send-URI-Encoded=1\n\n"
            b"600 URI Acquire\n"
            b"URI: mesh+http://deb.example.org/debian/pool/main/h/hello/hello_2.10-3%2bb1_amd64.deb\n"
            b"Filename: /var/cache/apt/archives/partial/hello_2.10-3+b1_amd64.deb\n"
            b"Expected-SHA256: dc0cab3b2f7b273d92c820ee3664d5d04a9373e3f12b15e8d9543b533b6fe107\n\n"
            b"600 URI Acquire\n"
            b"URI: mesh+https://deb.example.org/debian/dists/bookworm/InRelease\n"
            b"Filename: /var/lib/apt/lists/partial/InRelease\n\n"
        )
        first, second = method.receive(), method.receive()
        method.close_stdin()
        code, rest, err = method.finish()
    path = "deb.example.org/debian/pool/main/h/hello/hello_2.10-3%2bb1_amd64.deb"
    assert first.encode().decode() == (
        "103 Redirect\n"
        f"URI: mesh+http://{path}\n"
        f"New-URI: {edge.url}/{path}\n"
        f"Alternate-URIs: http://{path}\n\n"
    )
    assert second.encode().decode() == (
        "103 Redirect\n"
        "URI: mesh+https://deb.example.org/debian/dists/bookworm/InRelease\n"
        f"New-URI: {edge.url}/HTTPS///deb.example.org/debian/dists/bookworm/InRelease\n"
        "Alternate-URIs: https://deb.example.org/debian/dists/bookworm/InRelease\n\n"
    )
    assert (code, rest, err) == (0, b"", b"")
    assert (tmp_path / "mesh-edges.json").exists()


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
