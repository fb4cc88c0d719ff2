"""Which backend holds the index and the registry, chosen by the `store` URL, and their health.

An empty URL is the embedded default (SQLite at `db_path`, one process);
`postgresql://USER:PASSWORD@HOST:PORT/DB` is the shared backend that several
replicas use at once. `open_stores` migrates the schema before anything else
runs; `migrate` does only that (`aptmesh tracker migrate`).

`StoreHealth` is the one place that knows whether each shared store answered
its last call; readiness and the `aptmesh_tracker_store_up` gauge read it, and
the app's refresh and maintenance, the servicers and the Redis peer store
write it.
"""

from __future__ import annotations

import enum
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from aptmesh import logs
from aptmesh_tracker.index_store import IndexStore, MemoryIndex
from aptmesh_tracker.registry_store import MemoryLeases, Registry

log = logs.get(__name__)

Clock = Callable[[], float]
POSTGRES_SCHEMES = ("postgresql://", "postgres://")
POSTGRES_CONNECTIONS = 4  # store threads (and pool connections) per replica


class Backend(enum.Enum):
    MEMORY = "memory"
    SQLITE = "sqlite"
    POSTGRESQL = "postgresql"


def backend_of(url: str) -> Backend:
    if not url:
        return Backend.SQLITE
    if url.startswith(POSTGRES_SCHEMES):
        return Backend.POSTGRESQL
    raise ValueError("must be empty (SQLite at db_path) or a postgresql:// URL")


class Component(enum.Enum):
    """A store the tracker depends on, as health and metrics name it."""

    INDEX = "index"  # the index and the registry
    PEERS = "peers"


class StoreHealth:
    """Whether each store answered its last call; logs each change once."""

    def __init__(self) -> None:
        self._errors: dict[Component, str] = {}
        self._lock = threading.Lock()

    def ok(self, component: Component) -> None:
        if component not in self._errors:  # the common case, on every store call: no lock
            return
        with self._lock:
            was = self._errors.pop(component, None)
        if was is not None:
            log.info("store_recovered", store=component.value)

    def failed(self, component: Component, error: str) -> None:
        with self._lock:
            new = component not in self._errors
            self._errors[component] = error
        if new:
            log.warning("store_unreachable", store=component.value, error=error)

    def up(self, component: Component) -> bool:
        return component not in self._errors

    def problems(self) -> dict[Component, str]:
        with self._lock:
            return dict(self._errors)


@dataclass
class Stores:
    """The index and the registry of one tracker, and what they run on."""

    backend: Backend
    index: IndexStore
    registry: Registry
    threads: int = 1  # store threads the app may run: SQLite has one writer
    health: StoreHealth = field(default_factory=StoreHealth)
    _close: Callable[[], None] = lambda: None

    @property
    def shared(self) -> bool:
        """Whether other replicas write it too (so the app refreshes from it)."""
        return self.backend is Backend.POSTGRESQL

    def close(self) -> None:
        self.index.close()
        self.registry.close()
        self._close()


def memory_stores(clock: Clock = time.time) -> Stores:
    """The in-memory fakes, for tests of what sits above the stores."""
    return Stores(Backend.MEMORY, MemoryIndex(), Registry(MemoryLeases(), clock))


def open_stores(url: str, db_path: Path, clock: Clock = time.time) -> Stores:
    """Opens and migrates the backend `url` names; raises StoreError."""
    if backend_of(url) is Backend.POSTGRESQL:
        from aptmesh_tracker import postgres_store

        pg = postgres_store.PostgresDatabase(url, connections=POSTGRES_CONNECTIONS)
        try:
            index = postgres_store.PostgresIndex(pg)
        except BaseException:
            pg.close()
            raise
        registry = Registry(postgres_store.PostgresLeases(pg), clock)
        return Stores(Backend.POSTGRESQL, index, registry, POSTGRES_CONNECTIONS, _close=pg.close)
    from aptmesh_tracker import sqlite_store

    db = sqlite_store.SqliteDatabase(db_path)
    registry = Registry(sqlite_store.SqliteLeases(db), clock)
    return Stores(Backend.SQLITE, sqlite_store.SqliteIndex(db), registry, _close=db.close)


def migrate(url: str, db_path: Path) -> int:
    """Brings the backend's schema to this version; returns the version."""
    if backend_of(url) is Backend.POSTGRESQL:
        from aptmesh_tracker import postgres_store

        pg = postgres_store.PostgresDatabase(url, connections=1)
        pg.close()
        return pg.version
    from aptmesh_tracker import sqlite_store

    db = sqlite_store.SqliteDatabase(db_path)
    db.close()
    return db.version
