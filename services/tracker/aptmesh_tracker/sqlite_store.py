"""The embedded backend: the index and the lease table in one SQLite file.

Durability: WAL with synchronous=FULL. WAL alone survives a killed process at
any synchronous level (committed frames are in the WAL file, which the next
open replays); FULL also fsyncs the WAL at every commit, so an acknowledged
publish survives power loss too. Commits are one row each and rare next to
announces, so the fsync is affordable.

Schema versions are SQLite's `user_version`, migrated at open. Version 1 is
the schema of the first versioned release and also brings up a database made
before versions were kept (whose edges table may lack later columns).

Threads: one connection, used by the app's single store thread (SQLite has
one writer anyway); `check_same_thread` is off because tests open a store on
one thread and the app uses it on another.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path

from aptmesh_tracker.index_store import StoreError, TrackedHashes, merge
from aptmesh_tracker.records import (
    Edge,
    PackageRecord,
    generations_from_json,
    generations_to_json,
    tracker_hashes,
)

_COLUMNS = "sha256, size, name, info_hash_v1, info_hash_v2, piece_length, torrent, upstream_urls"
_CHUNK = 500  # below SQLite's default limit of bound parameters


def _v1(db: sqlite3.Connection) -> None:
    # One statement per execute: executescript would commit the migration's transaction.
    db.execute(
        """
        CREATE TABLE IF NOT EXISTS packages (
            sha256 TEXT PRIMARY KEY,
            size INTEGER NOT NULL,
            name TEXT NOT NULL,
            info_hash_v1 TEXT NOT NULL,
            info_hash_v2 TEXT NOT NULL,
            piece_length INTEGER NOT NULL,
            torrent BLOB NOT NULL,
            upstream_urls TEXT NOT NULL
        )
        """
    )
    db.execute(
        """
        CREATE TABLE IF NOT EXISTS edges (
            id TEXT PRIMARY KEY,
            url TEXT NOT NULL,
            zone TEXT NOT NULL,
            expires REAL NOT NULL,
            upload_capacity INTEGER NOT NULL DEFAULT 0,
            seed_box INTEGER NOT NULL DEFAULT 0,
            address TEXT NOT NULL DEFAULT ''
        )
        """
    )
    # A database made before versions were kept: CREATE TABLE IF NOT EXISTS left its
    # edges table as it was.
    edge_columns = {row[1] for row in db.execute("PRAGMA table_info(edges)")}
    if "upload_capacity" not in edge_columns:
        db.execute("ALTER TABLE edges ADD COLUMN upload_capacity INTEGER NOT NULL DEFAULT 0")
    if "seed_box" not in edge_columns:
        db.execute("ALTER TABLE edges ADD COLUMN seed_box INTEGER NOT NULL DEFAULT 0")
    if "address" not in edge_columns:
        db.execute("ALTER TABLE edges ADD COLUMN address TEXT NOT NULL DEFAULT ''")
    if "generations" not in edge_columns:
        # The generations each edge serves (records.generations_to_json), with its lease.
        db.execute("ALTER TABLE edges ADD COLUMN generations TEXT NOT NULL DEFAULT ''")


def _v2(db: sqlite3.Connection) -> None:
    db.execute(
        "CREATE TABLE collections (name TEXT PRIMARY KEY, spec TEXT NOT NULL,"
        " version INTEGER NOT NULL, updated_at REAL NOT NULL)"
    )
    db.execute(
        "CREATE TABLE collection_reports (collection TEXT NOT NULL, edge_id TEXT NOT NULL,"
        " report TEXT NOT NULL, PRIMARY KEY (collection, edge_id))"
    )


# Index i brings a database from version i to i + 1. Append; never edit a released one.
MIGRATIONS: tuple[Callable[[sqlite3.Connection], None], ...] = (_v1, _v2)


def migrate(db: sqlite3.Connection) -> int:
    """Brings the schema to the newest version in one transaction; returns that version."""
    db.execute("BEGIN IMMEDIATE")  # one migrator at a time, even across processes
    try:
        version: int = db.execute("PRAGMA user_version").fetchone()[0]
        if version > len(MIGRATIONS):
            raise StoreError(
                f"the database has schema version {version}, newer than this tracker's "
                f"{len(MIGRATIONS)}: run a newer aptmesh"
            )
        for step in MIGRATIONS[version:]:
            step(db)
        db.execute(f"PRAGMA user_version = {len(MIGRATIONS)}")
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    return len(MIGRATIONS)


def _record(row: tuple[str, int, str, str, str, int, bytes, str]) -> PackageRecord:
    sha256, size, name, v1, v2, plen, torrent, urls = row
    return PackageRecord(sha256, size, name, v1, v2, plen, bytes(torrent), tuple(json.loads(urls)))


class SqliteDatabase:
    """The open file, migrated; the index and the lease table share its connection."""

    def __init__(self, path: Path) -> None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=FULL")
            self.db.execute("PRAGMA busy_timeout=5000")
            self.version = migrate(self.db)
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"opening the tracker database {path}: {exc}") from None

    def close(self) -> None:
        self.db.close()


class SqliteIndex:
    def __init__(self, database: SqliteDatabase) -> None:
        self._db = database.db
        self._tracked = TrackedHashes()
        for sha256, v1, v2 in self._db.execute(
            "SELECT sha256, info_hash_v1, info_hash_v2 FROM packages"
        ):
            self._tracked.set(sha256, tracker_hashes(v1, v2))

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
        self._tracked.set(merged.sha256, merged.tracker_hashes())
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
        return self._tracked.record_count()

    def is_tracked(self, info_hash: bytes) -> bool:
        return info_hash in self._tracked

    def torrent_of(self, info_hash: bytes) -> str | None:
        return self._tracked.torrent_of(info_hash)

    def refresh(self) -> None:
        pass  # only this process writes the file

    def close(self) -> None:
        pass  # the database is closed by its owner


class SqliteLeases:
    def __init__(self, database: SqliteDatabase) -> None:
        self._db = database.db

    def put(self, edge: Edge, expires: float) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO edges"
            " (id, url, zone, upload_capacity, seed_box, address, generations, expires)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                edge.id,
                edge.url,
                edge.zone,
                edge.upload_capacity,
                int(edge.seed_box),
                edge.address,
                generations_to_json(edge.generations),
                expires,
            ),
        )

    def live(self, now: float) -> list[tuple[Edge, float]]:
        rows = self._db.execute(
            "SELECT id, url, zone, upload_capacity, seed_box, address, generations, expires"
            " FROM edges WHERE expires > ?",
            (now,),
        )
        return [
            (
                Edge(
                    edge_id,
                    url,
                    zone,
                    capacity,
                    bool(seed_box),
                    generations_from_json(generations),
                    address,
                ),
                expires,
            )
            for edge_id, url, zone, capacity, seed_box, address, generations, expires in rows
        ]

    def delete_ended(self, now: float) -> int:
        return self._db.execute("DELETE FROM edges WHERE expires <= ?", (now,)).rowcount

    def close(self) -> None:
        pass  # the database is closed by its owner


class SqliteCollections:
    """The collections' table (`collection_store.CollectionTable`)."""

    def __init__(self, database: SqliteDatabase) -> None:
        self._db = database.db

    def read(self, name: str) -> tuple[str, int, float] | None:
        row = self._db.execute(
            "SELECT spec, version, updated_at FROM collections WHERE name = ?", (name,)
        ).fetchone()
        return (row[0], row[1], row[2]) if row else None

    def read_all(self) -> list[tuple[str, int, float]]:
        rows = self._db.execute("SELECT spec, version, updated_at FROM collections")
        return [(spec, version, at) for spec, version, at in rows]

    def write(self, name: str, row: tuple[str, int, float], previous: int) -> bool:
        spec, version, updated_at = row
        if previous == 0:
            cursor = self._db.execute(
                "INSERT OR IGNORE INTO collections (name, spec, version, updated_at)"
                " VALUES (?, ?, ?, ?)",
                (name, spec, version, updated_at),
            )
        else:
            cursor = self._db.execute(
                "UPDATE collections SET spec = ?, version = ?, updated_at = ?"
                " WHERE name = ? AND version = ?",
                (spec, version, updated_at, name, previous),
            )
        return cursor.rowcount == 1

    def delete(self, name: str) -> bool:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            self._db.execute("DELETE FROM collection_reports WHERE collection = ?", (name,))
            gone = self._db.execute("DELETE FROM collections WHERE name = ?", (name,)).rowcount
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        return gone == 1

    def put_report(self, name: str, edge_id: str, report: str) -> bool:
        cursor = self._db.execute(
            "INSERT OR REPLACE INTO collection_reports (collection, edge_id, report)"
            " SELECT ?, ?, ? WHERE EXISTS (SELECT 1 FROM collections WHERE name = ?)",
            (name, edge_id, report, name),
        )
        return cursor.rowcount == 1

    def reports(self, name: str) -> list[str]:
        rows = self._db.execute(
            "SELECT report FROM collection_reports WHERE collection = ?", (name,)
        )
        return [report for (report,) in rows]

    def close(self) -> None:
        pass  # the database is closed by its owner
