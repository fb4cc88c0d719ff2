"""The payload as a signed Debian repository, so real aptmesh services can serve it.

`dists/stable/{Release,InRelease}` and `main/binary-amd64/Packages{,.xz}`
listing every payload file (the payload's bytes are random, not real .deb
archives: nothing in the mesh opens a package, it only checks sizes and
SHA-256s), signed by a throw-away ed25519 key in the run's temp directory.
"""

from __future__ import annotations

import hashlib
import lzma
import os
import subprocess
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

from aptmesh.debian import FileHash, PackageEntry, Release, dump_packages, dump_release
from bench.swarm.payload import PayloadFile

SUITE = "stable"
INDEX_DIR = "main/binary-amd64"
INRELEASE = f"dists/{SUITE}/InRelease"
PACKAGES = f"dists/{SUITE}/{INDEX_DIR}/Packages"


def _gpg(home: Path, *args: str, stdin: bytes = b"") -> bytes:
    cmd = ["gpg", "--homedir", str(home), "--batch", "--yes", "--quiet",
           "--pinentry-mode", "loopback", "--passphrase", ""]  # fmt: skip
    env = {**os.environ, "GNUPGHOME": str(home), "LC_ALL": "C"}
    done = subprocess.run([*cmd, *args], input=stdin, capture_output=True, env=env, timeout=60)
    if done.returncode:
        raise RuntimeError(f"gpg {' '.join(args)}: {done.stderr.decode(errors='replace')}")
    return done.stdout


def stop_agent(home: Path) -> None:
    """Stops the gpg-agent gpg started for `home` (ours; it would outlive the run)."""
    subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "gpg-agent"],
                   capture_output=True, check=False)  # fmt: skip


def write(root: Path, files: Sequence[PayloadFile], gnupg: Path) -> Path:
    """Writes the indexes under `root` and returns the keyring that verifies them."""
    gnupg.mkdir(mode=0o700, parents=True, exist_ok=True)
    _gpg(gnupg, "--quick-gen-key", "aptmesh bench <bench@aptmesh.invalid>", "ed25519", "sign",
         "never")  # fmt: skip
    listing = _gpg(gnupg, "--with-colons", "--list-secret-keys").decode()
    fingerprint = next(ln.split(":")[9] for ln in listing.splitlines() if ln.startswith("fpr:"))
    keyring = gnupg / "bench-keyring.gpg"
    keyring.write_bytes(_gpg(gnupg, "--export", fingerprint))
    entries = [
        PackageEntry(
            package=Path(f.path).name.split("_")[0],
            version=Path(f.path).name.split("_")[1],
            architecture="amd64",
            filename=f.path,
            size=f.size,
            sha256=f.sha256,
            section="misc",
        )
        for f in files
    ]
    plain = dump_packages(entries).encode()
    variants = {f"{INDEX_DIR}/Packages": plain, f"{INDEX_DIR}/Packages.xz": lzma.compress(plain)}
    dists = root / "dists" / SUITE
    for rel, data in variants.items():
        (dists / rel).parent.mkdir(parents=True, exist_ok=True)
        (dists / rel).write_bytes(data)
    now = datetime.now(UTC).replace(microsecond=0)
    release = Release(
        origin="aptmesh-bench",
        label="aptmesh-bench",
        suite=SUITE,
        codename=SUITE,
        date=now,
        valid_until=now + timedelta(days=7),
        architectures=("amd64",),
        components=("main",),
        files={r: FileHash(len(d), hashlib.sha256(d).hexdigest()) for r, d in variants.items()},
    )
    text = dump_release(release).encode()
    (dists / "Release").write_bytes(text)
    signed = _gpg(gnupg, "--local-user", fingerprint, "--digest-algo", "SHA256", "--clearsign",
                  stdin=text)  # fmt: skip
    (dists / "InRelease").write_bytes(signed)
    return keyring
