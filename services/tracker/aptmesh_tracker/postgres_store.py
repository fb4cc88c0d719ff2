"""The shared backend: the index and the lease table on PostgreSQL, for several replicas.

Theory of operation. Every replica opens the same database; the database is
the truth and each replica's memory only a cache of it (`index_store`).

The driver is psycopg 3 with its connection pool, chosen on measurement
(PostgreSQL 15 on loopback, 3,000 operations each, one connection):

    driver                 upsert of a record   select by primary key
    psycopg 3, sync pool       10,300 /s             3,500 /s
    psycopg 3, async pool       5,200 /s             3,600 /s
    asyncpg 0.32                9,800 /s             4,800 /s

asyncpg reads a third faster, but nothing on the announce path reads the
database (it answers from `TrackedHashes` and the registry's view); publishes,
lookups and registrations are thousands of times rarer than announces. So
the store contract stays synchronous, as SQLite needs, and runs in the app's
store threads, one pool connection each; psycopg's sync pool is the fastest
writer of the three in that shape, and one contract keeps one conformance
suite.

Schema versions live in the table `aptmesh_schema_versions`; `migrate` runs
at every start (and by `aptmesh tracker migrate`) inside one transaction that
first takes a transaction-scoped advisory lock, so replicas starting at once
migrate one after another and the later ones find nothing to do. A database
newer than this code is refused rather than written by the old schema's rules.

Catching up: every write to `packages` takes the next value of a sequence
into `seq`; `refresh` reads the rows past the highest `seq` it has seen, and a
window of `LOOKBACK` before it, because a transaction that took a smaller
`seq` may commit after one that took a larger (publishes are one short
transaction each, so more than `LOOKBACK` overtaking it is not a case to
plan for).

Unreachable database: every driver error that says the server cannot be
reached becomes `StoreUnavailable` here (`_reachable`), and the pool checks a
connection before handing it out, so the store converges by itself when
the server returns.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import psycopg
import psycopg_pool

from aptmesh_tracker.index_store import StoreError, StoreUnavailable, TrackedHashes, merge
from aptmesh_tracker.records import (
    Edge,
    PackageRecord,
    generations_from_json,
    generations_to_json,
    tracker_hashes,
)

# Two int4 keys: "aptm" and the lock's purpose (1: migrations).
MIGRATION_LOCK = (0x6170746D, 1)
CONNECT_TIMEOUT = 3  # seconds to reach the server for a new connection
POOL_TIMEOUT = 2.0  # seconds a store call waits for a connection before it is unavailable
STATEMENT_TIMEOUT_MS = 10_000
LOOKBACK = 256

# Index i brings a database from version i to i + 1. Append; never edit a released one.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE SEQUENCE packages_seq;
    CREATE TABLE packages (
        sha256 text PRIMARY KEY,
        size bigint NOT NULL,
        name text NOT NULL,
        info_hash_v1 text NOT NULL,
        info_hash_v2 text NOT NULL,
        piece_length bigint NOT NULL,
        torrent bytea NOT NULL,
        upstream_urls text[] NOT NULL,
        seq bigint NOT NULL DEFAULT nextval('packages_seq')
    );
    CREATE INDEX packages_by_seq ON packages (seq);
    CREATE TABLE edges (
        id text PRIMARY KEY,
        url text NOT NULL,
        zone text NOT NULL,
        upload_capacity bigint NOT NULL,
        seed_box boolean NOT NULL,
        address text NOT NULL,
        expires double precision NOT NULL
    );
    CREATE INDEX edges_by_expiry ON edges (expires);
    """,
    """
    CREATE TABLE collections (
        name text PRIMARY KEY,
        spec text NOT NULL,
        version bigint NOT NULL,
        updated_at double precision NOT NULL
    );
    CREATE TABLE collection_reports (
        collection text NOT NULL REFERENCES collections (name) ON DELETE CASCADE,
        edge_id text NOT NULL,
        report text NOT NULL,
        PRIMARY KEY (collection, edge_id)
    );
    """,
    # The generations each edge serves (records.generations_to_json), with its lease.
    """
    ALTER TABLE edges ADD COLUMN generations text NOT NULL DEFAULT '';
    """,
)

_COLUMNS = "sha256, size, name, info_hash_v1, info_hash_v2, piece_length, torrent, upstream_urls"


@contextlib.contextmanager
def _reachable(what: str) -> Iterator[None]:
    """Translates the driver's "cannot reach the server" errors into StoreUnavailable."""
    try:
        yield
    except (psycopg.OperationalError, psycopg.InterfaceError, psycopg_pool.PoolTimeout) as exc:
        raise StoreUnavailable(f"{what}: PostgreSQL is unreachable: {exc}") from None


