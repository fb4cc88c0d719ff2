"""Storage of the index and the edge registry: the interface, SQLite, and an in-memory fake.

Theory of operation. `Store` is the contract (`tests/tracker/test_store.py`
runs one suite against every implementation). Records are keyed by the
file's SHA-256; `put` replaces a record whose torrent changed and merges
upstream URLs into one whose torrent is the same. The set of 20-byte
infohashes the announce path may track (v1 and truncated v2 of every record)
is kept in memory, mapped to its record's SHA-256 (which pairs a hybrid
torrent's two swarms), so the hot path never touches the database. Edges carry a
lease expiry on the injected wall clock; expired ones are never listed and
`expire_edges()` deletes them. Seed boxes register as edges with `seed_box`
set and keep leases the same way, but `live_edges` and `edge_count` leave
them out: they count only in `seed_upload_capacity()`.

Threads: the app calls every method from one worker thread (the single
writer) so SQLite's fsyncs never block the event loop. `is_tracked`,
`torrent_of`, `record_count`, `edge_count` and `leases` only read in-memory
values that are safe to read from the event loop while that thread writes
(atomic under the GIL).

Durability (SQLite): WAL with synchronous=FULL. WAL alone survives a killed
process at any synchronous level (committed frames are in the WAL file, which
the next open replays); FULL also fsyncs the WAL at every commit, so an
acknowledged publish survives power loss too. Commits are one row each and
rare next to announces, so the fsync is affordable.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Protocol

from aptmesh_tracker.records import Edge, PackageRecord

Clock = Callable[[], float]
MAX_UPSTREAM_URLS = 64


class Store(Protocol):
    def put(self, record: PackageRecord) -> bool:
        """Stores a record; True when the index had no record for its SHA-256."""
        ...

    def get(self, sha256: str) -> PackageRecord | None: ...

    def get_many(self, sha256s: Sequence[str]) -> dict[str, PackageRecord]: ...

    def record_count(self) -> int: ...

    def is_tracked(self, info_hash: bytes) -> bool:
        """Whether a 20-byte infohash (v1 or truncated v2) belongs to a record."""
        ...

    def torrent_of(self, info_hash: bytes) -> str | None:
        """The SHA-256 of the record whose torrent has this 20-byte infohash (v1 or truncated
        v2), None when the index has none: how a hybrid torrent's two swarms are paired."""
        ...

    def register_edge(self, edge: Edge, lease_seconds: float) -> float:
        """Registers or renews an edge; returns its lease expiry (clock time)."""
        ...

    def leases(self) -> list[tuple[Edge, float]]:
        """Every live registration (edges and seed boxes) with its lease expiry, by zone, id."""
        ...

    def live_edges(self, zone: str) -> list[Edge]:
        """Edges (never seed boxes) whose lease has not ended, those in `zone` first."""
        ...

    def edge_count(self) -> int:
        """How many edges (never seed boxes) have a live lease."""
        ...

    def seed_upload_capacity(self) -> int:
        """The live seed boxes' summed uplink (`summed_uplink`)."""
        ...

    def expire_edges(self) -> int:
        """Deletes edges and seed boxes whose lease ended; returns how many."""
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


def merge(existing: PackageRecord | None, record: PackageRecord) -> PackageRecord:
    """What `put` stores: the new record, keeping URLs known for the same torrent."""
    if existing is None or not existing.same_torrent(record):
        return record
    urls = tuple(dict.fromkeys(existing.upstream_urls + record.upstream_urls))
    return PackageRecord(
        record.sha256,
        record.size,
        record.name,
        record.info_hash_v1,
        record.info_hash_v2,
        record.piece_length,
        record.torrent,
        urls[:MAX_UPSTREAM_URLS],
    )


def _track(tracked: dict[bytes, str], record: PackageRecord) -> None:
    for info_hash in record.tracker_hashes():
        tracked[info_hash] = record.sha256


def _untrack(tracked: dict[bytes, str], record: PackageRecord) -> None:
    for info_hash in record.tracker_hashes():
        tracked.pop(info_hash, None)


