"""Each service's memory limit in deploy/k8s covers what its configured bounds let it hold.

For every rendered kustomization the test loads each container's configuration
the way the image would (its environment) and adds up a budget: a measured
baseline at rest, plus every term an outsider or the workload can grow, each
bounded by that configuration (peer limits, gRPC calls in flight x the largest
request, memory caches...). Raising a bound past the limit without raising the
limit fails here, with the budget's terms in the message. The derivation is
written out in deploy/README.md ("Memory limits and the bounds").

Bytes per peer are measured here, on the tracker's real in-memory peer store,
so a heavier peer entry moves the budget with it.
"""

from __future__ import annotations

import dataclasses
import functools
import re
import tracemalloc
from pathlib import Path
from typing import Any

import pytest

from aptmesh import grpcserver
from aptmesh_edge import grpcapi
from aptmesh_edge.config import memory_bound
from aptmesh_tracker import index_service
from aptmesh_tracker.peerstore import MemoryPeerStore, PeerLimits
from aptmesh_tracker.wire import Peer
from tests.deploy.manifests import containers, render
from tests.deploy.test_k8s import APPLIED, load_config

MiB = 1024**2
# Measured resident size at rest, started with the manifests' configuration and no load
# (README "Security": the tracker ~60 MB; issue 13: the edge 85 MB). The seeder's: a Python
# process with a libtorrent session is 40 MB before its own imports (grpc, aiohttp, the
# Debian parsers); 100 MiB is that with room.
BASELINE = {"tracker": 64 * MiB, "seeder": 100 * MiB}  # the edge's is in memory_bound
# CPython's allocator holds more than tracemalloc counts (arenas, fragmentation).
ALLOCATOR_OVERHEAD = 1.25
# The seeder: a full Debian archive puts ~8,000 files over the swarm threshold. One seeded
# torrent of a typical package costs libtorrent ~12.7 KB (measured: 400 torrents of 1 MiB
# files in one session), and the parsed Packages index of ~63,000 stanzas ~2 KiB each
# (an estimate, the largest term not yet measured).
SEEDED_TORRENTS = 8_000
BYTES_PER_TORRENT = 13_000
INDEX_STANZAS = 63_000
BYTES_PER_STANZA = 2 * 1024
# Kubernetes requires the limit to exceed the budget by this share at least: GC timing,
# transient copies while a response is encoded.
HEADROOM = 1.10

_QUANTITY = re.compile(r"^(\d+)(Ki|Mi|Gi|Ti|k|M|G|T)?$")
_UNITS = {None: 1, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}
_UNITS.update({"Ki": 1024, "Mi": 1024**2, "Gi": 1024**3, "Ti": 1024**4})


def quantity(text: str) -> int:
    """Bytes of a Kubernetes memory quantity such as `512Mi`."""
    match = _QUANTITY.match(str(text))
    assert match, f"memory quantity {text!r} is not one this test reads"
    return int(match.group(1)) * _UNITS[match.group(2)]


@functools.cache
def bytes_per_peer(count: int = 5_000) -> int:
    """Allocated bytes per anonymous peer in the tracker's in-memory store, with its peer_id
    and address, spread over swarms and addresses as a flood would spread them."""
    store = MemoryPeerStore(
        ttl=2700, limits=PeerLimits(per_address_swarm=8, per_address=1000, per_swarm=2000)
    )
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(count):
            peer = Peer(
                i.to_bytes(20, "big"), bytes([10, i >> 16 & 255, i >> 8 & 255, i & 255, 26, 225])
            )
            store.announce(
                (i % 500).to_bytes(20, "big"), peer, seeder=False, event="started", numwant=0
            )
        allocated = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert store.peer_counts()[1] == count
    return int(allocated / count * ALLOCATOR_OVERHEAD)


def grpc_in_flight(largest_request: int) -> int:
    """Every call the server admits at once holding its largest request (and a parsed copy)."""
    return grpcserver.MAX_CONCURRENT_RPCS * 2 * max(largest_request, grpcserver.DEFAULT_MAX_REQUEST)


def budget(service: str, config: Any) -> dict[str, int]:
    """The terms of a service's memory need under `config`, in bytes."""
    terms = {"baseline at rest": BASELINE[service]} if service in BASELINE else {}
    if service == "tracker":
        terms["peers: max_peers x bytes per peer"] = config.max_peers * bytes_per_peer()
        largest = max(index_service.request_bounds(config.max_batch).values())
        terms["gRPC in flight x largest request"] = grpc_in_flight(largest)
    elif service == "seeder":
        terms["seeded torrents"] = SEEDED_TORRENTS * BYTES_PER_TORRENT
        terms["parsed Packages index"] = INDEX_STANZAS * BYTES_PER_STANZA
        terms["gRPC in flight x largest request"] = grpc_in_flight(0)
    elif service == "edge":
        # The HTTP side's bounds and the baseline are the edge's own sum (one source).
        terms["HTTP bounds and baseline (aptmesh_edge.config.memory_bound)"] = memory_bound(config)
        # a file being verified whole before its first byte (at most memory_file_max_bytes),
        # one per gRPC call in flight
        terms["files verified in memory"] = (
            grpcserver.MAX_CONCURRENT_RPCS * config.memory_file_max_bytes
        )
        largest = max(grpcapi.REQUEST_BOUNDS.values())
        terms["gRPC in flight x largest request"] = grpc_in_flight(largest)
    return terms


@pytest.mark.parametrize("path", APPLIED, ids=str)
def test_memory_limits_cover_the_configured_bounds(path: Path) -> None:
    for container in containers(render(path)):
        config = load_config(container)
        terms = budget(container.service, config)
        need = int(sum(terms.values()) * HEADROOM)
        limit = quantity(container.spec["resources"]["limits"]["memory"])
        shown = "\n".join(f"  {name}: {value / MiB:.0f} MiB" for name, value in terms.items())
        assert need <= limit, (
            f"{path}: {container.service} may need {need / MiB:.0f} MiB "
            f"(the terms below + {HEADROOM - 1:.0%}) but its memory limit is "
            f"{limit / MiB:.0f} MiB; raise the limit with the bound:\n{shown}"
        )


def test_a_bound_raised_past_the_limit_fails() -> None:
    """The check can fail: ten times the default peer bound does not fit the tracker's limit."""
    container = next(c for c in containers(render(APPLIED[0])) if c.service == "tracker")
    config = load_config(container)
    raised = budget("tracker", dataclasses.replace(config, max_peers=2_000_000))
    limit = quantity(container.spec["resources"]["limits"]["memory"])
    assert sum(raised.values()) > limit


def test_a_peer_costs_what_the_readme_says() -> None:
    """README and the max_peers help say ~550 bytes a peer; the measurement agrees (±30 %)."""
    assert 385 <= bytes_per_peer() / ALLOCATOR_OVERHEAD <= 715