def migrate(conn: psycopg.Connection[Any]) -> int:
    """Brings the schema to the newest version; safe to run from many replicas at once."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s, %s)", MIGRATION_LOCK)
        conn.execute(
            "CREATE TABLE IF NOT EXISTS aptmesh_schema_versions ("
            " version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        row = conn.execute("SELECT coalesce(max(version), 0) FROM aptmesh_schema_versions")
        version: int = row.fetchone()[0]  # type: ignore[index]
        if version > len(MIGRATIONS):
            raise StoreError(
                f"the database has schema version {version}, newer than this tracker's "
                f"{len(MIGRATIONS)}: run a newer aptmesh"
            )
        for number, sql in enumerate(MIGRATIONS[version:], version + 1):
            conn.execute(sql.encode())
            conn.execute("INSERT INTO aptmesh_schema_versions (version) VALUES (%s)", (number,))
    return len(MIGRATIONS)


class PostgresDatabase:
    """The pool, opened and migrated; the index and the lease table share it."""

    def __init__(self, url: str, *, connections: int) -> None:
        self._pool = psycopg_pool.ConnectionPool(
            url,
            min_size=1,
            max_size=connections,
            open=False,
            timeout=POOL_TIMEOUT,
            check=psycopg_pool.ConnectionPool.check_connection,
            kwargs={
                "autocommit": True,
                "connect_timeout": CONNECT_TIMEOUT,
                "options": f"-c statement_timeout={STATEMENT_TIMEOUT_MS}",
            },
        )
        try:
            with _reachable("opening the tracker database"):
                self._pool.open(wait=True, timeout=POOL_TIMEOUT)
                with self._pool.connection() as conn:
                    self.version = migrate(conn)
        except psycopg.Error as exc:
            self._pool.close()
            raise StoreError(f"opening the tracker database: {exc}") from None
        except BaseException:
            self._pool.close()
            raise

    @contextlib.contextmanager
    def connection(self, what: str) -> Iterator[psycopg.Connection[Any]]:
        with _reachable(what), self._pool.connection() as conn:
            yield conn

    def close(self) -> None:
        self._pool.close()


def _record(row: tuple[Any, ...]) -> PackageRecord:
    sha256, size, name, v1, v2, plen, torrent, urls = row
    return PackageRecord(sha256, size, name, v1, v2, plen, bytes(torrent), tuple(urls))


def _values(record: PackageRecord) -> tuple[object, ...]:
    return (
        record.sha256,
        record.size,
        record.name,
        record.info_hash_v1,
        record.info_hash_v2,
        record.piece_length,
        record.torrent,
        list(record.upstream_urls),
    )


class PostgresIndex:
    def __init__(self, database: PostgresDatabase) -> None:
        self._database = database
        self._tracked = TrackedHashes()
        self._seen_seq = 0
        self.refresh()

    def put(self, record: PackageRecord) -> bool:
        with self._database.connection("publishing a record") as conn, conn.transaction():
            # Lock the row (or, for a new one, make it) so concurrent publishes of one file
            # from two replicas merge their URLs instead of one overwriting the other.
            inserted = conn.execute(
                f"INSERT INTO packages ({_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"  # noqa: S608 - constant
                " ON CONFLICT (sha256) DO NOTHING RETURNING sha256",
                _values(record),
            ).fetchone()
            if inserted is not None:
                created = True
            else:
                row = conn.execute(
                    f"SELECT {_COLUMNS} FROM packages WHERE sha256 = %s FOR UPDATE",  # noqa: S608 - constant
                    (record.sha256,),
                ).fetchone()
                assert row is not None  # rows are never deleted
                existing = _record(row)
                merged = merge(existing, record)
                created = False
                if merged != existing:
                    conn.execute(
                        "UPDATE packages SET size = %s, name = %s, info_hash_v1 = %s,"
                        " info_hash_v2 = %s, piece_length = %s, torrent = %s,"
                        " upstream_urls = %s, seq = nextval('packages_seq') WHERE sha256 = %s",
                        (*_values(merged)[1:], merged.sha256),
                    )
                record = merged
        self._tracked.set(record.sha256, record.tracker_hashes())
        return created

    def get(self, sha256: str) -> PackageRecord | None:
        with self._database.connection("reading a record") as conn:
            row = conn.execute(
                f"SELECT {_COLUMNS} FROM packages WHERE sha256 = %s",  # noqa: S608 - constant
                (sha256,),
            ).fetchone()
        return _record(row) if row else None

    def get_many(self, sha256s: Sequence[str]) -> dict[str, PackageRecord]:
        if not sha256s:
            return {}
        with self._database.connection("reading records") as conn:
            rows = conn.execute(
                f"SELECT {_COLUMNS} FROM packages WHERE sha256 = ANY(%s)",  # noqa: S608 - constant
                (list(dict.fromkeys(sha256s)),),
            ).fetchall()
        return {record.sha256: record for record in map(_record, rows)}

    def record_count(self) -> int:
        return self._tracked.record_count()

    def is_tracked(self, info_hash: bytes) -> bool:
        return info_hash in self._tracked

    def torrent_of(self, info_hash: bytes) -> str | None:
        return self._tracked.torrent_of(info_hash)

    def refresh(self) -> None:
        with self._database.connection("catching up with the index") as conn:
            rows = conn.execute(
                "SELECT seq, sha256, info_hash_v1, info_hash_v2 FROM packages"
                " WHERE seq > %s ORDER BY seq",
                (self._seen_seq - LOOKBACK,),
            ).fetchall()
        for seq, sha256, v1, v2 in rows:
            self._tracked.set(sha256, tracker_hashes(v1, v2))
            self._seen_seq = max(self._seen_seq, seq)

    def close(self) -> None:
        pass  # the database is closed by its owner


class PostgresLeases:
    def __init__(self, database: PostgresDatabase) -> None:
        self._database = database

    def put(self, edge: Edge, expires: float) -> None:
        with self._database.connection("registering") as conn:
            conn.execute(
                "INSERT INTO edges"
                " (id, url, zone, upload_capacity, seed_box, address, generations, expires)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (id) DO UPDATE SET"
                " url = excluded.url, zone = excluded.zone,"
                " upload_capacity = excluded.upload_capacity, seed_box = excluded.seed_box,"
                " address = excluded.address, generations = excluded.generations,"
                " expires = excluded.expires",
                (
                    edge.id,
                    edge.url,
                    edge.zone,
                    edge.upload_capacity,
                    edge.seed_box,
                    edge.address,
                    generations_to_json(edge.generations),
                    expires,
                ),
            )

    def live(self, now: float) -> list[tuple[Edge, float]]:
        with self._database.connection("listing edges") as conn:
            rows = conn.execute(
                "SELECT id, url, zone, upload_capacity, seed_box, address, generations, expires"
                " FROM edges WHERE expires > %s",
                (now,),
            ).fetchall()
        return [
            (
                Edge(
                    edge_id,
                    url,
                    zone,
                    capacity,
                    seed_box,
                    generations_from_json(generations),
                    address,
                ),
                expires,
            )
            for edge_id, url, zone, capacity, seed_box, address, generations, expires in rows
        ]

    def delete_ended(self, now: float) -> int:
        with self._database.connection("expiring leases") as conn:
            return conn.execute("DELETE FROM edges WHERE expires <= %s", (now,)).rowcount

    def close(self) -> None:
        pass  # the database is closed by its owner


class PostgresCollections:
    """The collections' table (`collection_store.CollectionTable`)."""

    def __init__(self, database: PostgresDatabase) -> None:
        self._database = database

    def read(self, name: str) -> tuple[str, int, float] | None:
        with self._database.connection("reading a collection") as conn:
            row = conn.execute(
                "SELECT spec, version, updated_at FROM collections WHERE name = %s", (name,)
            ).fetchone()
        return (row[0], row[1], row[2]) if row else None

    def read_all(self) -> list[tuple[str, int, float]]:
        with self._database.connection("listing collections") as conn:
            rows = conn.execute("SELECT spec, version, updated_at FROM collections").fetchall()
        return [(spec, version, at) for spec, version, at in rows]

    def write(self, name: str, row: tuple[str, int, float], previous: int) -> bool:
        spec, version, updated_at = row
        with self._database.connection("storing a collection") as conn:
            if previous == 0:
                cursor = conn.execute(
                    "INSERT INTO collections (name, spec, version, updated_at)"
                    " VALUES (%s, %s, %s, %s) ON CONFLICT (name) DO NOTHING",
                    (name, spec, version, updated_at),
                )
            else:
                cursor = conn.execute(
                    "UPDATE collections SET spec = %s, version = %s, updated_at = %s"
                    " WHERE name = %s AND version = %s",
                    (spec, version, updated_at, name, previous),
                )
            return cursor.rowcount == 1

    def delete(self, name: str) -> bool:
        with self._database.connection("deleting a collection") as conn:
            return conn.execute("DELETE FROM collections WHERE name = %s", (name,)).rowcount == 1

    def put_report(self, name: str, edge_id: str, report: str) -> bool:
        with self._database.connection("storing a collection report") as conn:
            cursor = conn.execute(
                "INSERT INTO collection_reports (collection, edge_id, report)"
                " SELECT %s, %s, %s WHERE EXISTS (SELECT 1 FROM collections WHERE name = %s)"
                " ON CONFLICT (collection, edge_id) DO UPDATE SET report = excluded.report",
                (name, edge_id, report, name),
            )
            return cursor.rowcount == 1

    def reports(self, name: str) -> list[str]:
        with self._database.connection("reading collection reports") as conn:
            rows = conn.execute(
                "SELECT report FROM collection_reports WHERE collection = %s", (name,)
            ).fetchall()
        return [report for (report,) in rows]

    def close(self) -> None:
        pass  # the database is closed by its owner
