"""The edge's cache on disk: content-addressed package files, path records, indexes.

Theory of operation.

- Package files (immutable) live at `blobs/sha256/ab/abcdef...`, named by
  their SHA-256. A blob is only ever created by `BlobStore.commit`, which
  renames a fully written, fsynced temporary file into place after its caller
  checked the SHA-256. A process killed mid-download leaves only a file under
  `tmp/`, and `open()` deletes everything there: a cut-short file is never
  served as whole.
- `PathIndex` maps a request's cache key (origin + archive path) to the blob
  that answers it. It is an append-only journal of JSON lines (a torn last
  line is ignored), compacted at start-up; records whose blob is gone are
  dropped. On a full disk the compaction is skipped (the journal as it is
  stays valid), so an edge starts on a full cache disk and serves.
- Blobs are bounded by `max_bytes`, least recently used first, except pinned
  ones (pins persist in `pins.json`; at most `MAX_PINS`), and by the disk:
  `make_room` evicts the same way until the file system has room for a file
  about to be written, so a limit larger than the disk never fills it. Small
  blobs are also kept in a bounded in-memory tier, because serving a 60 KB
  file from memory is ~8x cheaper
  than from a file (the reference notes' measurement).
- Index files (volatile, named by URL path) live in `IndexStore` with their
  upstream validators (Last-Modified, ETag) and fetch time. They are not
  counted against `max_bytes`: their number is bounded by the upstreams'
  suites, and evicting them would break serving while the upstream is down.

All methods run on the event loop's thread (state has one writer); the only
blocking calls are short file-system operations on local disk.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import asdict, dataclass
from email.utils import parsedate_to_datetime
from pathlib import Path

from aptmesh import logs
from aptmesh.files import fsync_dir, write_atomic

log = logs.get(__name__)

_HEX64 = re.compile(r"^[0-9a-f]{64}$")
# Most pinned hashes: pins.json stays under 700 KB, and each pin rewrites it whole.
MAX_PINS = 10_000


class TooManyPins(Exception):
    """Pinning one more would pass MAX_PINS; the text says so (safe to send back)."""


@dataclass
class Blob:
    sha256: str
    size: int
    path: Path


@dataclass(frozen=True)
class CacheStats:
    size_bytes: int
    limit_bytes: int
    entries: int
    pinned_entries: int
    memory_bytes: int


class BlobStore:
    """Owns the content-addressed package files under `blobs/` (LRU order, size limit, pins)
    and the memory tier of the small ones; a blob is only ever renamed in after its SHA-256
    matched."""

    def __init__(
        self,
        root: Path,
        max_bytes: int,
        memory_bytes: int = 0,
        memory_file_max_bytes: int = 0,
        on_evict: Callable[[str], None] | None = None,
    ) -> None:
        self.root = root
        self.max_bytes = max_bytes
        self.memory_bytes = memory_bytes
        self.memory_file_max_bytes = memory_file_max_bytes
        self.tmp_dir = root / "tmp"
        self._blob_dir = root / "blobs" / "sha256"
        self._pins_file = root / "pins.json"
        self._blobs: OrderedDict[str, Blob] = OrderedDict()  # LRU order: oldest first
        self._memory: OrderedDict[str, bytes] = OrderedDict()
        self._memory_used = 0
        self._size = 0
        self._pins: set[str] = set()
        self._on_evict = on_evict

    def open(self) -> None:
        """Discards interrupted writes and rebuilds the index from the files on disk."""
        if self.tmp_dir.exists():
            shutil.rmtree(self.tmp_dir)
        self.tmp_dir.mkdir(parents=True)
        self._blob_dir.mkdir(parents=True, exist_ok=True)
        found: list[tuple[float, Blob]] = []
        for sub in self._blob_dir.iterdir():
            for path in sub.iterdir() if sub.is_dir() else ():
                if not _HEX64.match(path.name) or sub.name != path.name[:2]:
                    path.unlink()
                    continue
                stat = path.stat()
                found.append((stat.st_mtime, Blob(path.name, stat.st_size, path)))
        for _, blob in sorted(found, key=lambda item: item[0]):
            self._blobs[blob.sha256] = blob
            self._size += blob.size
        if self._pins_file.exists():
            with contextlib.suppress(ValueError, OSError):
                self._pins = {p for p in json.loads(self._pins_file.read_text()) if _HEX64.match(p)}
        self._evict()

    def blob_path(self, sha256: str) -> Path:
        return self._blob_dir / sha256[:2] / sha256

    def new_tmp(self) -> Path:
        return self.tmp_dir / f"{uuid.uuid4().hex}.part"

    def get(self, sha256: str) -> Blob | None:
        """The blob, marked as just used; None if absent (or deleted behind our back)."""
        blob = self._blobs.get(sha256)
        if blob is None:
            return None
        self._blobs.move_to_end(sha256)
        return blob

    def memory(self, blob: Blob) -> bytes | None:
        """The blob's bytes from the memory tier, loading them if the blob is small enough."""
        data = self._memory.get(blob.sha256)
        if data is not None:
            self._memory.move_to_end(blob.sha256)
            return data
        if blob.size > self.memory_file_max_bytes or blob.size > self.memory_bytes:
            return None
        try:
            data = blob.path.read_bytes()
        except FileNotFoundError:
            self._forget(blob.sha256)
            return None
        if len(data) != blob.size:
            return None
        self._memory[blob.sha256] = data
        self._memory_used += len(data)
        while self._memory_used > self.memory_bytes:
            _, old = self._memory.popitem(last=False)
            self._memory_used -= len(old)
        return data

    def in_memory(self, sha256: str) -> bool:
        """True if the memory tier holds the blob (marking it, and the blob, as just used)."""
        if sha256 not in self._memory:
            return False
        self._memory.move_to_end(sha256)
        self._blobs.move_to_end(sha256)
        return True

    def commit(self, tmp: Path, sha256: str, size: int) -> Blob:
        """Moves a verified, fsynced temporary file into the store."""
        if not _HEX64.match(sha256):
            raise ValueError(f"not a SHA-256: {sha256!r}")
        path = self.blob_path(sha256)
        path.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, path)
        fsync_dir(path.parent)
        old = self._blobs.pop(sha256, None)
        if old is not None:
            self._size -= old.size
        blob = Blob(sha256, size, path)
        self._blobs[sha256] = blob
        self._size += size
        self._evict()
        return blob

    def discard(self, sha256: str) -> None:
        blob = self._blobs.get(sha256)
        if blob is not None:
            with contextlib.suppress(FileNotFoundError):
                blob.path.unlink()
            self._forget(sha256)

    def _forget(self, sha256: str) -> None:
        blob = self._blobs.pop(sha256, None)
        if blob is not None:
            self._size -= blob.size
        data = self._memory.pop(sha256, None)
        if data is not None:
            self._memory_used -= len(data)
        if self._on_evict is not None:
            self._on_evict(sha256)

    def make_room(self, size: int, reserve: int) -> bool:
        """Evicts unpinned blobs, least recently used first, until the cache's file system has
        `size` + `reserve` bytes free; False if it cannot (pins, or other files fill it)."""

        def free() -> int:
            try:
                return shutil.disk_usage(self.tmp_dir).free
            except OSError:
                return size + reserve  # let the write itself tell

        evicted = 0
        for sha256 in [s for s in self._blobs if s not in self._pins]:
            if free() >= size + reserve:
                break
            self.discard(sha256)
            evicted += 1
        if evicted:
            log.info("cache_evicted_for_disk", blobs=evicted, wanted=size)
        return free() >= size + reserve

    def _evict(self) -> None:
        if self._size <= self.max_bytes:
            return
        for sha256 in [s for s in self._blobs if s not in self._pins]:
            if self._size <= self.max_bytes:
                break
            self.discard(sha256)

    def pin(self, sha256: str) -> None:
        if not _HEX64.match(sha256):
            raise ValueError(f"not a SHA-256: {sha256!r}")
        if sha256 in self._pins:
            return
        if len(self._pins) >= MAX_PINS:
            raise TooManyPins(f"at most {MAX_PINS} files may be pinned; unpin some first")
        self._pins.add(sha256)
        write_atomic(self._pins_file, json.dumps(sorted(self._pins)).encode(), self.tmp_dir)

    def unpin(self, sha256: str) -> None:
        self._pins.discard(sha256)
        write_atomic(self._pins_file, json.dumps(sorted(self._pins)).encode(), self.tmp_dir)
        self._evict()

    def stats(self) -> CacheStats:
        return CacheStats(
            size_bytes=self._size,
            limit_bytes=self.max_bytes,
            entries=len(self._blobs),
            pinned_entries=sum(1 for p in self._pins if p in self._blobs),
            memory_bytes=self._memory_used,
        )

    def __contains__(self, sha256: object) -> bool:
        return sha256 in self._blobs


