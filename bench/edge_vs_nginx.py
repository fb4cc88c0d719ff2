"""The edge's cache next to nginx serving the same files on the same machine.

A figure to track, not a test. nginx (Debian's nginx-light: one worker,
sendfile, tcp_nodelay) serves a directory of package files; an `aptmesh
edge` process (verification off, its upstream that same nginx) is warmed so
every file is a cache hit. wrk then measures, one server at a time over
keep-alive connections on loopback, in alternating runs (medians shown):

- requests per second for a 60 KB file (the median Debian package; served
  from the edge's memory tier);
- throughput for 1 MB and 100 MB files (sendfile from the cache).

Each figure is printed with the edge/nginx ratio; the issue's goals are 0.5
of nginx's request rate for small files and 0.8 of its throughput for large
ones. Both servers are pinned to CPU 0 when `taskset` exists, wrk to CPU 1.

    .venv/bin/python bench/edge_vs_nginx.py [--seconds 5] [--connections 32]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from aptmesh.testing import free_port
from bench.nginx import NGINX_CONF

HOST = "bench.example.org"
FILES = {"60KB": 60 * 1000, "1MB": 1000 * 1000, "100MB": 100 * 1000 * 1000}
CONNECTIONS = {"60KB": 32, "1MB": 32, "100MB": 4}


def pinned(cpu: int, cmd: list[str]) -> list[str]:
    taskset = shutil.which("taskset")
    return [taskset, "-c", str(cpu), *cmd] if taskset and (os.cpu_count() or 1) > 1 else cmd


def wait_http(url: str, deadline: float = 20.0) -> None:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                resp.read()
                return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"server at {url} did not come up")


@dataclass
class Result:
    requests_per_second: float
    bytes_per_second: float


def parse_wrk(text: str) -> Result:
    rps = re.search(r"Requests/sec:\s+([\d.]+)", text)
    transfer = re.search(r"Transfer/sec:\s+([\d.]+)([KMG]?B)", text)
    if not rps or not transfer:
        raise SystemExit(f"cannot read wrk's output:\n{text}")
    unit = {"B": 1, "KB": 1024, "MB": 1024**2, "GB": 1024**3}[transfer.group(2)]
    return Result(float(rps.group(1)), float(transfer.group(1)) * unit)


def median(results: list[Result]) -> Result:
    return Result(
        statistics.median(r.requests_per_second for r in results),
        statistics.median(r.bytes_per_second for r in results),
    )


def wrk(url: str, seconds: int, connections: int) -> Result:
    cmd = pinned(1, ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", url])
    proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", proc.stdout)
    if errors:
        raise SystemExit(f"{url}: {errors.group(1)} error responses")
    return parse_wrk(proc.stdout)


def in_netns(args: argparse.Namespace) -> int:
    """Re-runs this benchmark inside `unshare -n`, with loopback up at `args.mtu`."""
    rerun = [
        sys.executable,
        str(Path(__file__).resolve()),
        f"--seconds={args.seconds}",
        f"--runs={args.runs}",
        f"--connections={args.connections}",
        f"--memory-file-max={args.memory_file_max}",
        *(f"--only={case}" for case in args.only or ()),
        "--inside-netns",
    ]
    script = f"ip link set lo mtu {int(args.mtu)} up && exec {shlex.join(rerun)}"
    return subprocess.run(["unshare", "-n", "sh", "-c", script], check=False).returncode


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--runs", type=int, default=3, help="alternating runs; medians are shown")
    parser.add_argument("--connections", type=int, default=0, help="override wrk -c for all")
    parser.add_argument(
        "--memory-file-max", default="", help="the edge's memory_file_max_bytes (default: its own)"
    )
    parser.add_argument(
        "--mtu",
        type=int,
        default=0,
        help="run everything in a fresh network namespace whose loopback has this MTU "
        "(1500 is a real NIC's; host loopback's 65536 flatters small responses); needs root",
    )
    parser.add_argument(
        "--only", choices=sorted(FILES), action="append", help="measure only these cases"
    )
    parser.add_argument("--inside-netns", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.mtu and not args.inside_netns:
        return in_netns(args)
    for tool in ("nginx", "wrk"):
        if not shutil.which(tool):
            raise SystemExit(f"{tool} is missing: run `make sysdeps`")
    with tempfile.TemporaryDirectory(prefix="aptmesh-bench-edge-") as tmp:
        work = Path(tmp)
        root = work / "www"
        pool = root / "debian/pool/main/b/bench"
        pool.mkdir(parents=True)
        rng = random.Random(0)
        for label, size in FILES.items():
            (pool / f"bench-{label}_1.0_all.deb").write_bytes(rng.randbytes(size))
        prefix = work / "nginx"
        prefix.mkdir()
        nginx_port, edge_port = free_port(), free_port()
        (prefix / "nginx.conf").write_text(
            NGINX_CONF.format(prefix=prefix, port=nginx_port, root=root)
        )
        nginx = subprocess.Popen(
            pinned(0, [shutil.which("nginx") or "nginx", "-c", str(prefix / "nginx.conf")]),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith("APTMESH_")}
        env.update(
            APTMESH_EDGE_HTTP_HOST="127.0.0.1",
            APTMESH_EDGE_HTTP_PORT=str(edge_port),
            APTMESH_EDGE_GRPC_BIND="127.0.0.1:0",
            APTMESH_EDGE_CACHE_DIR=str(work / "cache"),
            APTMESH_EDGE_UPSTREAMS=f"{HOST}=http://127.0.0.1:{nginx_port}",
            APTMESH_EDGE_VERIFY_MODE="off",
            APTMESH_EDGE_LOG_LEVEL="warning",
        )
        if args.memory_file_max:
            env["APTMESH_EDGE_MEMORY_FILE_MAX_BYTES"] = args.memory_file_max
        edge = subprocess.Popen(
            pinned(0, [sys.executable, "-m", "aptmesh_cli", "edge"]),
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            paths = {
                label: f"debian/pool/main/b/bench/bench-{label}_1.0_all.deb" for label in FILES
            }
            urls = {
                "nginx": {k: f"http://127.0.0.1:{nginx_port}/{p}" for k, p in paths.items()},
                "edge": {k: f"http://127.0.0.1:{edge_port}/{HOST}/{p}" for k, p in paths.items()},
            }
            wait_http(urls["nginx"]["60KB"])
            for url in urls["edge"].values():  # warm: every measured request is a cache hit
                wait_http(url)
            runs: dict[str, dict[str, list[Result]]] = {"nginx": {}, "edge": {}}
            cases = [label for label in FILES if not args.only or label in args.only]
            for label in cases:
                conns = args.connections or CONNECTIONS[label]
                for _ in range(args.runs):
                    for server in ("nginx", "edge"):
                        result = wrk(urls[server][label], args.seconds, conns)
                        runs[server].setdefault(label, []).append(result)
            figures = {
                server: {label: median(results) for label, results in by_label.items()}
                for server, by_label in runs.items()
            }
        finally:
            for proc in (edge, nginx):
                proc.terminate()
                proc.wait(timeout=10)
    report = {}
    print(f"{'case':<22}{'nginx':>16}{'edge':>16}{'ratio':>8}  spread (run by run)")
    for label in cases:
        n, e = figures["nginx"][label], figures["edge"][label]
        if label == "60KB":
            name, nv, ev, unit = (
                f"{label} requests/s",
                n.requests_per_second,
                e.requests_per_second,
                "",
            )
        else:
            name, nv, ev, unit = (
                f"{label} throughput",
                n.bytes_per_second / 1e6,
                e.bytes_per_second / 1e6,
                " MB/s",
            )
        ratio = ev / nv if nv else 0.0
        # The ratio of each alternating pair of runs: the noise the median hides.
        pairs = [
            (e_run.requests_per_second / n_run.requests_per_second)
            if label == "60KB"
            else (e_run.bytes_per_second / n_run.bytes_per_second)
            for n_run, e_run in zip(runs["nginx"][label], runs["edge"][label], strict=True)
            if (n_run.requests_per_second if label == "60KB" else n_run.bytes_per_second)
        ]
        spread = (round(min(pairs), 3), round(max(pairs), 3)) if pairs else (0.0, 0.0)
        report[name] = {
            "nginx": round(nv, 1),
            "edge": round(ev, 1),
            "ratio": round(ratio, 3),
            "spread": list(spread),
        }
        print(
            f"{name:<22}{nv:>12.0f}{unit:<4}{ev:>12.0f}{unit:<4}{ratio:>8.2f}"
            f"  {spread[0]:.2f}-{spread[1]:.2f}"
        )
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
