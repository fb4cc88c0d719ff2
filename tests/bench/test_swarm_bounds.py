"""The bounds and payload shapes the swarm benchmark reports against (pure, no root)."""

from __future__ import annotations

import math
import statistics

import pytest

from bench.swarm import bounds
from bench.swarm.payload import pulse_sizes

EFF_80 = 0.956 * 80e6 / 8  # the reference notes' calibrated 80 Mbit/s goodput, bytes/s


def test_kumar_ross_matches_the_reference_notes() -> None:
    # 1 seed + 4 leechers, all 80 Mbit, 64 MB: seed-bound, 6.69 s.
    assert bounds.kumar_ross(64_000_000, EFF_80, [EFF_80] * 4, [math.inf] * 4) == pytest.approx(
        6.69, abs=0.01
    )
    # seed 200 Mbit, 8 leechers x 40 Mbit: peer-bound, 8.24 s.
    eff = 0.956e6 / 8
    t = bounds.kumar_ross(64_000_000, 200 * eff, [40 * eff] * 8, [math.inf] * 8)
    assert t == pytest.approx(8.24, abs=0.01)


def test_slowest_download_can_set_the_bound() -> None:
    assert bounds.kumar_ross(100, 1000.0, [1000.0], [10.0]) == 10.0


def test_mundinger_adds_log2_n_over_m_rounds() -> None:
    assert bounds.mundinger(6.69, 8, 256) == pytest.approx(6.69 * (1 + 3 / 256))
    assert bounds.mundinger(6.69, 1, 256) == 6.69


def test_client_server_bound_is_n_copies_through_the_server() -> None:
    assert bounds.client_server(64, 8.0, 8, [math.inf] * 8) == 64.0


def test_pulse_follows_debians_size_mix() -> None:
    sizes = pulse_sizes(256 << 20, seed=3)
    assert sum(sizes) == 256 << 20
    assert 20_000 < statistics.median(sizes) < 150_000
    big = sum(s for s in sizes if s >= 1 << 20)
    assert big / sum(sizes) > 0.8  # most bytes in a few large files
    assert sum(1 for s in sizes if s >= 1 << 20) / len(sizes) < 0.3
    assert pulse_sizes(256 << 20, seed=3) == sizes
