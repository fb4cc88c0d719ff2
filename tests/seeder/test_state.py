"""The seeder's durable state: sync records, wanted sets, grace periods, kill -9."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

from aptmesh.debian import Generation
from aptmesh_seeder.state import HeldFile, State, Validator


def _held(tmp_path: Path, n: int, **changes: object) -> HeldFile:
    values: dict[str, object] = {
        "sha256": f"{n:064x}",
        "size": 100 + n,
        "name": f"p{n}.deb",
        "path": tmp_path / f"p{n}.deb",
        "owned": True,
        "mtime_ns": 1,
        "info_hash_v1": f"{n:040x}",
        "info_hash_v2": f"{n:064x}",
        "piece_length": 65536,
        "torrent": b"d4:infod...ee",
        "upstream_urls": (f"http://m.example/debian/pool/p{n}.deb",),
    }
    values.update(changes)
    return HeldFile(**values)  # type: ignore[arg-type]


def test_a_failed_sync_keeps_the_last_good_one(tmp_path: Path) -> None:
    state = State(tmp_path / "s.sqlite3")
    good = {"stable": Validator('"e1"', "Mon, 01 Jan 2024 00:00:00 GMT", "a" * 64)}
    state.put_file(_held(tmp_path, 1), when=10)
    state.record_sync("r", 10, ok=True, validators=good, wanted=[f"{1:064x}"], total_bytes=101)
    state.record_sync("r", 20, ok=False, error="signature: bad")
    repo = state.repository("r")
    assert (repo.last_sync_time, repo.last_sync_ok, repo.last_error) == (
        20,
        False,
        "signature: bad",
    )
    assert repo.last_good_sync_time == 10 and repo.validators == good
    assert (repo.packages, repo.bytes) == (1, 101)
    assert state.wanted("r") == {f"{1:064x}"}
    state.clear_validators(["r"])
    assert state.repository("r").validators == {}
    assert state.repository("never").last_sync_ok is None
    state.close()


def test_grace_period_starts_when_nobody_wants_a_file(tmp_path: Path) -> None:
    state = State(tmp_path / "s.sqlite3")
    one, two = f"{1:064x}", f"{2:064x}"
    state.put_file(_held(tmp_path, 1), when=0)
    state.put_file(_held(tmp_path, 2), when=0)
    assert state.file(one) is not None and state.file(one).missing_since == 0  # type: ignore[union-attr]
    state.record_sync("a", 5, ok=True, wanted=[one, two])
    state.record_sync("b", 5, ok=True, wanted=[two])
    assert all(f.missing_since is None and f.was_wanted for f in state.files())
    state.record_sync("a", 100, ok=True, wanted=[])
    assert state.file(one).missing_since == 100  # type: ignore[union-attr]
    assert state.file(two).missing_since is None  # type: ignore[union-attr]  # b wants it
    assert state.expired(now=100 + 59, grace_period=60) == []
    assert [f.sha256 for f in state.expired(now=160, grace_period=60)] == [one]
    state.record_sync("a", 150, ok=True, wanted=[one])  # back before it expired
    assert state.expired(now=10_000, grace_period=60) == []
    state.forget_repositories_except(["b"], when=200)
    assert state.file(one).missing_since == 200  # type: ignore[union-attr]
    assert state.wanted_by(two) == ["b"]
    state.close()


def test_files_round_trip_with_resume_data(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite3"
    state = State(path)
    held = _held(tmp_path, 7, web_seeds=("http://w.example/p7.deb",), owned=False)
    state.put_file(held, when=1)
    state.set_resume(held.sha256, b"d6:resumee")
    state.close()
    reopened = State(path)
    again = reopened.file(held.sha256)
    reopened.close()
    assert again is not None
    assert again.resume == b"d6:resumee" and again.web_seeds == held.web_seeds
    assert again.upstream_urls == held.upstream_urls and again.owned is False
    assert again.path == held.path


_WRITER = """
import sys
from pathlib import Path
from aptmesh_seeder.state import State
from tests.seeder.test_state import _held
state = State(Path(sys.argv[1]))
n = 0
while True:
    n += 1
    state.put_file(_held(Path("/x"), n), when=n)
    state.record_sync("r", n, ok=True, wanted=[f"{n:064x}"], total_bytes=n)
    if n == 20:
        print("running", flush=True)
"""


def test_kill_9_leaves_a_consistent_state(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite3"
    with subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(path)],
        stdout=subprocess.PIPE,
        cwd=Path(__file__).parents[2],
    ) as child:
        try:
            assert child.stdout is not None
            # 20 syncs are committed; the writer is somewhere inside the next ones.
            assert child.stdout.readline() == b"running\n"
        finally:
            os.kill(child.pid, signal.SIGKILL)
            child.wait()
    state = State(path)
    repo = state.repository("r")
    # Whatever the last committed sync was, the wanted set and the files agree with it.
    wanted = state.wanted("r")
    assert len(wanted) == 1 and repo.packages == 1
    [sha] = wanted
    held = state.file(sha)
    assert held is not None and held.missing_since is None
    assert repo.bytes == int(sha, 16) and repo.last_sync_time == int(sha, 16)
    others = [f for f in state.files() if f.sha256 != sha]
    assert len(others) >= 19 and all(f.missing_since is not None for f in others)
    state.close()


def test_generations_are_kept_per_repository_and_suite_across_reopening(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite3"
    state = State(path)
    assert state.generation("debian", "stable") is None
    newer = Generation(datetime(2026, 1, 2, tzinfo=UTC), "b" * 64)
    state.set_generation("debian", "stable", Generation(datetime(2026, 1, 1, tzinfo=UTC), "a" * 64))
    state.set_generation("debian", "stable", newer)
    state.set_generation("debian", "stable-updates", Generation(None, "c" * 64))
    state.forget_repositories_except([], 0.0)  # a name that comes back must not go backwards
    state.close()
    reopened = State(path)
    assert reopened.generation("debian", "stable") == newer
    assert reopened.generation("debian", "stable-updates") == Generation(None, "c" * 64)
    assert reopened.generation("other", "stable") is None
    reopened.close()
