"""Reading a repository: over HTTP(S) from an upstream, or from a local mirror directory.

A `Source` hands out raw bytes and files; it checks nothing (`sync` does, with
`aptmesh.debian`). aiohttp's errors are translated here into `SourceError`,
the upstream's fault, which fails a sync without counting as a verification
failure. Upstream bytes are reported through `on_bytes(kind, n)`, kind being
"index" or "package", so the metrics and the tests see every byte fetched.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import aiohttp

from aptmesh.debian import PackageHashError

OnBytes = Callable[[str, int], None]
_CHUNK = 1 << 20


class SourceError(Exception):
    """The upstream or the mirror directory failed to deliver a file (not a bad signature).

    `missing` is True when the file is not there (HTTP 404 or 410, no such file in the
    mirror): the answer that sends apt, and the seeder, to the next form or variant.
    """

    def __init__(self, message: str, *, missing: bool = False) -> None:
        super().__init__(message)
        self.missing = missing


@dataclass(frozen=True)
class Fetched:
    """An InRelease poll: `data` is None when the server said 304 Not Modified."""

    data: bytes | None
    etag: str = ""
    last_modified: str = ""


class Source(Protocol):
    def url(self, path: str) -> str | None:
        """The URL of `path` (relative to the archive root) for clients, if there is one."""

    def local_path(self, path: str) -> Path | None:
        """For a local mirror: the file itself, seeded in place."""

    async def poll(self, path: str, etag: str, last_modified: str) -> Fetched:
        """`path` (a suite's InRelease or Release), conditionally on the validators given."""

    async def index(self, path: str) -> bytes: ...

    async def download(
        self, path: str, dest: Path, size: int, on_progress: Callable[[int], None]
    ) -> None:
        """Writes the file at `path` to `dest`; PackageHashError if it exceeds `size` bytes."""

    async def close(self) -> None: ...


def _nop(kind: str, n: int) -> None:
    del kind, n


def _check_status(url: str, status: int) -> None:
    if status != 200:
        raise SourceError(f"fetching {url}: HTTP {status}", missing=status in (404, 410))


class HttpSource:
    """An archive on an HTTP(S) server; InRelease is polled with conditional requests."""

    def __init__(
        self,
        base_url: str,
        *,
        timeout: float = 60.0,
        on_bytes: OnBytes = _nop,
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._timeout = aiohttp.ClientTimeout(total=None, sock_connect=timeout, sock_read=timeout)
        self._on_bytes = on_bytes
        self._session = session
        self._owns_session = session is None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            # The archive's bytes exactly as Release and Packages hash them: no
            # content coding asked for, none undone (a `.gz` file served with
            # `Content-Encoding: gzip` must stay compressed).
            self._session = aiohttp.ClientSession(
                timeout=self._timeout,
                headers={"User-Agent": "aptmesh-seeder", "Accept-Encoding": "identity"},
                auto_decompress=False,
            )
        return self._session

    def url(self, path: str) -> str:
        return f"{self.base_url}/{path}"

    def local_path(self, path: str) -> None:
        return None

    async def poll(self, path: str, etag: str, last_modified: str) -> Fetched:
        url = self.url(path)
        headers = {}
        if etag:
            headers["If-None-Match"] = etag
        if last_modified:
            headers["If-Modified-Since"] = last_modified
        try:
            async with self._client().get(url, headers=headers) as response:
                if response.status == 304:
                    return Fetched(None, etag, last_modified)
                _check_status(url, response.status)
                data = await response.read()
                self._on_bytes("index", len(data))
                return Fetched(
                    data,
                    response.headers.get("ETag", ""),
                    response.headers.get("Last-Modified", ""),
                )
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise SourceError(f"fetching {url}: {exc or type(exc).__name__}") from None

    async def index(self, path: str) -> bytes:
        url = self.url(path)
        try:
            async with self._client().get(url) as response:
                _check_status(url, response.status)
                data = await response.read()
                self._on_bytes("index", len(data))
                return data
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise SourceError(f"fetching {url}: {exc or type(exc).__name__}") from None

    async def download(
        self, path: str, dest: Path, size: int, on_progress: Callable[[int], None]
    ) -> None:
        url = self.url(path)
        received = 0
        try:
            async with self._client().get(url) as response:
                _check_status(url, response.status)
                with dest.open("wb") as out:
                    async for chunk in response.content.iter_chunked(_CHUNK):
                        received += len(chunk)
                        self._on_bytes("package", len(chunk))
                        if received > size:
                            raise PackageHashError(
                                f"checking {path}: more than the {size} bytes Packages gives"
                            )
                        out.write(chunk)
                        on_progress(len(chunk))
                    out.flush()
                    await asyncio.to_thread(os.fsync, out.fileno())
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise SourceError(f"fetching {url}: {exc or type(exc).__name__}") from None

    async def close(self) -> None:
        if self._owns_session and self._session is not None:
            await self._session.close()
            self._session = None


class MirrorSource:
    """A local mirror directory (debmirror, apt-mirror): files are read, never copied."""

    def __init__(self, root: Path, *, webseed: str | None = None) -> None:
        self.root = root
        self.webseed = webseed.rstrip("/") if webseed else None

    def url(self, path: str) -> str | None:
        return f"{self.webseed}/{path}" if self.webseed else None

    def local_path(self, path: str) -> Path:
        return self.root / path

    def _read(self, path: str) -> bytes:
        try:
            return (self.root / path).read_bytes()
        except OSError as exc:
            raise SourceError(
                f"reading {self.root / path}: {exc.strerror}",
                missing=isinstance(exc, FileNotFoundError),
            ) from None

    async def poll(self, path: str, etag: str, last_modified: str) -> Fetched:
        return Fetched(await asyncio.to_thread(self._read, path))

    async def index(self, path: str) -> bytes:
        return await asyncio.to_thread(self._read, path)

    async def download(
        self, path: str, dest: Path, size: int, on_progress: Callable[[int], None]
    ) -> None:
        raise SourceError(f"a local mirror is seeded in place, never copied ({path})")

    async def close(self) -> None:
        return None
