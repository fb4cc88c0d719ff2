"""`aptmesh seeder` from the command line: --once, exit codes, config errors, progress."""

from __future__ import annotations

import asyncio
import io
import json
import os
import pty
import signal
import sys
from pathlib import Path

import aiohttp
import pytest

from aptmesh.debrepo import DebRepo
from aptmesh_seeder.main import main
from aptmesh_tracker.app import RunningTracker
from aptmesh_tracker.client import TrackerClient
from tests.fixtures.tracker import TOKEN

from .conftest import StartSeeder, repo_spec, seeder_config

APTMESH = str(Path(sys.executable).with_name("aptmesh"))


def _env(tmp_path: Path, debrepo: DebRepo, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("APTMESH_")}
    env.update(
        APTMESH_SEEDER_REPOSITORIES=repo_spec(debrepo),
        APTMESH_SEEDER_KEYRING=str(debrepo.keyring),
        APTMESH_SEEDER_DATA_DIR=str(tmp_path / "seeder"),
    )
    env.update(extra)
    return env


async def _run(*args: str, env: dict[str, str], stderr: int | None = None) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        APTMESH,
        "seeder",
        *args,
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE if stderr is None else stderr,
    )
    async with asyncio.timeout(60):
        _, err = await proc.communicate()
    return proc.returncode or 0, (err or b"").decode()


async def test_once_syncs_publishes_and_exits_0_and_a_later_seeder_needs_nothing_more(
    tmp_path: Path, debrepo: DebRepo, tracker: RunningTracker, start_seeder: StartSeeder
) -> None:
    env = _env(
        tmp_path,
        debrepo,
        APTMESH_SEEDER_TRACKER_GRPC=tracker.grpc_target,
        APTMESH_SEEDER_PUBLISH_TOKEN=TOKEN,
    )
    code, err = await _run("--once", env=env)
    assert code == 0, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert any('"sync_planned"' in line for line in lines)  # plain JSON log lines, no bar
    assert "\r" not in err
    large = [p for p in debrepo.packages if p.swarmed]
    async with TrackerClient(tracker.grpc_target) as client:
        found = await client.get_many([p.sha256 for p in debrepo.packages])
    assert set(found.records) == {p.sha256 for p in large}

    # The service started later on the same data directory seeds at once, fetching nothing.
    debrepo.server.reset_counters()
    seeder = await start_seeder(seeder_config(tmp_path, debrepo, tracker))
    assert seeder.seeder.seeding.seeding() == {p.sha256 for p in large}
    [result] = await seeder.box.sync()
    assert result.result == "unchanged" and result.hashed_bytes == 0
    assert debrepo.server.bytes_served() == 0


async def test_once_exits_1_when_a_sync_fails(tmp_path: Path, debrepo: DebRepo) -> None:
    debrepo.tamper(debrepo.INRELEASE)
    code, err = await _run("--once", env=_env(tmp_path, debrepo))
    assert code == 1
    assert '"kind": "signature"' in err


async def test_once_draws_a_progress_bar_on_a_terminal(tmp_path: Path, debrepo: DebRepo) -> None:
    leader, follower = pty.openpty()
    try:
        code, _ = await _run(
            "--once", "--log-level", "warning", env=_env(tmp_path, debrepo), stderr=follower
        )
        os.close(follower)
        follower = -1
        chunks = []
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # EIO: the terminal's other side is closed and drained
                break
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(leader)
        if follower >= 0:
            os.close(follower)
    shown = b"".join(chunks).decode()
    assert code == 0
    assert "\r" in shown and "2/2 files" in shown and "[" + "#" * 30 + "]" in shown


def test_a_config_error_is_one_line_and_exit_2(tmp_path: Path) -> None:
    err = io.StringIO()
    code = main(["--repositories", "nonsense"], environ={}, stderr=err)
    assert code == 2
    lines = err.getvalue().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("aptmesh seeder: bad value for --repositories")
    err = io.StringIO()
    assert main([], environ={"APTMESH_SEEDER_COLOUR": "blue"}, stderr=err) == 2
    assert "APTMESH_SEEDER_COLOUR" in err.getvalue()
    err = io.StringIO()
    assert main([], environ={}, stderr=err) == 2
    assert "no repositories configured" in err.getvalue()
    err = io.StringIO()
    spec = f"d=http://127.0.0.1:9/debian;suites=s;keyring={tmp_path / 'missing.gpg'}"
    assert main(["--repositories", spec], environ={}, stderr=err) == 2
    assert "missing.gpg" in err.getvalue() and "is not a file" in err.getvalue()


def test_print_config_shows_the_effective_configuration(
    capsys: pytest.CaptureFixture[str],
) -> None:
    env = {"APTMESH_SEEDER_PUBLISH_TOKEN": "s3cret", "APTMESH_SEEDER_POLL_INTERVAL": "60"}
    assert main(["--print-config", "--budget-bytes", "1GiB"], environ=env) == 0
    out = capsys.readouterr().out
    assert "APTMESH_SEEDER_POLL_INTERVAL=60.0" in out
    assert "APTMESH_SEEDER_BUDGET_BYTES=1073741824" in out
    assert "APTMESH_SEEDER_PUBLISH_TOKEN=***" in out and "s3cret" not in out


async def test_the_service_runs_until_sigterm(tmp_path: Path, debrepo: DebRepo) -> None:
    env = _env(
        tmp_path,
        debrepo,
        APTMESH_SEEDER_REPOSITORIES=f"mirror={debrepo.root};suites={debrepo.suite}",
        APTMESH_SEEDER_GRPC_BIND="127.0.0.1:0",
        APTMESH_SEEDER_HTTP_HOST="127.0.0.1",
        APTMESH_SEEDER_HTTP_PORT="0",
        APTMESH_SEEDER_LISTEN_HOST="127.0.0.1",
        APTMESH_SEEDER_LISTEN_PORT="0",
    )
    proc = await asyncio.create_subprocess_exec(
        APTMESH,
        "seeder",
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stderr is not None
    events: list[dict[str, object]] = []
    try:
        async with asyncio.timeout(30):
            while not any(e.get("event") == "sync_finished" for e in events):
                line = await proc.stderr.readline()
                assert line, "the seeder exited early"
                events.append(json.loads(line))
        started = next(e for e in events if e.get("event") == "seeder_started")
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"{started['http']}/healthz") as response,
        ):
            assert response.status == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(30):
            rest = await proc.stderr.read()
            code = await proc.wait()
    assert code == 0, rest.decode()
    assert b"seeder_stopped" in rest
