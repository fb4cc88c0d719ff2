"""Deterministic payloads: one large file, or a "pulse" shaped like a Debian archive update.

Debian bookworm main amd64 (reference notes, section 6): median file 59 KB,
p90 1.45 MB, p99 22 MB; 87% of files are at most 1 MB but hold 7.5% of the
bytes. A log-normal with mu = ln(59 KB) and sigma = 2.5 matches the median,
p90 (1.45 MB) and p99 (19.7 MB). Everything follows from the seed, so two
runs with the same seed serve the same bytes.
"""

from __future__ import annotations

import hashlib
import math
import random
from dataclasses import dataclass
from pathlib import Path

MEDIAN = 59_000
SIGMA = 2.5
MIN_FILE = 1_000
CHUNK = 1 << 20


@dataclass(frozen=True)
class PayloadFile:
    path: str  # relative to the mirror's root, as in a pool path
    size: int
    sha256: str


def pulse_sizes(total: int, seed: int, *, max_file: int | None = None) -> list[int]:
    """File sizes drawn from the Debian-like distribution until they add up to `total`."""
    rng = random.Random(seed)
    sizes: list[int] = []
    left = total
    while left > 0:
        size = int(rng.lognormvariate(math.log(MEDIAN), SIGMA))
        size = max(MIN_FILE, min(size, max_file or total, left))
        sizes.append(size)
        left -= size
    return sizes


def _write(path: Path, size: int, seed: int) -> str:
    rng = random.Random(seed)
    digest = hashlib.sha256()
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as out:
        left = size
        while left:
            chunk = rng.randbytes(min(CHUNK, left))
            digest.update(chunk)
            out.write(chunk)
            left -= len(chunk)
    return digest.hexdigest()


def single(root: Path, size: int, seed: int) -> list[PayloadFile]:
    """One file of `size` bytes."""
    rel = f"pool/main/b/bench/bench_{size}_amd64.deb"
    return [PayloadFile(rel, size, _write(root / rel, size, seed))]


def pulse(root: Path, total: int, seed: int) -> list[PayloadFile]:
    """Many files, Debian's size distribution, `total` bytes in all."""
    files = []
    for index, size in enumerate(pulse_sizes(total, seed)):
        rel = f"pool/main/p/pkg{index:04d}/pkg{index:04d}_1.0-{seed}_amd64.deb"
        files.append(PayloadFile(rel, size, _write(root / rel, size, seed * 1_000_003 + index)))
    return files
