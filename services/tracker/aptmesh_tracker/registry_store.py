"""The edge registry: its rules written once, over a lease table that each backend provides.

Theory of operation. A backend stores leases and nothing else: `LeaseTable`
(memory, SQLite, PostgreSQL; `tests/tracker/test_registry_store.py` runs one
suite against every backend through `Registry`). `Registry` holds every rule:
edges and seed boxes share one namespace of ids (a registration replaces any
other with its id, of either kind); leases end on the injected wall clock and
an ended one is never listed; seed boxes keep leases like edges, but
`live_edges` and `edge_count` leave them out, and they count only in
`seed_upload_capacity()`; the caller's zone is listed first.

Replicas that share a table see each other's registrations at once in
`live_edges` and `seed_upload_capacity`, which read the table. `edge_count`
(a gauge) and `is_registered_address` (asked on every announce) are read from
the event loop, so they answer from the view of the table that the last read
left in memory: they never block, and lag another replica's registrations by
at most one `refresh()` (the app's store refresh interval).

Threads: as for the index (`index_store`): the methods that read or write the
table run in a store thread; `edge_count`, `is_registered_address` and
`last_site` do no I/O and may run anywhere.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from typing import Protocol

from aptmesh_tracker.records import Edge, Site

Clock = Callable[[], float]


class LeaseTable(Protocol):
    """Leases as a backend keeps them; the rules are `Registry`'s."""

    def put(self, edge: Edge, expires: float) -> None:
        """Stores or replaces the lease of `edge.id`."""
        ...

    def live(self, now: float) -> list[tuple[Edge, float]]:
        """Every lease (edge or seed box) that ends after `now`, with its end."""
        ...

    def delete_ended(self, now: float) -> int:
        """Deletes the leases ended by `now`; returns how many."""
        ...

    def close(self) -> None: ...


def order_edges(edges: Iterable[Edge], zone: str) -> list[Edge]:
    """The caller's zone first, then the others by zone; by id within a zone."""
    return sorted(edges, key=lambda e: (e.zone != zone, e.zone, e.id))


def summed_uplink(capacities: Iterable[int]) -> int:
    """The uplink of seed boxes together: the sum of theirs, but 0 (unknown) when there is
    none or any one's is unknown, since a sum missing a box would understate the site."""
    total = 0
    for capacity in capacities:
        if capacity <= 0:
            return 0
        total += capacity
    return total


def _site(edges: Iterable[Edge], zone: str) -> Site:
    """The one rule of what is listed: edges (never seed boxes) in zone order, and the
    seed boxes only as their summed uplink."""
    every = list(edges)
    return Site(
        order_edges((e for e in every if not e.seed_box), zone),
        summed_uplink(e.upload_capacity for e in every if e.seed_box),
    )


class Registry:
    """The registry's rules over one lease table; owns the in-memory view `edge_count` reads."""

    def __init__(self, table: LeaseTable, clock: Clock = time.time) -> None:
        """Reads the table's live leases into the view at once: a restarted tracker knows its
        registered addresses (announce priority) before the first maintenance sweep."""
        self._table = table
        self._clock = clock
        self._view: dict[str, tuple[Edge, float]] = {}
        self._addresses: dict[str, float] = {}  # registered IP -> when its last lease ends
        self._lock = threading.Lock()  # store threads replace the view one at a time
        self._read()

    def _set_view(self, view: dict[str, tuple[Edge, float]]) -> None:
        addresses: dict[str, float] = {}
        for edge, expires in view.values():
            if edge.address:
                addresses[edge.address] = max(expires, addresses.get(edge.address, 0.0))
        self._view, self._addresses = view, addresses  # each one atomic for readers

    def _read_leases(self) -> list[tuple[Edge, float]]:
        leases = self._table.live(self._clock())
        with self._lock:
            self._set_view({edge.id: (edge, expires) for edge, expires in leases})
        return leases

    def _read(self) -> list[Edge]:
        return [edge for edge, _ in self._read_leases()]

    def register(self, edge: Edge, lease_seconds: float) -> float:
        """Registers or renews an edge or seed box; returns its lease's end (clock time)."""
        expires = self._clock() + lease_seconds
        self._table.put(edge, expires)
        with self._lock:
            self._set_view({**self._view, edge.id: (edge, expires)})
        return expires

    def refresh(self) -> None:
        """Reads the table into the view (another replica's registrations)."""
        self._read()

    def is_registered_address(self, ip: str) -> bool:
        """True while a live registration (edge or seed box) came from `ip`, in the view."""
        return self._addresses.get(ip, 0.0) > self._clock()

    def live_edges(self, zone: str) -> list[Edge]:
        """Edges (never seed boxes) whose lease has not ended, those in `zone` first."""
        return self.site(zone).edges

    def seed_upload_capacity(self) -> int:
        """The live seed boxes' summed uplink (`summed_uplink`)."""
        return self.site("").seed_upload_capacity

    def site(self, zone: str) -> Site:
        """What ListEdges answers, from one read of the table."""
        return _site(self._read(), zone)

    def last_site(self, zone: str) -> Site:
        """The site as the last read of the table saw it, ended leases included (no I/O):
        what the registry can still answer while its table is unreachable, since nobody
        can renew then; a client falls back past an edge that is gone."""
        return _site((edge for edge, _ in list(self._view.values())), zone)

    def leases(self) -> list[tuple[Edge, float]]:
        """Every live registration (edges and seed boxes) with its lease's end, by zone and
        id (reads the table)."""
        return sorted(self._read_leases(), key=lambda lease: (lease[0].zone, lease[0].id))

    def view_edges(self) -> list[Edge]:
        """The edges (never seed boxes) with a live lease in the last view (no I/O)."""
        now = self._clock()
        return [e for e, exp in list(self._view.values()) if exp > now and not e.seed_box]

    def edge_count(self) -> int:
        """How many edges (never seed boxes) have a live lease, in the last view (no I/O)."""
        now = self._clock()
        return sum(1 for e, exp in list(self._view.values()) if exp > now and not e.seed_box)

    def expire(self) -> int:
        """Deletes edges and seed boxes whose lease ended; returns how many."""
        gone = self._table.delete_ended(self._clock())
        self._read()
        return gone

    def close(self) -> None:
        self._table.close()


class MemoryLeases:
    """The in-memory lease table: nothing survives the process."""

    def __init__(self) -> None:
        self._leases: dict[str, tuple[Edge, float]] = {}

    def put(self, edge: Edge, expires: float) -> None:
        self._leases[edge.id] = (edge, expires)

    def live(self, now: float) -> list[tuple[Edge, float]]:
        return [lease for lease in self._leases.values() if lease[1] > now]

    def delete_ended(self, now: float) -> int:
        gone = [edge_id for edge_id, (_, exp) in self._leases.items() if exp <= now]
        for edge_id in gone:
            del self._leases[edge_id]
        return len(gone)

    def close(self) -> None:
        pass