@dataclass(frozen=True)
class PathRecord:
    sha256: str
    size: int
    last_modified: str = ""  # the upstream's Last-Modified header, as sent


class PathIndex:
    """Owns cache key -> blob, as an append-only journal replayed at start-up."""

    def __init__(self, root: Path) -> None:
        self._file = root / "paths.jsonl"
        self._tmp_dir = root / "tmp"
        self._records: dict[str, PathRecord] = {}

    def open(self, blobs: BlobStore) -> None:
        if self._file.exists():
            for line in self._file.read_text(errors="replace").splitlines():
                try:
                    item = json.loads(line)
                    record = PathRecord(item["sha256"], int(item["size"]), item.get("lm", ""))
                    key = str(item["key"])
                except (ValueError, KeyError, TypeError):
                    continue  # a line torn by a kill
                self._records[key] = record
        self._records = {k: r for k, r in self._records.items() if r.sha256 in blobs}
        lines = "".join(self._line(k, r) for k, r in self._records.items())
        try:
            write_atomic(self._file, lines.encode(), self._tmp_dir)
        except OSError as exc:
            if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
                raise
            # The old journal is still whole (write_atomic renames only a complete copy), and
            # replaying it gives the same records: compact at a later start.
            log.warning("cache_journal_not_compacted", error=exc.strerror)

    @staticmethod
    def _line(key: str, record: PathRecord) -> str:
        return (
            json.dumps(
                {
                    "key": key,
                    "sha256": record.sha256,
                    "size": record.size,
                    "lm": record.last_modified,
                }
            )
            + "\n"
        )

    def get(self, key: str) -> PathRecord | None:
        return self._records.get(key)

    def put(self, key: str, record: PathRecord) -> None:
        if self._records.get(key) == record:
            return
        self._records[key] = record
        with self._file.open("a") as out:
            out.write(self._line(key, record))
            out.flush()
            os.fsync(out.fileno())

    def forget_blob(self, sha256: str) -> None:
        for key in [k for k, r in self._records.items() if r.sha256 == sha256]:
            del self._records[key]


