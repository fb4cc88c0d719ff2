"""The human table beside the JSON lines: one row per (scenario, system) run."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

HEADER = (
    f"{'scenario':<11} {'system':<19} {'T_KR':>6} {'T_Mund':>6} {'t_last':>7} {'last/KR':>7} "
    f"{'mirror/F':>8} {'seed/F':>6} {'CPU pk':>6} {'edge s/GB':>9} {'valid':<5}  "
    "edge finish times (s)"
)


def _num(value: Any, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def row(result: dict[str, Any]) -> str:
    finishes = " ".join(_num(t, ".2f") for t in result["t_finish"])
    valid = "yes" if result["valid"] else "NO"
    per_gb = result.get("cpu_seconds_per_gb", {}).get("edge")
    line = (
        f"{result['scenario']:<11} {result['system']:<19} {result['t_kr']:>6.2f} "
        f"{result['t_mundinger']:>6.2f} {_num(result['t_last'], '7.2f'):>7} "
        f"{_num(result['ratio'], '7.2f'):>7} {result['mirror_bytes_ratio']:>8.2f} "
        f"{result['seed_bytes_ratio']:>6.2f} {result['cpu_peak']:>6.0%} "
        f"{_num(per_gb, '9.2f'):>9} {valid:<5}  {finishes}"
    )
    if result["invalid_reasons"]:
        line += "\n" + " " * 12 + "invalid: " + "; ".join(result["invalid_reasons"])
    return line


def table(results: Sequence[dict[str, Any]]) -> str:
    lines = [HEADER, "-" * len(HEADER)]
    lines += [row(r) for r in results]
    if results:
        first = results[0]
        lines.append(
            f"F = {first['F'] / 2**20:.1f} MiB in {first['files']} file(s), "
            f"N = {first['N']} edges; "
            "T_KR = max(F/u_s, F/d_min, N*F/(u_s+sum u_i)) from calibrated goodput; "
            "mirror/F = HTTP bytes the mirror sent / F; seed/F = seeder payload upload / F; "
            "edge s/GB = CPU seconds of the edge hosts' receiving processes per GB delivered"
        )
    return "\n".join(lines)
