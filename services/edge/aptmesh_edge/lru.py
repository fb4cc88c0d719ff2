"""A least-recently-used map bounded by bytes, for what outsiders' requests can add to.

Entry counts do not bound memory when the keys are request targets (an attacker
picks their length), so each entry is put with its cost in bytes: the key's
length plus what the caller says its value holds, plus `ENTRY_OVERHEAD` for the
dict slot, the key object and the value's object headers. The map evicts the least
recently used entries until the sum is at most `max_bytes`; an entry costing more
than `max_bytes` on its own is not kept. One writer (the event loop), no lock.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Generic, TypeVar

V = TypeVar("V")

# Bytes a small entry really costs in CPython beyond its key's characters: the dict
# slot, the str header, a frozen dataclass and a tuple or two (measured with
# tracemalloc on Resource values: ~600 B; rounded up).
ENTRY_OVERHEAD = 768


class ByteLru(Generic[V]):
    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._entries: OrderedDict[str, tuple[V, int]] = OrderedDict()
        self._bytes = 0

    def get(self, key: str) -> V | None:
        item = self._entries.get(key)
        if item is None:
            return None
        self._entries.move_to_end(key)
        return item[0]

    def put(self, key: str, value: V, value_bytes: int = 0) -> None:
        self.pop(key)
        cost = len(key) + value_bytes + ENTRY_OVERHEAD
        if cost > self.max_bytes:
            return
        self._entries[key] = (value, cost)
        self._bytes += cost
        while self._bytes > self.max_bytes:
            _, (_, old) = self._entries.popitem(last=False)
            self._bytes -= old

    def pop(self, key: str) -> None:
        item = self._entries.pop(key, None)
        if item is not None:
            self._bytes -= item[1]

    @property
    def bytes(self) -> int:
        """The sum of the entries' costs (at most `max_bytes`)."""
        return self._bytes

    def __len__(self) -> int:
        return len(self._entries)