@dataclass
class IndexMeta:
    sha256: str
    size: int
    last_modified: str  # upstream's validators, sent back in conditional requests
    etag: str
    fetched_at: float  # wall clock of the last fetch or revalidation
    verified: bool  # its hashes were believed (a verified InRelease vouches for it)
    url: str = ""  # scheme://host:port/path as clients named it (to re-learn at start-up)

    def validators(self) -> dict[str, str]:
        """The headers of a conditional request for this copy."""
        headers = {}
        if self.last_modified and not _after(self.last_modified, self.fetched_at):
            # A Last-Modified after the fetch (a replayed or misdated file) would make the
            # upstream answer 304 to every later version dated before it: never send it.
            headers["If-Modified-Since"] = self.last_modified
        if self.etag:
            headers["If-None-Match"] = self.etag
        return headers


def _after(http_date: str, when: float) -> bool:
    """Whether an HTTP date is later than `when` (a date that does not parse counts as later)."""
    try:
        return parsedate_to_datetime(http_date).timestamp() > when
    except (TypeError, ValueError, IndexError):
        return True


@dataclass(frozen=True)
class IndexEntry:
    key: str
    path: Path
    meta: IndexMeta


class IndexStore:
    """Owns the volatile index files by cache key, each with its validators and fetch time."""

    def __init__(self, root: Path) -> None:
        self._data = root / "index"
        self._meta = root / "index-meta"
        self._tmp_dir = root / "tmp"
        self._entries: dict[str, IndexEntry] = {}

    def open(self) -> None:
        self._data.mkdir(parents=True, exist_ok=True)
        self._meta.mkdir(parents=True, exist_ok=True)

    def get(self, key: str) -> IndexEntry | None:
        entry = self._entries.get(key)
        if entry is not None:
            return entry
        meta_path = self._meta / f"{key}.json"
        data_path = self._data / key
        try:
            meta = IndexMeta(**json.loads(meta_path.read_text()))
            size = data_path.stat().st_size
        except (OSError, ValueError, TypeError):
            return None
        if size != meta.size:
            return None
        entry = IndexEntry(key, data_path, meta)
        self._entries[key] = entry
        return entry

    def put(self, key: str, tmp: Path, meta: IndexMeta) -> IndexEntry:
        """Moves a fetched, verified, fsynced temporary file in; the metadata goes last."""
        data_path = self._data / key
        data_path.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, data_path)
        try:
            fsync_dir(data_path.parent)
            self._write_meta(key, meta)
        except OSError:
            # The data moved in but its metadata did not (a full disk): a data file must
            # never stand beside an older file's metadata, so both go.
            self._entries.pop(key, None)
            data_path.unlink(missing_ok=True)
            (self._meta / f"{key}.json").unlink(missing_ok=True)
            raise
        entry = IndexEntry(key, data_path, meta)
        self._entries[key] = entry
        return entry

    def touch(self, key: str, fetched_at: float) -> IndexEntry | None:
        entry = self.get(key)
        if entry is None:
            return None
        entry.meta.fetched_at = fetched_at
        self._write_meta(key, entry.meta)
        return entry

    def remove(self, key: str) -> None:
        """Forgets an index: its metadata first (a data file without it is never read)."""
        self._entries.pop(key, None)
        (self._meta / f"{key}.json").unlink(missing_ok=True)
        (self._data / key).unlink(missing_ok=True)

    def _write_meta(self, key: str, meta: IndexMeta) -> None:
        write_atomic(self._meta / f"{key}.json", json.dumps(asdict(meta)).encode(), self._tmp_dir)

    def all(self) -> list[IndexEntry]:
        """Every stored index (read at start-up to teach the verifier again)."""
        found = []
        for meta_path in self._meta.rglob("*.json"):
            key = str(meta_path.relative_to(self._meta))[: -len(".json")]
            entry = self.get(key)
            if entry is not None:
                found.append(entry)
        return found

    def stats(self) -> tuple[int, int]:
        """(entries, bytes) of the indexes looked at since start-up."""
        return len(self._entries), sum(e.meta.size for e in self._entries.values())
