"""The rate-limited warning every service uses for input an outsider controls."""

from __future__ import annotations

from typing import Any

from aptmesh.logs import RateLimitedWarning


class Recorder:
    def __init__(self) -> None:
        self.lines: list[tuple[str, dict[str, Any]]] = []

    def warning(self, event: str, **fields: Any) -> None:
        self.lines.append((event, fields))


def test_a_burst_per_period_then_a_count_of_what_was_suppressed() -> None:
    now = [0.0]
    out = Recorder()
    warn = RateLimitedWarning(out, "thing_refused", burst=3, period=60, clock=lambda: now[0])
    assert [warn(n=n) for n in range(10)] == [True] * 3 + [False] * 7
    now[0] = 59.0
    assert not warn(n=10)
    now[0] = 60.0
    assert warn(n=11)
    assert [f["n"] for _, f in out.lines] == [0, 1, 2, 11]
    assert out.lines[-1] == ("thing_refused", {"n": 11, "suppressed": 8})
