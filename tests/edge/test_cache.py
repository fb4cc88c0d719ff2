"""The on-disk cache: content addressing, restarts, interrupted writes, LRU, pins, memory."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from aptmesh_edge import cache
from aptmesh_edge.cache import BlobStore, IndexMeta, IndexStore, PathIndex, PathRecord


def put(store: BlobStore, data: bytes) -> str:
    sha = hashlib.sha256(data).hexdigest()
    tmp = store.new_tmp()
    tmp.write_bytes(data)
    store.commit(tmp, sha, len(data))
    return sha


def test_blobs_are_content_addressed_and_survive_a_restart(tmp_path: Path) -> None:
    store = BlobStore(tmp_path, 10_000)
    store.open()
    sha = put(store, b"x" * 100)
    assert store.blob_path(sha) == tmp_path / "blobs" / "sha256" / sha[:2] / sha
    (store.tmp_dir / "interrupted.part").write_bytes(b"half a file")
    (store.blob_path(sha).parent / "not-a-hash").write_bytes(b"junk")
    again = BlobStore(tmp_path, 10_000)
    again.open()
    blob = again.get(sha)
    assert blob is not None and blob.size == 100
    assert list(again.tmp_dir.iterdir()) == []
    assert not (store.blob_path(sha).parent / "not-a-hash").exists()
    assert again.stats().entries == 1


def test_least_recently_used_unpinned_blobs_are_evicted(tmp_path: Path) -> None:
    evicted: list[str] = []
    store = BlobStore(tmp_path, 300, on_evict=evicted.append)
    store.open()
    a, b, c = (put(store, bytes([n]) * 100) for n in range(3))
    store.pin(a)
    assert store.get(b) is not None  # b used after c was added: c is now the oldest unpinned
    d = put(store, b"d" * 100)
    assert evicted == [c]
    assert set(s for s in (a, b, c, d) if s in store) == {a, b, d}
    # Pins persist across restarts.
    again = BlobStore(tmp_path, 200, on_evict=evicted.append)
    again.open()
    assert a in again and again.stats().pinned_entries == 1 and again.stats().size_bytes <= 200
    again.unpin(a)
    assert again.stats().pinned_entries == 0


def test_memory_tier_is_bounded(tmp_path: Path) -> None:
    store = BlobStore(tmp_path, 10_000, memory_bytes=250, memory_file_max_bytes=100)
    store.open()
    small = [put(store, bytes([n]) * 100) for n in range(3)]
    big = put(store, b"B" * 150)
    for sha in small:
        blob = store.get(sha)
        assert blob is not None and store.memory(blob) == blob.path.read_bytes()
    assert store.stats().memory_bytes == 200  # the first was dropped for the third
    blob = store.get(big)
    assert blob is not None and store.memory(blob) is None


def test_path_index_replays_and_ignores_a_torn_line(tmp_path: Path) -> None:
    store = BlobStore(tmp_path, 10_000)
    store.open()
    sha = put(store, b"package")
    paths = PathIndex(tmp_path)
    paths.open(store)
    paths.put("origin/pool/a.deb", PathRecord(sha, 7, "Wed, 01 Jan 2025 00:00:00 GMT"))
    paths.put("origin/pool/gone.deb", PathRecord("f" * 64, 1))
    with (tmp_path / "paths.jsonl").open("a") as out:
        out.write('{"key": "origin/pool/torn.deb", "sha2')
    again = PathIndex(tmp_path)
    again.open(store)
    assert again.get("origin/pool/a.deb") == PathRecord(sha, 7, "Wed, 01 Jan 2025 00:00:00 GMT")
    assert again.get("origin/pool/gone.deb") is None  # its blob is not in the store
    assert again.get("origin/pool/torn.deb") is None


def test_index_store_keeps_validators(tmp_path: Path) -> None:
    (tmp_path / "tmp").mkdir()
    store = IndexStore(tmp_path)
    store.open()
    tmp = tmp_path / "tmp" / "x.part"
    tmp.write_bytes(b"index")
    meta = IndexMeta("0" * 64, 5, "Wed, 01 Jan 2025 00:00:00 GMT", '"e"', 10.0, True)
    store.put("origin/dists/stable/InRelease", tmp, meta)
    again = IndexStore(tmp_path)
    entry = again.get("origin/dists/stable/InRelease")
    assert entry is not None and entry.meta == meta and entry.path.read_bytes() == b"index"
    touched = again.touch("origin/dists/stable/InRelease", 20.0)
    reread = IndexStore(tmp_path).get("origin/dists/stable/InRelease")
    assert touched is not None and reread is not None and reread.meta.fetched_at == 20.0
    assert [e.key for e in IndexStore(tmp_path).all()] == ["origin/dists/stable/InRelease"]


def test_pins_are_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cache, "MAX_PINS", 3)
    store = BlobStore(tmp_path, 10_000)
    store.open()
    for n in range(3):
        store.pin(f"{n:064x}")
    store.pin(f"{0:064x}")  # pinning a pinned hash again is no new pin
    with pytest.raises(cache.TooManyPins, match="at most 3"):
        store.pin(f"{9:064x}")
    store.unpin(f"{0:064x}")
    store.pin(f"{9:064x}")
    assert json.loads((tmp_path / "pins.json").read_text()) == [f"{n:064x}" for n in (1, 2, 9)]
