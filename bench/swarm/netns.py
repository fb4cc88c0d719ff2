"""Hosts in network namespaces on one bridge, with HTB rate caps.

Theory of operation. A run owns every namespace whose name starts with its
prefix, `amb<pid>-`: one "switch" namespace holding the bridge, and one per
host, joined to it by a veth pair created directly inside the two namespaces
(so parallel runs never collide on interface names in the root namespace).
A host's upload cap is HTB on its own veth's egress; its download cap is HTB
on the switch port's egress towards it, which is the same direction of the
same link (the reference notes' ingress -> IFB -> HTB gives the same shaping
with more parts). Removing a namespace removes its links and qdiscs;
processes still inside are killed first (`ip netns pids`), which can only be
processes of this run.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

PREFIX = "amb"
SUBNET = "10.77.0"
_NAME = re.compile(rf"^{PREFIX}(\d+)-")


class NetnsError(RuntimeError):
    """Building the topology failed (a command of ip or tc)."""


def run(*argv: str) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode:
        raise NetnsError(f"{' '.join(argv)}: {done.stderr.strip()}")
    return done.stdout


def run_prefix(pid: int | None = None) -> str:
    return f"{PREFIX}{os.getpid() if pid is None else pid}-"


def namespaces() -> list[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False)
    return [line.split()[0] for line in out.stdout.splitlines() if line.strip()]


def delete_namespace(name: str) -> None:
    """Kills what runs inside `name`, then removes it (idempotent)."""
    pids = subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True)
    for pid in pids.stdout.split():
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid), signal.SIGKILL)
    subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)


def cleanup(prefix: str | None = None) -> list[str]:
    """Removes leftovers: the namespaces and temp dirs of `prefix`, or of every dead run.

    Without a prefix only runs whose process is gone are touched, so a cleanup
    never breaks a run that is still going.
    """
    removed = []
    for name in namespaces():
        match = _NAME.match(name)
        if not match:
            continue
        mine = prefix is not None and name.startswith(prefix)
        dead = prefix is None and not Path(f"/proc/{match.group(1)}").exists()
        if mine or dead:
            delete_namespace(name)
            removed.append(name)
    tmp = Path(tempfile.gettempdir())
    for path in tmp.glob(f"{PREFIX}*-*"):
        match = _NAME.match(path.name)
        if not match or not path.is_dir():
            continue
        if (prefix is not None and path.name.startswith(prefix)) or (
            prefix is None and not Path(f"/proc/{match.group(1)}").exists()
        ):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(str(path))
    return removed


@dataclass
class Host:
    name: str  # short name: "origin", "e0", ...
    netns: str
    address: str
    port: str  # the switch-side interface
    up_mbit: float | None
    down_mbit: float | None

    def exec_argv(self, *argv: str) -> list[str]:
        return ["ip", "netns", "exec", self.netns, *argv]


@dataclass
class Topology:
    """The namespaces of one run; `close()` removes them all (idempotent)."""

    prefix: str
    hosts: dict[str, Host] = field(default_factory=dict)
    _created: list[str] = field(default_factory=list)

    @property
    def switch(self) -> str:
        return f"{self.prefix}sw"

    def _add_netns(self, name: str) -> None:
        run("ip", "netns", "add", name)
        self._created.append(name)
        run("ip", "-n", name, "link", "set", "lo", "up")

    def build_switch(self) -> None:
        self._add_netns(self.switch)
        run("ip", "-n", self.switch, "link", "add", "br0", "type", "bridge")
        run("ip", "-n", self.switch, "link", "set", "br0", "up")

    def add_host(self, name: str, up_mbit: float | None, down_mbit: float | None) -> Host:
        index = len(self.hosts)
        host = Host(
            name, f"{self.prefix}{name}", f"{SUBNET}.{index + 1}", f"s{index}", up_mbit, down_mbit
        )
        self._add_netns(host.netns)
        run(
            "ip", "link", "add", "v0", "netns", host.netns,
            "type", "veth", "peer", "name", host.port, "netns", self.switch,
        )  # fmt: skip
        run("ip", "-n", self.switch, "link", "set", host.port, "master", "br0")
        run("ip", "-n", self.switch, "link", "set", host.port, "up")
        run("ip", "-n", host.netns, "addr", "add", f"{host.address}/24", "dev", "v0")
        run("ip", "-n", host.netns, "link", "set", "v0", "up")
        if up_mbit:
            _htb(host.netns, "v0", up_mbit)
        if down_mbit:
            _htb(self.switch, host.port, down_mbit)
        self.hosts[name] = host
        return host

    def sent_bytes(self, name: str) -> int:
        """Bytes (wire, with headers) the host has sent through its upload cap."""
        host = self.hosts[name]
        out = run("tc", "-n", host.netns, "-s", "qdisc", "show", "dev", "v0")
        match = re.search(r"Sent (\d+) bytes", out)
        return int(match.group(1)) if match else 0

    def close(self) -> None:
        for name in reversed(self._created):
            delete_namespace(name)
        self._created.clear()


def _htb(netns: str, dev: str, mbit: float) -> None:
    rate = f"{int(mbit * 1000)}kbit"
    run("tc", "-n", netns, "qdisc", "replace", "dev", dev, "root", "handle", "1:", "htb",
        "default", "10", "r2q", "100")  # fmt: skip
    run("tc", "-n", netns, "class", "add", "dev", dev, "parent", "1:", "classid", "1:10",
        "htb", "rate", rate, "ceil", rate)  # fmt: skip
