"""The status page's history (per-minute buckets, the fallback ring buffer) with an injected
clock, its rendering (escaped, bounded), and the 406 contract beside it."""

from __future__ import annotations

import re

import aiohttp
from prometheus_client import CollectorRegistry, Counter

from aptmesh.debrepo import DebRepo
from aptmesh_edge.app import RunningEdge
from aptmesh_edge.decisions import FallbackReason, SourceKind
from aptmesh_edge.metrics import EdgeMetrics
from aptmesh_edge.status import (
    DAY_MINUTES,
    CounterSampler,
    FallbackExample,
    FallbackLog,
    MinuteHistory,
    StatusView,
    render,
)
from aptmesh_tracker.app import RunningTracker
from tests.edge.conftest import EdgeFactory, fetch_indexes
from tests.edge.test_site import ZONE, site_edges


class Clock:
    def __init__(self, now: float = 1_000_000 * 60.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_minutes_add_up_and_old_ones_drop_out() -> None:
    clock = Clock()
    history = MinuteHistory[SourceKind](DAY_MINUTES, clock)
    history.add(SourceKind.CACHE, 100)
    history.add(SourceKind.CACHE, 50)
    history.add(SourceKind.UPSTREAM, 7)
    history.add(SourceKind.SWARM, 0)  # nothing: no key
    clock.now += 59 * 60
    history.add(SourceKind.CACHE, 1)
    assert history.totals(60) == {SourceKind.CACHE: 151, SourceKind.UPSTREAM: 7}
    clock.now += 60  # the first minute is now 61 minutes old
    assert history.totals(60) == {SourceKind.CACHE: 1}
    assert history.totals(DAY_MINUTES) == {SourceKind.CACHE: 151, SourceKind.UPSTREAM: 7}
    clock.now += DAY_MINUTES * 60
    assert history.totals(DAY_MINUTES) == {}


def test_the_history_is_bounded_in_minutes() -> None:
    clock = Clock()
    history = MinuteHistory[SourceKind](10, clock)
    for _ in range(25):
        history.add(SourceKind.EDGE, 1)
        clock.now += 60
    assert len(history._buckets) == 10
    clock.now -= 60  # back in the last minute added
    assert history.totals(10) == {SourceKind.EDGE: 10}


def test_series_slots_end_with_the_current_minute() -> None:
    clock = Clock()
    history = MinuteHistory[SourceKind](DAY_MINUTES, clock)
    history.add(SourceKind.CACHE, 5)  # minute 0
    clock.now += 31 * 60
    history.add(SourceKind.SWARM, 3)  # minute 31
    slots = history.series(60, 30)
    assert len(slots) == 2
    # Slot 1 holds minutes 2..31, slot 0 minutes -28..1.
    assert slots == [{SourceKind.CACHE: 5}, {SourceKind.SWARM: 3}]
    minutes = history.series(60, 1)
    assert len(minutes) == 60 and minutes[-1] == {SourceKind.SWARM: 3}
    assert minutes[-32] == {SourceKind.CACHE: 5}


def test_the_fallback_ring_keeps_the_newest() -> None:
    clock = Clock()
    log = FallbackLog(3, clock)
    for i in range(5):
        log.add(f"pool/p{i}.deb", FallbackReason.NO_PEERS)
        clock.now += 1
    recent = log.recent()
    assert [e.path for e in recent] == ["pool/p4.deb", "pool/p3.deb", "pool/p2.deb"]
    assert recent[0].at == Clock().now + 4


def test_a_fallback_is_counted_and_kept_once() -> None:
    clock = Clock()
    metrics = EdgeMetrics(clock=clock)
    metrics.fell_back(FallbackReason.SWARM_STALLED, "pool/a.deb")
    value = metrics.registry.get_sample_value(
        "aptmesh_edge_upstream_fallbacks_total", {"reason": "swarm_stalled"}
    )
    assert value == 1
    assert metrics.recent_fallbacks.recent() == [
        FallbackExample(clock.now, "pool/a.deb", FallbackReason.SWARM_STALLED)
    ]


def test_the_sampler_adds_what_a_counter_grew_by() -> None:
    clock = Clock()
    counter = Counter("x_total", "x", ["source"], registry=CollectorRegistry())
    counter.labels(source="cache").inc(1000)  # before the sampler: not in its history
    sampler = CounterSampler(counter, "source", SourceKind, MinuteHistory(60, clock))
    counter.labels(source="cache").inc(10)
    counter.labels(source="upstream").inc(4)
    totals = sampler.sample()
    assert totals[SourceKind.CACHE] == 1010 and totals[SourceKind.SWARM] == 0
    clock.now += 60
    counter.labels(source="cache").inc(1)
    sampler.sample()
    assert sampler.history.totals(1) == {SourceKind.CACHE: 1}
    assert sampler.history.totals(2) == {SourceKind.CACHE: 11, SourceKind.UPSTREAM: 4}


def _view(**changes: object) -> StatusView:
    base: dict[str, object] = dict(
        edge_id="e1",
        zone="z",
        public_url="http://edge:3142",
        upstream_hosts=["deb.example.org"],
        served_total={},
        served_hour={},
        served_day={},
        served_hour_series=[{}] * 60,
        served_day_series=[{}] * 48,
        requests={},
        cache_size=0,
        cache_limit=1,
        cache_entries=0,
        fallbacks_hour={},
        recent_fallbacks=[],
    )
    base.update(changes)
    return StatusView(**base)  # type: ignore[arg-type]


def test_everything_rendered_is_escaped() -> None:
    clock = Clock()
    log = FallbackLog(5, clock)
    log.add('pool/<script>alert("x")</script>.deb', FallbackReason.NO_TORRENT)
    page = render(
        _view(edge_id="<b>e</b>", zone='"z"', recent_fallbacks=log.recent()), clock.now + 1
    )
    assert "<script>" not in page and "<b>e</b>" not in page
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in page
    assert 'http-equiv="refresh"' in page and "<script" not in page.lower()


def test_fallback_examples_older_than_an_hour_are_not_shown() -> None:
    clock = Clock()
    log = FallbackLog(5, clock)
    log.add("pool/old.deb", FallbackReason.NO_PEERS)
    clock.now += 3601
    log.add("pool/new.deb", FallbackReason.SWARM_STALLED)
    page = render(_view(recent_fallbacks=log.recent()), clock.now)
    assert "pool/new.deb" in page and "pool/old.deb" not in page


async def test_browsers_get_the_page_and_probes_the_406(
    edge: RunningEdge, client: aiohttp.ClientSession
) -> None:
    for accept in (None, "*/*", "text/plain"):
        headers = {"Accept": accept} if accept else {}
        async with client.get(f"{edge.http_url}/", headers=headers) as resp:
            assert (resp.status, resp.reason) == (406, "Usage Information"), accept
    browser = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
    async with client.get(f"{edge.http_url}/", headers={"Accept": browser}) as resp:
        assert resp.status == 200
        page = await resp.text()
    assert re.search(r'<span id="edge-id">[^<]+</span>', page)
    async with client.get(f"{edge.http_url}/_aptmesh/status") as resp:
        assert resp.status == 200 and resp.content_type == "text/html"
    async with client.get(f"{edge.http_url}/acng-report.html") as resp:
        assert resp.status == 406


async def test_the_page_lists_the_zones_edges_and_the_swarm(
    make_edge: EdgeFactory,
    tracker: RunningTracker,
    debrepo: DebRepo,
    client: aiohttp.ClientSession,
) -> None:
    pair = await site_edges(make_edge, tracker, 2)
    await fetch_indexes(client, pair[0], debrepo)
    async with client.get(f"{pair[0].http_url}/_aptmesh/status") as resp:
        page = await resp.text()
    for edge in pair:
        assert f"<td>{edge.edge_id()}</td><td>{ZONE}</td>" in page
    assert "live (registered)" in page and "this edge" in page
    assert pair[0].swarm_side is not None
    torrents = pair[0].swarm_side.swarm.stats().torrents
    assert f'id="swarm-torrents">{torrents}<' in page
    assert 'id="swarm-peers">' in page and 'id="generations"' in page
    assert f'Acquire::mesh::Zone "{ZONE}";' in page
