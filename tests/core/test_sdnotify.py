"""sd_notify over a real AF_UNIX datagram socket, as systemd listens on $NOTIFY_SOCKET."""

from __future__ import annotations

import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from aptmesh.sdnotify import notify


@pytest.fixture
def listener() -> Iterator[tuple[socket.socket, str]]:
    # A short path: AF_UNIX addresses are limited to 108 bytes.
    with tempfile.TemporaryDirectory(prefix="sdn-") as tmp:
        path = str(Path(tmp) / "notify")
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.bind(path)
            sock.settimeout(5)
            yield sock, path


def test_ready_and_status_reach_the_socket(listener: tuple[socket.socket, str]) -> None:
    sock, path = listener
    assert notify(
        ready=True, status="serving apt\non 127.0.0.1:3142", environ={"NOTIFY_SOCKET": path}
    )
    assert sock.recv(4096) == b"READY=1\nSTATUS=serving apt on 127.0.0.1:3142"


def test_an_abstract_socket_name_starts_with_at() -> None:
    name = f"aptmesh-sdnotify-test-{id(object())}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(5)
        assert notify(stopping=True, environ={"NOTIFY_SOCKET": "@" + name})
        assert sock.recv(4096) == b"STOPPING=1"


def test_outside_systemd_or_with_nothing_to_say_nothing_is_sent(tmp_path: Path) -> None:
    assert not notify(ready=True, environ={})
    assert not notify(environ={"NOTIFY_SOCKET": str(tmp_path / "x")})
    # A socket that went away is not an error for the service.
    assert not notify(ready=True, environ={"NOTIFY_SOCKET": str(tmp_path / "gone")})
