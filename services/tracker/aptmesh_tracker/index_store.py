"""The package index's storage: the contract, the rules every backend shares, an in-memory fake.

Theory of operation. `IndexStore` is the contract (`tests/tracker/test_index_store.py`
runs one suite against every backend: memory, SQLite, PostgreSQL). Records
are keyed by the file's SHA-256; `put` replaces a record whose torrent changed
and merges upstream URLs into one whose torrent is the same (`merge`, the one
place of that rule).

The announce path asks `is_tracked` for every announce, so it never touches a
database: each store keeps the 20-byte infohashes (v1 and truncated v2 of every
record) in a `TrackedHashes` held in memory. That set is a cache, never the
truth: a store that several replicas share (PostgreSQL) brings it up to date
with what the others published in `refresh()`, which the app calls every few
seconds; a store only this process writes has nothing to catch up on.
While the database is unreachable the cache goes on answering announces.

Threads: the app calls `put`, `get`, `get_many` and `refresh` from its store
threads (never the event loop: they may block on I/O). `is_tracked` and
`record_count` only read in-memory values and are safe from the event loop
while a store thread writes (each update is one atomic step under the GIL).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Protocol

from aptmesh_tracker.records import PackageRecord

MAX_UPSTREAM_URLS = 64


class StoreError(Exception):
    """A store cannot be opened, or its database is not an aptmesh tracker database."""


class StoreUnavailable(StoreError):
    """A shared store's database cannot be reached now; the call may be retried later."""


class IndexStore(Protocol):
    def put(self, record: PackageRecord) -> bool:
        """Stores a record; True when the index had no record for its SHA-256."""
        ...

    def get(self, sha256: str) -> PackageRecord | None: ...

    def get_many(self, sha256s: Sequence[str]) -> dict[str, PackageRecord]: ...

    def record_count(self) -> int:
        """Records known to this process (in memory: no I/O)."""
        ...

    def is_tracked(self, info_hash: bytes) -> bool:
        """Whether a 20-byte infohash (v1 or truncated v2) belongs to a record (no I/O)."""
        ...

    def torrent_of(self, info_hash: bytes) -> str | None:
        """The SHA-256 of the record whose torrent has this 20-byte infohash, None when none
        has (no I/O): how a hybrid torrent's v1 and v2 swarms are paired."""
        ...

    def refresh(self) -> None:
        """Catches up with records other replicas stored; raises StoreUnavailable."""
        ...

    def close(self) -> None: ...


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


class TrackedHashes:
    """Which infohashes the index tracks, by record: the announce path's allow-list in memory.

    A record whose torrent is replaced stops tracking the old torrent's hashes. Writers
    (several store threads) take the lock; readers (the event loop) do not need it."""

    def __init__(self) -> None:
        self._by_record: dict[str, tuple[bytes, bytes]] = {}
        self._tracked: dict[bytes, str] = {}  # infohash -> its record's SHA-256
        self._lock = threading.Lock()

    def set(self, sha256: str, hashes: tuple[bytes, bytes]) -> None:
        with self._lock:
            old = self._by_record.get(sha256)
            if old == hashes:
                return
            self._by_record[sha256] = hashes
            if old is not None:
                for info_hash in old:
                    self._tracked.pop(info_hash, None)
            self._tracked.update(dict.fromkeys(hashes, sha256))

    def __contains__(self, info_hash: bytes) -> bool:
        return info_hash in self._tracked

    def torrent_of(self, info_hash: bytes) -> str | None:
        return self._tracked.get(info_hash)

    def record_count(self) -> int:
        return len(self._by_record)


class MemoryIndex:
    """The in-memory fake: same contract, nothing survives the process."""

    def __init__(self) -> None:
        self._records: dict[str, PackageRecord] = {}
        self._tracked = TrackedHashes()

    def put(self, record: PackageRecord) -> bool:
        existing = self._records.get(record.sha256)
        self._records[record.sha256] = merge(existing, record)
        self._tracked.set(record.sha256, record.tracker_hashes())
        return existing is None

    def get(self, sha256: str) -> PackageRecord | None:
        return self._records.get(sha256)

    def get_many(self, sha256s: Sequence[str]) -> dict[str, PackageRecord]:
        return {s: self._records[s] for s in sha256s if s in self._records}

    def record_count(self) -> int:
        return self._tracked.record_count()

    def is_tracked(self, info_hash: bytes) -> bool:
        return info_hash in self._tracked

    def torrent_of(self, info_hash: bytes) -> str | None:
        return self._tracked.torrent_of(info_hash)

    def refresh(self) -> None:
        pass

    def close(self) -> None:
        pass
