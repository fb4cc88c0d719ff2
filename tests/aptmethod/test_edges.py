"""Edge discovery: the pure decisions, the cache file, and the probes on loopback."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from aptmesh.testing import free_port
from aptmesh_apt_method.config import MeshConfig
from aptmesh_apt_method.edges import (
    CacheEntry,
    Edge,
    ListingError,
    cache_fresh,
    decode_cache,
    discover,
    encode_cache,
    fetch_listing,
    merge,
    parse_listing,
    probe,
    rank,
    read_cache,
    write_cache,
)
from tests.aptmethod.servers import Site, serve

A, B, C = "http://127.0.0.2:3142", "http://127.0.0.3:3142", "http://127.0.0.4:3142"


def test_parse_listing_takes_the_documented_shape() -> None:
    body = json.dumps(
        {
            "edges": [
                {"id": "edge-a", "url": "http://127.0.0.1:3142", "zone": "zone-a"},
                {"id": "edge-b", "url": "http://127.0.0.2:3142/", "zone": ""},
                {"id": "dup", "url": "http://127.0.0.1:3142"},
                {"id": "bad", "url": "http://evil\n201 URI Done"},
                {"id": "nourl"},
                "junk",
            ]
        }
    ).encode()
    assert parse_listing(body) == [
        Edge("http://127.0.0.1:3142", "edge-a", "zone-a"),
        Edge("http://127.0.0.2:3142", "edge-b", None),
    ]


@pytest.mark.parametrize("body", [b"not json", b"[]", b'{"edges": {}}', b"\xff"])
def test_parse_listing_rejects_other_documents(body: bytes) -> None:
    with pytest.raises(ListingError):
        parse_listing(body)


def test_merge_keeps_seed_order_and_learns_zones() -> None:
    merged = merge([A, B], [Edge(C, "c", "z2"), Edge(B, "b", "z1")])
    assert merged == [Edge(A), Edge(B, "b", "z1"), Edge(C, "c", "z2")]


def test_rank_prefers_zone_then_round_trip_and_drops_dead() -> None:
    edges = [Edge(A, zone="z1"), Edge(B, zone="z2"), Edge(C, zone="z2")]
    rtts: dict[str, float | None] = {A: 0.001, B: 0.050, C: 0.020}
    assert rank(edges, rtts, None) == [edges[0], edges[2], edges[1]]
    assert rank(edges, rtts, "z2") == [edges[2], edges[1], edges[0]]
    assert rank(edges, {**rtts, C: None}, "z2") == [edges[1], edges[0]]
    assert rank(edges, {}, None) == []


def test_cache_round_trip_and_freshness() -> None:
    entry = CacheEntry("k", 1000.0, (Edge(A, "a", "z"), Edge(B)))
    assert decode_cache(encode_cache(entry)) == entry
    assert cache_fresh(entry, "k", 1059.0, 60)
    assert not cache_fresh(entry, "k", 1060.0, 60)
    assert not cache_fresh(entry, "other", 1001.0, 60)
    assert not cache_fresh(entry, "k", 900.0, 60)  # clock went back


@pytest.mark.parametrize(
    "text",
    [
        "",
        "{",
        "[]",
        '{"version": 2}',
        '{"version": 1, "key": "k", "created": 1, "edges": [{"url": 3}]}',
    ],
)
def test_corrupt_cache_reads_as_none(text: str) -> None:
    assert decode_cache(text) is None


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


class FakeNet:
    """Probes and listings from tables, counting calls."""

    def __init__(self, rtts: dict[str, float | None], listing: list[Edge] | None = None) -> None:
        self.rtts = rtts
        self.listing = listing
        self.probed: list[str] = []
        self.listed: list[str] = []

    def probe(self, url: str, timeout: float) -> float | None:
        self.probed.append(url)
        return self.rtts.get(url)

    def lister(self, url: str, timeout: float) -> list[Edge]:
        self.listed.append(url)
        if self.listing is None:
            raise ListingError("no listing")
        return self.listing


def run(config: MeshConfig, net: FakeNet, clock: Clock) -> list[str]:
    edges = discover(config, now=clock, prober=net.probe, lister=net.lister)
    return [e.url for e in edges]


def test_discover_uses_listing_and_caches_the_choice(tmp_path: Path) -> None:
    cache = tmp_path / "mesh-edges.json"
    config = MeshConfig(edges=(A,), zone="z2", cache_file=str(cache))
    net = FakeNet({A: 0.001, B: 0.030, C: None}, [Edge(A, "a", "z1"), Edge(B, "b", "z2"), Edge(C)])
    clock = Clock()
    assert run(config, net, clock) == [B, A]
    assert sorted(net.probed) == [A, B, C]
    assert net.listed == [A]
    assert json.loads(cache.read_text())["edges"][0] == {"url": B, "id": "b", "zone": "z2"}

    net.probed.clear()
    clock.now += 59
    assert run(config, net, clock) == [B, A]
    assert net.probed == []  # answered from the cache file

    clock.now += 2
    assert run(config, net, clock) == [B, A]
    assert sorted(net.probed) == [A, B, C]


def test_discover_with_every_edge_dead(tmp_path: Path) -> None:
    net = FakeNet({A: None, B: None}, [Edge(C)])
    config = MeshConfig(edges=(A, B), cache_file=str(tmp_path / "c.json"))
    assert run(config, net, Clock()) == []
    assert net.listed == []  # a dead edge is not asked for the list


def test_discover_without_edges_does_nothing() -> None:
    net = FakeNet({})
    assert run(MeshConfig(), net, Clock()) == []
    assert net.probed == []


def test_corrupt_cache_is_replaced(tmp_path: Path) -> None:
    cache = tmp_path / "mesh-edges.json"
    cache.write_bytes(b"\x00garbage{")
    net = FakeNet({A: 0.01})
    assert run(MeshConfig(edges=(A,), cache_file=str(cache)), net, Clock()) == [A]
    assert read_cache(str(cache)) is not None


def test_unwritable_cache_is_tolerated(tmp_path: Path) -> None:
    cache = tmp_path / "missing-dir" / "mesh-edges.json"
    net = FakeNet({A: 0.01})
    logs: list[str] = []
    edges = discover(
        MeshConfig(edges=(A,), cache_file=str(cache)),
        now=Clock(),
        prober=net.probe,
        lister=net.lister,
        log=logs.append,
    )
    assert [e.url for e in edges] == [A]
    assert any("not caching" in line for line in logs)


def test_write_cache_is_atomic_and_leaves_no_temporary_files(tmp_path: Path) -> None:
    path = tmp_path / "mesh-edges.json"
    write_cache(str(path), CacheEntry("k", 1.0, (Edge(A),)))
    write_cache(str(path), CacheEntry("k", 2.0, (Edge(B),)))
    assert os.listdir(tmp_path) == ["mesh-edges.json"]
    assert read_cache(str(path)) == CacheEntry("k", 2.0, (Edge(B),))


def test_probe_and_listing_over_http() -> None:
    site = Site(edges=[{"id": "edge-a", "url": "http://127.0.0.2:3142", "zone": "zone-a"}])
    with serve(site, "127.0.0.2") as edge:
        rtt = probe(edge.url, 0.5)
        assert rtt is not None and rtt < 0.5
        assert fetch_listing(edge.url, 0.5) == [Edge("http://127.0.0.2:3142", "edge-a", "zone-a")]
        site.healthy = False
        assert probe(edge.url, 0.5) is None
        site.edges = None
        with pytest.raises(ListingError):
            fetch_listing(edge.url, 0.5)


def test_dead_edge_is_skipped_quickly() -> None:
    url = f"http://127.0.0.5:{free_port('127.0.0.5')}"
    start = time.monotonic()
    assert probe(url, 0.5) is None
    assert time.monotonic() - start < 0.5
