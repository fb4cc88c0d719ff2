"""systemd's readiness protocol (sd_notify) with the standard library: one datagram to
$NOTIFY_SOCKET. A service of `Type=notify` sends `READY=1` once it serves, `STOPPING=1` when
it begins to stop and `STATUS=...` for `systemctl status`; outside systemd (no NOTIFY_SOCKET)
every call does nothing, so services call it unconditionally."""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping

ENV = "NOTIFY_SOCKET"


def notify(
    ready: bool = False, stopping: bool = False, status: str = "", *, environ: Mapping[str, str]
) -> bool:
    """Sends the given states; True if a notification socket took the message."""
    lines = []
    if ready:
        lines.append("READY=1")
    if stopping:
        lines.append("STOPPING=1")
    if status:
        lines.append(f"STATUS={status.replace(chr(10), ' ')}")
    address = environ.get(ENV, "")
    if not lines or not address:
        return False
    # "@name" is an abstract socket: a NUL byte first (sd_notify(3)).
    target = "\0" + address[1:] if address.startswith("@") else address
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
        try:
            sock.sendto("\n".join(lines).encode(), target)
        except OSError:
            return False
    return True


def notify_env(ready: bool = False, stopping: bool = False, status: str = "") -> bool:
    """`notify` with the process environment."""
    return notify(ready, stopping, status, environ=os.environ)
