"""The collections' storage: the contract, its rules written once, an in-memory fake.

Theory of operation. A backend keeps rows (`CollectionTable`: memory, SQLite,
PostgreSQL; `tests/tracker/test_collection_store.py` runs one suite against
every backend through `CollectionStore`). `CollectionStore` holds every rule:
a collection's version is 1 at definition and one more at each update;
`expected_version` (0: must not exist yet) makes a define or an update fail
with `VersionConflict` instead of overwriting a change it did not see; a
deleted collection takes its edges' reports with it; a report on a collection
that does not exist is dropped (an edge may report just after a delete).

Rows hold the spec and reports as protobuf JSON (`aptmesh.collection`'s wire
conversions), so the one translation of the records is also the storage one.
The compare-and-set of `put` runs in the backend (`write` with the version it
read), so two replicas updating at once cannot both win.

Threads: as the index (`index_store`): every method runs in a store thread.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol

from google.protobuf import json_format

from aptmesh import collection as col
from aptmesh.v1 import collection_pb2

Clock = Callable[[], float]
Row = tuple[str, int, float]  # spec JSON, version, updated_at


class VersionConflict(Exception):
    """The collection's version is not the one the caller expected; the text says both."""


class CollectionTable(Protocol):
    def read(self, name: str) -> Row | None: ...

    def read_all(self) -> list[Row]: ...

    def write(self, name: str, row: Row, previous: int) -> bool:
        """Stores `row` if the stored version is still `previous` (0: no row); whether it did."""
        ...

    def delete(self, name: str) -> bool:
        """Deletes the collection and its reports; whether it existed."""
        ...

    def put_report(self, name: str, edge_id: str, report: str) -> bool:
        """Stores an edge's report if the collection exists; whether it did."""
        ...

    def reports(self, name: str) -> list[str]: ...

    def close(self) -> None: ...


def _spec_json(spec: col.CollectionSpec) -> str:
    return json_format.MessageToJson(col.spec_to_proto(spec), indent=None, sort_keys=True)


def _collection(row: Row) -> col.Collection:
    spec_json, version, updated_at = row
    msg = json_format.Parse(spec_json, collection_pb2.CollectionSpec())
    return col.Collection(col.spec_from_proto(msg), version, updated_at)


class CollectionStore:
    """The rules of collections over one table (see the module's docstring)."""

    def __init__(self, table: CollectionTable, clock: Clock = time.time) -> None:
        self._table = table
        self._clock = clock

    def put(self, spec: col.CollectionSpec, expected_version: int | None = None) -> col.Collection:
        """Defines or updates; raises VersionConflict (see the module's docstring)."""
        existing = self._table.read(spec.name)
        previous = existing[1] if existing else 0
        if expected_version is not None and expected_version != previous:
            raise VersionConflict(_conflict(spec.name, expected_version, previous))
        row: Row = (_spec_json(spec), previous + 1, self._clock())
        if not self._table.write(spec.name, row, previous):
            now = self._table.read(spec.name)
            raise VersionConflict(_conflict(spec.name, previous, now[1] if now else 0))
        return _collection(row)

    def get(self, name: str) -> col.Collection | None:
        row = self._table.read(name)
        return _collection(row) if row else None

    def all(self, zone: str = "") -> list[col.Collection]:
        every = sorted((_collection(r) for r in self._table.read_all()), key=lambda c: c.name)
        return [c for c in every if not zone or c.spec.targets(zone)]

    def delete(self, name: str) -> bool:
        return self._table.delete(name)

    def report(self, status: col.EdgeStatus) -> bool:
        stamped = col.status_to_proto(status)
        stamped.reported_at = self._clock()
        text = json_format.MessageToJson(stamped, indent=None, sort_keys=True)
        return self._table.put_report(status.collection, status.edge_id, text)

    def reports(self, name: str) -> list[col.EdgeStatus]:
        out = []
        for text in self._table.reports(name):
            msg = json_format.Parse(text, collection_pb2.EdgeCollectionStatus())
            out.append(col.status_from_proto(msg))
        return sorted(out, key=lambda s: s.edge_id)

    def close(self) -> None:
        self._table.close()


def _conflict(name: str, expected: int, found: int) -> str:
    if expected == 0:
        return f"collection {name!r} exists already (version {found}); use update"
    if found == 0:
        return f"collection {name!r} does not exist; use define"
    return f"collection {name!r} is at version {found}, not {expected}: someone changed it"


class MemoryCollections:
    """The in-memory table: nothing survives the process."""

    def __init__(self) -> None:
        self._rows: dict[str, Row] = {}
        self._reports: dict[str, dict[str, str]] = {}

    def read(self, name: str) -> Row | None:
        return self._rows.get(name)

    def read_all(self) -> list[Row]:
        return list(self._rows.values())

    def write(self, name: str, row: Row, previous: int) -> bool:
        current = self._rows.get(name)
        if (current[1] if current else 0) != previous:
            return False
        self._rows[name] = row
        return True

    def delete(self, name: str) -> bool:
        self._reports.pop(name, None)
        return self._rows.pop(name, None) is not None

    def put_report(self, name: str, edge_id: str, report: str) -> bool:
        if name not in self._rows:
            return False
        self._reports.setdefault(name, {})[edge_id] = report
        return True

    def reports(self, name: str) -> list[str]:
        return list(self._reports.get(name, {}).values())

    def close(self) -> None:
        pass
