"""apt-get download of many small packages: from nginx, via the proxy line, via mesh+http.

A figure to track, not a test (issue 19). A signed repository of N packages
of about 60 KB (aptmesh.debrepo) is served by nginx (Debian's nginx-light);
an `aptmesh edge` (verification off) has that nginx as its upstream and is
warmed, so every package is a cache hit. Real apt-get, each line in its own
isolated configuration (aptmesh.debrepo.apt_env), downloads all N packages
into an empty directory, in alternating runs (medians and spreads shown,
wall time and the CPU time of apt and its methods):

- direct:     deb http://NGINX/debian (the baseline);
- proxy:      the same line with Acquire::http::Proxy at the edge;
- mesh:       deb mesh+http://NGINX/debian, the method in its default
              delivery (it downloads from the edge itself);
- mesh-redirect: the same with Acquire::mesh::Delivery "redirect" (103 to
              the edge; apt's http method downloads).

Each figure is printed with its ratio to direct; the goals are <= 1.2 for
mesh and <= 1.05 for the proxy line. Never gates on time.

    .venv/bin/python bench/apt_method.py [--packages 200] [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from aptmesh.debrepo import AptEnv, PackageSpec, SigningKey, apt_env, build_repo
from aptmesh_apt_method.install import SYSTEM_PYTHON, install
from bench.nginx import NGINX_CONF

MODES = ("direct", "proxy", "mesh", "mesh-redirect")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, deadline: float = 30.0) -> None:
    end = time.monotonic() + deadline
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                response.read()
                return
        except OSError:
            if time.monotonic() > end:
                raise SystemExit(f"{url} did not answer in {deadline} s") from None
            time.sleep(0.05)  # polling interval


def environments(
    work: Path, repo_url: str, keyring: Path, edge: str, method: Path
) -> dict[str, AptEnv]:
    host = repo_url.removeprefix("http://")
    plain = f"deb [signed-by={keyring}] {repo_url}/debian stable main"
    mesh = f"deb [signed-by={keyring}] mesh+http://{host}/debian stable main"
    common = {"Acquire::Retries": "3"}
    via_method = {
        **common,
        "Dir::Bin::Methods::mesh+http": str(method),
        "Acquire::mesh::Edges": edge,
    }
    return {
        "direct": apt_env(work / "direct", plain, common),
        "proxy": apt_env(work / "proxy", plain, {**common, "Acquire::http::Proxy": f"{edge}/"}),
        "mesh": apt_env(work / "mesh", mesh, via_method),
        "mesh-redirect": apt_env(
            work / "mesh-redirect", mesh, {**via_method, "Acquire::mesh::Delivery": "redirect"}
        ),
    }


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed_download(env: AptEnv, names: list[str]) -> tuple[float, float]:
    """Wall seconds of one `apt-get download`, and the CPU seconds of apt and its methods.

    The CPU figure is what the apt side costs, steadier than wall time on a
    shared machine; the edge's and nginx's CPU are not in it.
    """
    out = env.root / "out"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    cpu = _children_cpu()
    started = time.monotonic()
    result = env.run("apt-get", "download", *names, cwd=out, timeout=600, check=False)
    elapsed = time.monotonic() - started
    cpu = _children_cpu() - cpu
    if result.returncode != 0 or len(list(out.glob("*.deb"))) != len(names):
        raise SystemExit(f"apt-get download failed:\n{result.stdout[-2000:]}\n{result.stderr}")
    return elapsed, cpu


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--packages", type=int, default=200)
    parser.add_argument("--size", type=int, default=48 * 1024, help="payload bytes (.deb ~60 KB)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--json", action="store_true", help="also print the figures as JSON")
    args = parser.parse_args()
    if shutil.which("nginx") is None:
        raise SystemExit("nginx is missing: run `make sysdeps`")
    with tempfile.TemporaryDirectory(prefix="aptmesh-bench-method-") as tmp:
        work = Path(tmp)
        key = SigningKey.generate(work / "key")
        specs = [PackageSpec(f"bench{n:04d}", "1.0-1", args.size) for n in range(args.packages)]
        print(f"building {len(specs)} packages ...", file=sys.stderr)
        repo = build_repo(work / "www" / "debian", key, specs)
        names = [s.name for s in specs]
        prefix = work / "nginx"
        prefix.mkdir()
        nginx_port, edge_port = free_port(), free_port()
        (prefix / "nginx.conf").write_text(
            NGINX_CONF.format(prefix=prefix, port=nginx_port, root=work / "www")
        )
        upstream = f"127.0.0.1:{nginx_port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("APTMESH_")}
        env.update(
            APTMESH_EDGE_HTTP_HOST="127.0.0.2",
            APTMESH_EDGE_HTTP_PORT=str(edge_port),
            APTMESH_EDGE_GRPC_BIND="127.0.0.1:0",
            APTMESH_EDGE_CACHE_DIR=str(work / "cache"),
            APTMESH_EDGE_UPSTREAMS=f"{upstream}=http://{upstream}",
            APTMESH_EDGE_VERIFY_MODE="off",
            APTMESH_EDGE_LOG_LEVEL="warning",
        )
        procs = [
            subprocess.Popen(
                [shutil.which("nginx") or "nginx", "-c", str(prefix / "nginx.conf")],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            ),
            subprocess.Popen(
                [sys.executable, "-m", "aptmesh_cli", "edge"],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            ),
        ]
        try:
            edge = f"http://127.0.0.2:{edge_port}"
            wait_http(f"http://{upstream}/debian/dists/stable/InRelease")
            wait_http(f"{edge}/healthz")
            install(work / "client", SYSTEM_PYTHON)
            method = work / "client/usr/lib/apt/methods/mesh+http"
            envs = environments(work / "apt", f"http://{upstream}", key.keyring, edge, method)
            for apt in envs.values():
                apt.run("apt-get", "update")
            timed_download(envs["proxy"], names)  # warms the edge: every later fetch is a hit
            times: dict[str, list[float]] = {mode: [] for mode in MODES}
            cpus: dict[str, list[float]] = {mode: [] for mode in MODES}
            for run in range(args.runs):
                # Each round starts at a different line: none is always first after a pause.
                for mode in MODES[run % len(MODES) :] + MODES[: run % len(MODES)]:
                    wall, cpu = timed_download(envs[mode], names)
                    times[mode].append(wall)
                    cpus[mode].append(cpu)
        finally:
            for proc in procs:
                proc.terminate()
                proc.wait(timeout=10)
            repo.close()
            key.close()
    medians = {mode: statistics.median(values) for mode, values in times.items()}
    cpu_medians = {mode: statistics.median(values) for mode, values in cpus.items()}
    base, cpu_base = medians["direct"], cpu_medians["direct"]
    print(
        f"apt-get download of {args.packages} packages (~{args.size // 1024 + 12} KB each), "
        f"{args.runs} alternating runs; wall s: median [min-max], ratio to direct; "
        "apt-side CPU s (apt and its methods): median, ratio"
    )
    print(f"{'line':<15}{'wall':>7}{'spread':>15}{'ratio':>7}{'cpu':>8}{'ratio':>7}")
    for mode in MODES:
        spread = f"[{min(times[mode]):.2f}-{max(times[mode]):.2f}]"
        print(
            f"{mode:<15}{medians[mode]:>7.2f}{spread:>15}{medians[mode] / base:>7.2f}"
            f"{cpu_medians[mode]:>8.2f}{cpu_medians[mode] / cpu_base:>7.2f}"
        )
    if args.json:
        figures = {
            m: {
                "median_s": medians[m],
                "ratio": medians[m] / base,
                "runs_s": times[m],
                "cpu_median_s": cpu_medians[m],
                "cpu_ratio": cpu_medians[m] / cpu_base,
            }
            for m in MODES
        }
        print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
