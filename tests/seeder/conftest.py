"""Fixtures for the seeder's tests: a fake clock, a real tracker, seeders on loopback."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from aptmesh.debrepo import DebRepo
from aptmesh.testing import FakeClock
from aptmesh_seeder import app
from aptmesh_seeder.config import SeederConfig
from aptmesh_seeder.publish import Publisher
from aptmesh_tracker import app as tracker_app
from tests.fixtures.tracker import TOKEN


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def repo_spec(repo: DebRepo, name: str = "test", **extra: str) -> str:
    """The seeder's spec for `repo`: its first suite unless `suites=` is given."""
    extra = {"suites": repo.suite, **extra}
    parts = [f"{name}={repo.base_url}"]
    parts += [f"{key}={value}" for key, value in extra.items()]
    return ";".join(parts)


def seeder_config(
    tmp_path: Path,
    repo: DebRepo,
    tracker: tracker_app.RunningTracker | None,
    **overrides: object,
) -> SeederConfig:
    values: dict[str, object] = {
        "repositories": (repo_spec(repo),),
        "keyring": repo.keyring,
        "data_dir": tmp_path / "seeder",
        "grpc_bind": "127.0.0.1:0",
        "http_host": "127.0.0.1",
        "http_port": 0,
        "listen_host": "127.0.0.1",
        "listen_port": 0,
        "grace_period": 3600.0,
        "log_format": "console",
    }
    if tracker is not None:
        values["tracker_grpc"] = tracker.grpc_target
        values["tracker_announce"] = (tracker.announce_url,)
        values["publish_token"] = TOKEN
    values.update(overrides)
    return SeederConfig(**values)  # type: ignore[arg-type]


StartSeeder = Callable[..., Awaitable[app.RunningSeeder]]


@pytest.fixture
async def start_seeder(clock: FakeClock) -> AsyncIterator[StartSeeder]:
    """Starts seeders (not polling: tests call `box.sync()`); stops those still running."""
    running: list[app.RunningSeeder] = []

    async def start(
        config: SeederConfig, *, publisher: Publisher | None = None
    ) -> app.RunningSeeder:
        seeder = await app.start(config, clock=clock, publisher=publisher, poll=False)
        running.append(seeder)
        return seeder

    yield start
    for seeder in running:
        if not seeder.stop_event.is_set():
            # Closing a session blocks the loop while it sends "stopped" announces, and the
            # in-process tracker shares that loop: do not wait the default 5 s for it.
            if seeder.seeder.swarm is not None:
                seeder.seeder.swarm.apply(stop_tracker_timeout=0)
            await seeder.stop(0)
