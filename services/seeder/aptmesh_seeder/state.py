"""The seeder's durable state: one SQLite file in the data directory.

Theory of operation. SQLite in WAL mode with `synchronous=FULL` makes every
method below one atomic, durable transaction, so a kill -9 at any point
leaves either the old or the new state, never a mix. The state holds:

- per repository: the last sync (time, result, error), the last good sync,
  the InRelease validators of each suite (ETag, Last-Modified, SHA-256 of its
  bytes) that make the next poll conditional, and the size of its current plan;
- the verified files the seeder holds (`HeldFile`): where, how large, their
  torrent, whether the seeder owns the file (downloaded it into the data
  directory) or seeds it in place (a local mirror), and libtorrent resume data;
- per repository and suite: the newest Release generation (`Date` and digest)
  the seeder has verified, so no older one is ever believed again, across
  restarts too (kept when a repository leaves the configuration: a name that
  comes back must not go backwards either);
- `wanted`: which files each repository's last good sync selected. A held file
  that no repository wants has `missing_since` set; after the grace period it
  is retired (the one place files leave the state).

A file is written to `files` only after its SHA-256 matched a verified
Packages index, so everything in `files` may be seeded without re-hashing.
One writer: the sync loop. Readers (status) share the connection on the loop.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

from aptmesh.debian import Generation, ReleaseForm

_SCHEMA = """
CREATE TABLE IF NOT EXISTS repositories (
    name TEXT PRIMARY KEY,
    last_sync_time REAL,
    last_sync_ok INTEGER,
    last_error TEXT NOT NULL DEFAULT '',
    last_good_sync_time REAL,
    validators TEXT NOT NULL DEFAULT '{}',
    packages INTEGER NOT NULL DEFAULT 0,
    bytes INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS files (
    sha256 TEXT PRIMARY KEY,
    size INTEGER NOT NULL,
    name TEXT NOT NULL,
    path TEXT NOT NULL,
    owned INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    info_hash_v1 TEXT NOT NULL,
    info_hash_v2 TEXT NOT NULL,
    piece_length INTEGER NOT NULL,
    torrent BLOB NOT NULL,
    upstream_urls TEXT NOT NULL,
    web_seeds TEXT NOT NULL,
    missing_since REAL,
    was_wanted INTEGER NOT NULL DEFAULT 0,
    resume BLOB
);
CREATE TABLE IF NOT EXISTS generations (
    repository TEXT NOT NULL,
    suite TEXT NOT NULL,
    generation TEXT NOT NULL,
    PRIMARY KEY (repository, suite)
);
CREATE TABLE IF NOT EXISTS wanted (
    repository TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    PRIMARY KEY (repository, sha256)
);
"""


@dataclass(frozen=True)
class Validator:
    """What makes the next InRelease poll conditional."""

    etag: str = ""
    last_modified: str = ""
    sha256: str = ""  # of the polled bytes; catches servers without validators
    form: str = ReleaseForm.INRELEASE.value  # which file was polled (`ReleaseForm`)


@dataclass(frozen=True)
class RepositoryState:
    name: str
    last_sync_time: float | None = None
    last_sync_ok: bool | None = None
    last_error: str = ""
    last_good_sync_time: float | None = None
    validators: Mapping[str, Validator] = field(default_factory=dict)  # per suite
    packages: int = 0
    bytes: int = 0


@dataclass(frozen=True)
class HeldFile:
    """A verified package file the seeder holds and can seed without re-hashing."""

    sha256: str
    size: int
    name: str  # basename as in the pool path; the torrent's name
    path: Path
    owned: bool  # True: downloaded into the data directory; deleted when retired
    mtime_ns: int  # of `path` when verified; a change means re-verify
    info_hash_v1: str
    info_hash_v2: str
    piece_length: int
    torrent: bytes  # bencoded metainfo without trackers or web seeds
    upstream_urls: tuple[str, ...] = ()
    web_seeds: tuple[str, ...] = ()
    missing_since: float | None = None
    was_wanted: bool = False  # some good sync selected it: seeded and published
    resume: bytes | None = None


_FILE_COLUMNS = (
    "sha256, size, name, path, owned, mtime_ns, info_hash_v1, info_hash_v2, piece_length, "
    "torrent, upstream_urls, web_seeds, missing_since, was_wanted, resume"
)


def _file(row: sqlite3.Row) -> HeldFile:
    return HeldFile(
        sha256=row["sha256"],
        size=row["size"],
        name=row["name"],
        path=Path(row["path"]),
        owned=bool(row["owned"]),
        mtime_ns=row["mtime_ns"],
        info_hash_v1=row["info_hash_v1"],
        info_hash_v2=row["info_hash_v2"],
        piece_length=row["piece_length"],
        torrent=bytes(row["torrent"]),
        upstream_urls=tuple(json.loads(row["upstream_urls"])),
        web_seeds=tuple(json.loads(row["web_seeds"])),
        missing_since=row["missing_since"],
        was_wanted=bool(row["was_wanted"]),
        resume=bytes(row["resume"]) if row["resume"] is not None else None,
    )


class StateError(Exception):
    """The state database cannot be opened or written."""


class State:
    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            self._db.row_factory = sqlite3.Row
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA busy_timeout=10000")
            self._db.executescript(_SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise StateError(f"opening the seeder state {path}: {exc}") from None

    def close(self) -> None:
        self._db.close()

    def _write(self, statements: Iterable[tuple[str, tuple[object, ...]]]) -> None:
        try:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for sql, args in statements:
                    self._db.execute(sql, args)
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            raise StateError(f"writing the seeder state {self.path}: {exc}") from None

    # --- repositories --------------------------------------------------------------------

    def repository(self, name: str) -> RepositoryState:
        row = self._db.execute("SELECT * FROM repositories WHERE name = ?", (name,)).fetchone()
        if row is None:
            return RepositoryState(name)
        validators = {
            suite: Validator(**fields) for suite, fields in json.loads(row["validators"]).items()
        }
        return RepositoryState(
            name=name,
            last_sync_time=row["last_sync_time"],
            last_sync_ok=None if row["last_sync_ok"] is None else bool(row["last_sync_ok"]),
            last_error=row["last_error"],
            last_good_sync_time=row["last_good_sync_time"],
            validators=validators,
            packages=row["packages"],
            bytes=row["bytes"],
        )

    def record_sync(
        self,
        name: str,
        when: float,
        *,
        ok: bool,
        error: str = "",
        validators: Mapping[str, Validator] | None = None,
        wanted: Iterable[str] | None = None,
        total_bytes: int = 0,
    ) -> None:
        """Records a sync's outcome in one transaction.

        `validators` None keeps the stored ones (a failed sync keeps those of the
        last good one); `wanted` None keeps the repository's wanted set, otherwise
        the set is replaced: held files nobody wants any more start their grace
        period now, files wanted again end it.
        """
        statements: list[tuple[str, tuple[object, ...]]] = [
            ("INSERT OR IGNORE INTO repositories (name) VALUES (?)", (name,)),
            (
                "UPDATE repositories SET last_sync_time = ?, last_sync_ok = ?, last_error = ? "
                "WHERE name = ?",
                (when, int(ok), error, name),
            ),
        ]
        if ok:
            statements.append(
                ("UPDATE repositories SET last_good_sync_time = ? WHERE name = ?", (when, name))
            )
        if validators is not None:
            text = json.dumps({suite: asdict(v) for suite, v in sorted(validators.items())})
            statements.append(
                ("UPDATE repositories SET validators = ? WHERE name = ?", (text, name))
            )
        if wanted is not None:
            shas = sorted(set(wanted))
            statements += [
                (
                    "UPDATE repositories SET packages = ?, bytes = ? WHERE name = ?",
                    (len(shas), total_bytes, name),
                ),
                ("DELETE FROM wanted WHERE repository = ?", (name,)),
            ]
            statements += [
                ("INSERT INTO wanted (repository, sha256) VALUES (?, ?)", (name, sha))
                for sha in shas
            ]
            statements += self._refresh_missing(when)
        self._write(statements)

    def generation(self, name: str, suite: str) -> Generation | None:
        """The newest Release generation verified for `suite` of repository `name`."""
        row = self._db.execute(
            "SELECT generation FROM generations WHERE repository = ? AND suite = ?",
            (name, suite),
        ).fetchone()
        return Generation.from_json(json.loads(row[0])) if row is not None else None

    def set_generation(self, name: str, suite: str, generation: Generation) -> None:
        """Records a verified generation; the caller has checked it is not older."""
        self._write(
            [
                (
                    "INSERT OR REPLACE INTO generations (repository, suite, generation) "
                    "VALUES (?, ?, ?)",
                    (name, suite, json.dumps(generation.to_json())),
                )
            ]
        )

    def clear_validators(self, names: Iterable[str]) -> None:
        """Makes the next poll of these repositories a full sync."""
        self._write(
            [("UPDATE repositories SET validators = '{}' WHERE name = ?", (n,)) for n in names]
        )

    @staticmethod
    def _refresh_missing(when: float) -> list[tuple[str, tuple[object, ...]]]:
        return [
            (
                "UPDATE files SET missing_since = NULL, was_wanted = 1 "
                "WHERE sha256 IN (SELECT sha256 FROM wanted)",
                (),
            ),
            (
                "UPDATE files SET missing_since = ? WHERE missing_since IS NULL "
                "AND sha256 NOT IN (SELECT sha256 FROM wanted)",
                (when,),
            ),
        ]

    def wanted_by(self, sha256: str) -> list[str]:
        rows = self._db.execute("SELECT repository FROM wanted WHERE sha256 = ?", (sha256,))
        return sorted(row[0] for row in rows)

    def forget_repositories_except(self, names: Iterable[str], when: float) -> None:
        """Drops repositories no longer configured; their files start their grace period."""
        keep = sorted(set(names))
        marks = ",".join("?" * len(keep)) or "''"
        self._write(
            [
                (f"DELETE FROM wanted WHERE repository NOT IN ({marks})", tuple(keep)),  # noqa: S608
                (f"DELETE FROM repositories WHERE name NOT IN ({marks})", tuple(keep)),  # noqa: S608
                *self._refresh_missing(when),
            ]
        )

    def wanted(self, name: str) -> set[str]:
        rows = self._db.execute("SELECT sha256 FROM wanted WHERE repository = ?", (name,))
        return {row[0] for row in rows}

    # --- files ---------------------------------------------------------------------------

    def files(self) -> list[HeldFile]:
        rows = self._db.execute(f"SELECT {_FILE_COLUMNS} FROM files ORDER BY sha256")  # noqa: S608
        return [_file(row) for row in rows]

    def file(self, sha256: str) -> HeldFile | None:
        row = self._db.execute(
            f"SELECT {_FILE_COLUMNS} FROM files WHERE sha256 = ?",  # noqa: S608
            (sha256,),
        ).fetchone()
        return _file(row) if row is not None else None

    def put_file(self, held: HeldFile, when: float) -> None:
        """Records a verified file; unless some repository wants it, its grace period starts."""
        self._write(
            [
                (
                    f"INSERT OR REPLACE INTO files ({_FILE_COLUMNS}) "  # noqa: S608
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, "
                    "CASE WHEN EXISTS (SELECT 1 FROM wanted WHERE sha256 = ?) "
                    "THEN NULL ELSE ? END, "
                    "?, ?)",
                    (
                        held.sha256,
                        held.size,
                        held.name,
                        str(held.path),
                        int(held.owned),
                        held.mtime_ns,
                        held.info_hash_v1,
                        held.info_hash_v2,
                        held.piece_length,
                        held.torrent,
                        json.dumps(list(held.upstream_urls)),
                        json.dumps(list(held.web_seeds)),
                        held.sha256,
                        when,
                        int(held.was_wanted),
                        held.resume,
                    ),
                )
            ]
        )

    def set_resume(self, sha256: str, resume: bytes) -> None:
        self._write([("UPDATE files SET resume = ? WHERE sha256 = ?", (resume, sha256))])

    def delete_file(self, sha256: str) -> None:
        self._write([("DELETE FROM files WHERE sha256 = ?", (sha256,))])

    def expired(self, now: float, grace_period: float) -> list[HeldFile]:
        """Held files nobody has wanted for at least `grace_period` seconds."""
        rows = self._db.execute(
            f"SELECT {_FILE_COLUMNS} FROM files "  # noqa: S608
            "WHERE missing_since IS NOT NULL AND missing_since <= ? ORDER BY sha256",
            (now - grace_period,),
        )
        return [_file(row) for row in rows]
