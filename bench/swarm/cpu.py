"""Whole-machine CPU sampling from /proc/stat, to tell a link-bound run from a CPU-bound one;
and per-process CPU seconds, to compare what each system's processes spend per byte.

With two cores shared by every namespace (and by whoever else runs tests),
the emulated links are only the bottleneck while the CPU has room. A run is
invalid when the machine was busy above `threshold` for more than
`max_fraction` of its samples: the links did not set the pace.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field

THRESHOLD = 0.90
MAX_FRACTION = 0.25


def _read() -> tuple[int, int]:
    with open("/proc/stat") as stat:
        fields = [int(v) for v in stat.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait; steal counts as busy: the machine was short
    return sum(fields[:8]), idle


@dataclass
class CpuVerdict:
    peak: float
    mean: float
    busy_fraction: float  # share of samples above the threshold
    samples: int
    valid: bool


@dataclass
class CpuSampler:
    interval: float = 0.25
    threshold: float = THRESHOLD
    max_fraction: float = MAX_FRACTION
    samples: list[float] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> CpuSampler:
        self._thread = threading.Thread(target=self._loop, name="cpu-sampler", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _loop(self) -> None:
        total, idle = _read()
        while not self._stop.wait(self.interval):
            now_total, now_idle = _read()
            if now_total > total:
                self.samples.append(1.0 - (now_idle - idle) / (now_total - total))
            total, idle = now_total, now_idle

    def verdict(self) -> CpuVerdict:
        if not self.samples:
            return CpuVerdict(0.0, 0.0, 0.0, 0, True)
        hot = sum(1 for s in self.samples if s > self.threshold) / len(self.samples)
        return CpuVerdict(
            peak=max(self.samples),
            mean=sum(self.samples) / len(self.samples),
            busy_fraction=hot,
            samples=len(self.samples),
            valid=hot <= self.max_fraction,
        )


_TICKS = os.sysconf("SC_CLK_TCK")


def process_seconds(pid: int) -> float | None:
    """User + system CPU seconds of a live process (all its threads); None once it is gone.

    A fixed amount of work costs much the same CPU seconds however loaded the machine is
    (contention still adds some 10-20 % here), where its wall-clock time does not: the
    figure to compare on shared cores."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            text = stat.read()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()  # the command name may hold spaces
    return (int(fields[11]) + int(fields[12])) / _TICKS  # utime, stime (fields 14, 15)
