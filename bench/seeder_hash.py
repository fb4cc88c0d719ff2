"""How fast a seeder sync verifies and hashes packages, next to `sha256sum` on the same files.

Builds a signed repository of large packages (dpkg-deb, a throw-away key),
then times, on the same files:

- `sha256sum` and `openssl dgst -sha256` (one SHA-256 pass: what any
  verification costs; coreutils' own SHA-256 is slower than OpenSSL's, which
  Python's hashlib uses);
- a local-mirror sync (`--once` path, no BitTorrent): InRelease verified with
  gpgv, Packages checked, each file hashed once in place by `make_torrent`
  (SHA-256 of the file + SHA-1 pieces + SHA-256 merkle blocks), one file at a
  time (comparable with sha256sum) and `download_concurrency` 4 (the default);
- an HTTP sync from the repository served on loopback: fetch, fsync, the
  same single hash pass, rename.

It prints bytes per second for each; it never fails on a figure. Run:
`.venv/bin/python bench/seeder_hash.py [--packages 4] [--size-mib 64]`.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import tempfile
import time
from pathlib import Path

from aptmesh import logs
from aptmesh.debrepo import PackageSpec, SigningKey, build_repo
from aptmesh_seeder import app
from aptmesh_seeder.config import SeederConfig
from aptmesh_seeder.publish import MemoryPublisher

MiB = 1024**2


def _rate(size: int, seconds: float) -> str:
    return f"{size / seconds / MiB:8.1f} MiB/s  ({seconds:.2f} s)"


async def _sync(config: SeederConfig) -> tuple[float, int]:
    started = time.perf_counter()
    [result] = await app.once(config, publisher=MemoryPublisher())
    elapsed = time.perf_counter() - started
    if not result.ok:
        raise SystemExit(f"sync failed: {result.error}")
    return elapsed, result.hashed_bytes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--packages", type=int, default=4)
    parser.add_argument("--size-mib", type=int, default=64)
    args = parser.parse_args()
    logs.configure("bench", "warning", "console")
    with tempfile.TemporaryDirectory(prefix="aptmesh-bench-") as tmp:
        root = Path(tmp)
        key = SigningKey.generate(root / "key")
        try:
            specs = [
                PackageSpec(f"bench-pkg{i}", "1.0-1", args.size_mib * MiB)
                for i in range(args.packages)
            ]
            print(f"building {args.packages} packages of {args.size_mib} MiB ...", flush=True)
            repo = build_repo(root / "debian", key, specs)
            files = [str(p.path) for p in repo.packages]
            total = sum(p.size for p in repo.packages)
            subprocess.run(["cat", *files], stdout=subprocess.DEVNULL, check=True)  # warm cache

            started = time.perf_counter()
            subprocess.run(["sha256sum", *files], stdout=subprocess.DEVNULL, check=True)
            floor = time.perf_counter() - started
            started = time.perf_counter()
            subprocess.run(
                ["openssl", "dgst", "-sha256", *files], stdout=subprocess.DEVNULL, check=True
            )
            openssl = time.perf_counter() - started

            common = {
                "keyring": repo.keyring,
                "grpc_bind": "127.0.0.1:0",
                "http_host": "127.0.0.1",
                "http_port": 0,
            }
            mirror = SeederConfig(
                repositories=(f"bench={repo.root};suites={repo.suite}",),
                data_dir=root / "mirror-state",
                **common,  # type: ignore[arg-type]
            )
            in_place, hashed = asyncio.run(_sync(mirror))
            assert hashed == total
            serial = SeederConfig(
                repositories=mirror.repositories,
                data_dir=root / "serial-state",
                download_concurrency=1,
                **common,  # type: ignore[arg-type]
            )
            one_at_a_time, hashed = asyncio.run(_sync(serial))
            assert hashed == total

            repo.server.start()
            try:
                upstream = SeederConfig(
                    repositories=(f"bench={repo.base_url};suites={repo.suite}",),
                    data_dir=root / "http-state",
                    **common,  # type: ignore[arg-type]
                )
                fetched, hashed = asyncio.run(_sync(upstream))
                assert hashed == total
            finally:
                repo.close()
        finally:
            key.close()
    print(f"{args.packages} files, {total / MiB:.0f} MiB")
    print(f"sha256sum (one process)                     {_rate(total, floor)}")
    print(f"openssl dgst -sha256 (one process)          {_rate(total, openssl)}")
    print(f"seeder sync, local mirror, 1 file at a time {_rate(total, one_at_a_time)}")
    print(f"seeder sync, local mirror, 4 at a time      {_rate(total, in_place)}")
    print(f"seeder sync, HTTP upstream on loopback      {_rate(total, fetched)}")
    print(f"1-at-a-time sync speed / sha256sum speed    {floor / one_at_a_time:8.2f}")


if __name__ == "__main__":
    main()