class EdgeLeases:
    """Edges and seed boxes and when their leases end, in memory; both stores keep them here.
    One namespace of ids: a registration replaces any other with its id, of either kind."""

    def __init__(self, clock: Clock, leases: Iterable[tuple[Edge, float]] = ()) -> None:
        self._clock = clock
        self._edges = {edge.id: (edge, expires) for edge, expires in leases}

    def put(self, edge: Edge, expires: float) -> None:
        self._edges[edge.id] = (edge, expires)

    def _live(self) -> list[Edge]:
        now = self._clock()
        return [e for e, exp in list(self._edges.values()) if exp > now]

    def leases(self) -> list[tuple[Edge, float]]:
        now = self._clock()
        live = [(e, exp) for e, exp in list(self._edges.values()) if exp > now]
        return sorted(live, key=lambda lease: (lease[0].zone, lease[0].id))

    def live(self, zone: str) -> list[Edge]:
        """Live edges, never seed boxes."""
        return order_edges((e for e in self._live() if not e.seed_box), zone)

    def count(self) -> int:
        """How many edges (not seed boxes) are live."""
        return sum(1 for e in self._live() if not e.seed_box)

    def seed_upload_capacity(self) -> int:
        return summed_uplink(e.upload_capacity for e in self._live() if e.seed_box)

    def expire(self, now: float) -> int:
        """Drops the leases ended by `now`; returns how many."""
        gone = [edge_id for edge_id, (_, exp) in list(self._edges.items()) if exp <= now]
        for edge_id in gone:
            del self._edges[edge_id]
        return len(gone)


class MemoryStore:
    """The in-memory fake: same contract, nothing survives the process."""

    def __init__(self, clock: Clock = time.time) -> None:
        self._clock = clock
        self._records: dict[str, PackageRecord] = {}
        self._tracked: dict[bytes, str] = {}  # infohash -> the record's SHA-256
        self._edges = EdgeLeases(clock)

    def put(self, record: PackageRecord) -> bool:
        existing = self._records.get(record.sha256)
        if existing is not None:
            _untrack(self._tracked, existing)
        self._records[record.sha256] = merge(existing, record)
        _track(self._tracked, record)
        return existing is None

    def get(self, sha256: str) -> PackageRecord | None:
        return self._records.get(sha256)

    def get_many(self, sha256s: Sequence[str]) -> dict[str, PackageRecord]:
        return {s: self._records[s] for s in sha256s if s in self._records}

    def record_count(self) -> int:
        return len(self._records)

    def is_tracked(self, info_hash: bytes) -> bool:
        return info_hash in self._tracked

    def torrent_of(self, info_hash: bytes) -> str | None:
        return self._tracked.get(info_hash)

    def register_edge(self, edge: Edge, lease_seconds: float) -> float:
        expires = self._clock() + lease_seconds
        self._edges.put(edge, expires)
        return expires

    def leases(self) -> list[tuple[Edge, float]]:
        return self._edges.leases()

    def live_edges(self, zone: str) -> list[Edge]:
        return self._edges.live(zone)

    def edge_count(self) -> int:
        return self._edges.count()

    def seed_upload_capacity(self) -> int:
        return self._edges.seed_upload_capacity()

    def expire_edges(self) -> int:
        return self._edges.expire(self._clock())

    def close(self) -> None:
        pass


_SCHEMA = """
CREATE TABLE IF NOT EXISTS packages (
    sha256 TEXT PRIMARY KEY,
    size INTEGER NOT NULL,
    name TEXT NOT NULL,
    info_hash_v1 TEXT NOT NULL,
    info_hash_v2 TEXT NOT NULL,
    piece_length INTEGER NOT NULL,
    torrent BLOB NOT NULL,
    upstream_urls TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS edges (
    id TEXT PRIMARY KEY,
    url TEXT NOT NULL,
    zone TEXT NOT NULL,
    expires REAL NOT NULL,
    upload_capacity INTEGER NOT NULL DEFAULT 0,
    seed_box INTEGER NOT NULL DEFAULT 0
);
"""
_COLUMNS = "sha256, size, name, info_hash_v1, info_hash_v2, piece_length, torrent, upstream_urls"
_CHUNK = 500  # below SQLite's default limit of bound parameters


class StoreError(Exception):
    """The database cannot be opened or is not an aptmesh tracker database."""


def _add_missing_columns(db: sqlite3.Connection) -> None:
    """Brings a database made by an earlier schema up to this one (CREATE TABLE IF NOT EXISTS
    leaves an existing table as it was)."""
    edge_columns = {row[1] for row in db.execute("PRAGMA table_info(edges)")}
    if "upload_capacity" not in edge_columns:
        db.execute("ALTER TABLE edges ADD COLUMN upload_capacity INTEGER NOT NULL DEFAULT 0")
    if "seed_box" not in edge_columns:
        db.execute("ALTER TABLE edges ADD COLUMN seed_box INTEGER NOT NULL DEFAULT 0")


