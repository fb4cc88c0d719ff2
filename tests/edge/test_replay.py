"""Metadata never goes backwards (the drills' regression tests): a validly signed older
InRelease (a replay, a mirror behind) is refused and counted, the newer copy served instead,
and a future Last-Modified on the replay cannot keep the edge behind once the mirror is fixed.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import aiohttp

from aptmesh.debrepo import DebRepo, Misbehaviour

from .conftest import EdgeFactory, get, metric, prefix_url


async def test_an_older_inrelease_is_refused_and_the_newer_one_served(
    make_edge: EdgeFactory, client: aiohttp.ClientSession, debrepo: DebRepo
) -> None:
    debrepo.resign(date=datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1))
    old = debrepo.read(debrepo.INRELEASE)
    edge = await make_edge(index_freeze_seconds=0.0)
    url = prefix_url(edge, debrepo.INRELEASE)
    assert (await get(client, url))[1] == old
    debrepo.resign()
    new = debrepo.read(debrepo.INRELEASE)
    assert (await get(client, url))[1] == new

    future = time.time() + 86400
    debrepo.server.misbehave(debrepo.INRELEASE, Misbehaviour(body=old, last_modified=future))
    status, body, _ = await get(client, url)
    assert (status, body) == (200, new)
    assert metric(edge, "aptmesh_verification_failures_total", service="edge", kind="replay") == 1
    debrepo.server.behave()
    assert (await get(client, url))[1] == new
