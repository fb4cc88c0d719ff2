"""Services run on uvloop when it is installed, on asyncio's own loop otherwise."""

from __future__ import annotations

import asyncio
import sys

import pytest
import uvloop

from aptmesh import lifecycle


def _loop_of_run() -> asyncio.AbstractEventLoop:
    seen: list[asyncio.AbstractEventLoop] = []

    async def main(stop: asyncio.Event) -> None:
        seen.append(asyncio.get_running_loop())

    assert lifecycle.run(main) == 0
    return seen[0]


def test_services_run_on_uvloop() -> None:
    assert isinstance(_loop_of_run(), uvloop.Loop)


def test_standard_loop_when_uvloop_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # import raises ImportError
    assert lifecycle.loop_factory() is None
    loop = _loop_of_run()
    assert not isinstance(loop, uvloop.Loop)
    assert isinstance(loop, asyncio.BaseEventLoop)