def _record(row: tuple[str, int, str, str, str, int, bytes, str]) -> PackageRecord:
    sha256, size, name, v1, v2, plen, torrent, urls = row
    return PackageRecord(sha256, size, name, v1, v2, plen, bytes(torrent), tuple(json.loads(urls)))


class SqliteStore:
    def __init__(self, path: Path, clock: Clock = time.time) -> None:
        self._clock = clock
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA busy_timeout=5000")
            self._db.executescript(_SCHEMA)
            _add_missing_columns(self._db)
            rows = self._db.execute(
                "SELECT sha256, info_hash_v1, info_hash_v2 FROM packages"
            ).fetchall()
            edges = self._db.execute(
                "SELECT id, url, zone, upload_capacity, seed_box, expires FROM edges"
            ).fetchall()
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"opening the tracker database {path}: {exc}") from None
        self._tracked: dict[bytes, str] = {}  # infohash -> the record's SHA-256
        for sha256, v1, v2 in rows:
            self._tracked[bytes.fromhex(v1)] = sha256
            self._tracked[bytes.fromhex(v2[:40])] = sha256
        self._count = len(rows)
        self._edges = EdgeLeases(
            clock,
            (
                (Edge(edge_id, url, zone, capacity, bool(seed_box)), exp)
                for edge_id, url, zone, capacity, seed_box, exp in edges
            ),
        )

    def put(self, record: PackageRecord) -> bool:
        existing = self.get(record.sha256)
        merged = merge(existing, record)
        if merged == existing:
            return False
        self._db.execute(
            f"INSERT OR REPLACE INTO packages ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",  # noqa: S608 - constant
            (
                merged.sha256,
                merged.size,
                merged.name,
                merged.info_hash_v1,
                merged.info_hash_v2,
                merged.piece_length,
                merged.torrent,
                json.dumps(list(merged.upstream_urls)),
            ),
        )
        if existing is not None:
            _untrack(self._tracked, existing)
        else:
            self._count += 1
        _track(self._tracked, merged)
        return existing is None

    def get(self, sha256: str) -> PackageRecord | None:
        row = self._db.execute(
            f"SELECT {_COLUMNS} FROM packages WHERE sha256 = ?",  # noqa: S608 - constant
            (sha256,),
        ).fetchone()
        return _record(row) if row else None

    def get_many(self, sha256s: Sequence[str]) -> dict[str, PackageRecord]:
        found: dict[str, PackageRecord] = {}
        unique = list(dict.fromkeys(sha256s))
        for start in range(0, len(unique), _CHUNK):
            chunk = unique[start : start + _CHUNK]
            marks = ",".join("?" * len(chunk))
            for row in self._db.execute(
                f"SELECT {_COLUMNS} FROM packages WHERE sha256 IN ({marks})",  # noqa: S608 - only '?'s
                chunk,
            ):
                record = _record(row)
                found[record.sha256] = record
        return found

    def record_count(self) -> int:
        return self._count

    def is_tracked(self, info_hash: bytes) -> bool:
        return info_hash in self._tracked

    def torrent_of(self, info_hash: bytes) -> str | None:
        return self._tracked.get(info_hash)

    def register_edge(self, edge: Edge, lease_seconds: float) -> float:
        expires = self._clock() + lease_seconds
        self._db.execute(
            "INSERT OR REPLACE INTO edges (id, url, zone, upload_capacity, seed_box, expires)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (edge.id, edge.url, edge.zone, edge.upload_capacity, int(edge.seed_box), expires),
        )
        self._edges.put(edge, expires)
        return expires

    def leases(self) -> list[tuple[Edge, float]]:
        return self._edges.leases()

    def live_edges(self, zone: str) -> list[Edge]:
        return self._edges.live(zone)

    def edge_count(self) -> int:
        return self._edges.count()

    def seed_upload_capacity(self) -> int:
        return self._edges.seed_upload_capacity()

    def expire_edges(self) -> int:
        now = self._clock()
        gone = self._edges.expire(now)
        if gone:  # rows left by a failed delete are ended leases: never listed after a restart
            self._db.execute("DELETE FROM edges WHERE expires <= ?", (now,))
        return gone

    def close(self) -> None:
        self._db.close()
