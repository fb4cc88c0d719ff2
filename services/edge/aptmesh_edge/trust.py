"""What the edge believes about files: InRelease -> Packages -> package files (aptmesh.debian).

A `Verifier` is told about every index file that passes through (`check_index`)
and answers what a package file must be (`expected`). `release_for` names the
InRelease that must be checked before an index can be believed, so the caller
fetches it first. `NullVerifier` believes nothing (verify_mode off).

`ReleaseVerifier` is the edge's `Verifier`. It keeps, per upstream and suite,
the `Release` whose InRelease verified against the keyring, and per package
file the SHA-256 and size its verified `Packages` entry gives. An index file
under `dists/<suite>/` is believed only if that Release lists it with the
same size and SHA-256 (by-hash copies included).

Modes: `enforce` refuses whatever does not verify. `auto` refuses what is
proven wrong (a bad signature, a hash mismatch) but passes through what it
cannot check (no keyring, a key it does not hold, a suite without InRelease)
unverified: such files are served but nothing is learned from them, so
package files they name are passed through, never cached.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

from aptmesh import debian, logs
from aptmesh.debian import FileHash
from aptmesh_edge.urls import Resource

log = logs.get(__name__)


class VerificationFailed(Exception):
    """An index does not verify; `kind` labels the metric, the text is safe for clients."""

    def __init__(self, kind: str, text: str) -> None:
        super().__init__(text)
        self.kind = kind
        self.text = text


class Verifier(Protocol):
    """What the logic asks of the edge's beliefs (see the module's docstring)."""

    def release_for(self, resource: Resource) -> Resource | None:
        """The InRelease that vouches for `resource` (an index), or None if none is needed."""
        ...

    async def check_index(self, resource: Resource, path: Path, sha256: str, size: int) -> bool:
        """Checks a freshly fetched index; True if verified (and learned), False if accepted
        unverified; raises VerificationFailed if it must be refused."""
        ...

    def expected(self, resource: Resource) -> FileHash | None:
        """A package file's SHA-256 and size from a verified index, if known."""
        ...

    def locate(self, sha256: str) -> Resource | None:
        """A package file the verified indexes list with this SHA-256."""
        ...

    def keeps_unverified(self) -> bool:
        """Whether files no verified index vouches for may be cached (only with verify off)."""
        ...


class NullVerifier:
    """verify_mode off: every file is accepted, cached by the hash of its bytes."""

    def release_for(self, resource: Resource) -> Resource | None:
        return None

    async def check_index(self, resource: Resource, path: Path, sha256: str, size: int) -> bool:
        return False

    def expected(self, resource: Resource) -> FileHash | None:
        return None

    def locate(self, sha256: str) -> Resource | None:
        return None

    def keeps_unverified(self) -> bool:
        return True


Mode = Literal["enforce", "auto"]
_ROOT_NAMES = {"InRelease", "Release", "Release.gpg"}


@dataclass(frozen=True)
class SuitePath:
    """An index path split at its suite: `<archive>dists/<suite>/` + `rest`."""

    archive: str  # "debian/" or "" (with its trailing slash)
    suite: str
    rest: str  # relative to dists/<suite>/, e.g. "main/binary-amd64/Packages.xz"

    @property
    def inrelease(self) -> str:
        return f"{self.archive}dists/{self.suite}/InRelease"


def split_suite(path: str) -> SuitePath | None:
    """Pure: where the suite directory is in an archive path (None outside `dists/`)."""
    parts = path.split("/")
    if "dists" not in parts[:-2]:
        return None
    at = parts.index("dists")
    archive = "".join(p + "/" for p in parts[:at])
    return SuitePath(archive, parts[at + 1], "/".join(parts[at + 2 :]))


class ReleaseVerifier:
    """Owns what the verified indexes say: per upstream and suite the `Release` whose InRelease
    verified, per package file its SHA-256 and size, per SHA-256 where an index lists it."""

    def __init__(self, keyring: Path | None, mode: Mode = "enforce") -> None:
        self._keyring = keyring
        self._mode = mode
        self._releases: dict[str, debian.Release] = {}  # origin key + suite dir -> Release
        self._expected: dict[str, FileHash] = {}  # package cache key -> its index entry
        self._located: dict[str, Resource] = {}  # package SHA-256 -> where an index lists it

    def release_for(self, resource: Resource) -> Resource | None:
        where = split_suite(resource.path)
        if where is None or where.rest in _ROOT_NAMES:
            return None
        return Resource(resource.origin, where.inrelease, resource.backends)

    def expected(self, resource: Resource) -> FileHash | None:
        return self._expected.get(resource.key)

    def locate(self, sha256: str) -> Resource | None:
        return self._located.get(sha256)

    def keeps_unverified(self) -> bool:
        return False

    async def check_index(self, resource: Resource, path: Path, sha256: str, size: int) -> bool:
        where = split_suite(resource.path)
        if where is None:
            return self._unverifiable(resource, "it is not under dists/<suite>/")
        suite_key = f"{resource.origin.key}/{where.archive}dists/{where.suite}"
        if where.rest == "InRelease":
            return await self._check_inrelease(resource, path, suite_key)
        if where.rest in _ROOT_NAMES:
            # apt checks Release with Release.gpg itself; the edge learns only from InRelease.
            return False
        release = self._releases.get(suite_key)
        if release is None:
            return self._unverifiable(resource, "no verified InRelease for its suite")
        listed = release.lookup(where.rest)
        if listed is None:
            return self._unverifiable(resource, "its InRelease does not list it")
        if listed.size != size or listed.sha256 != sha256:
            raise VerificationFailed(
                "index_hash",
                f"checking {resource.path}: its size or SHA-256 differs from the signed InRelease",
            )
        if self._is_packages(release, where.rest, sha256):
            data = await asyncio.to_thread(path.read_bytes)
            try:
                entries = await asyncio.to_thread(debian.load_packages, release, where.rest, data)
            except debian.DebianIndexError as exc:
                raise VerificationFailed(exc.kind, str(exc)) from None
            prefix = f"{resource.origin.key}/{where.archive}"
            for entry in entries:
                self._expected[prefix + entry.filename] = FileHash(entry.size, entry.sha256)
                self._located[entry.sha256] = Resource(
                    resource.origin, where.archive + entry.filename, resource.backends
                )
            log.info("packages_learned", index=resource.path, entries=len(entries))
        return True

    @staticmethod
    def _is_packages(release: debian.Release, rest: str, sha256: str) -> bool:
        names = (
            [rest]
            if "/by-hash/" not in f"/{rest}"
            else [name for name, listed in release.files.items() if listed.sha256 == sha256]
        )
        return any(name.rsplit("/", 1)[-1].startswith("Packages") for name in names)

    async def _check_inrelease(self, resource: Resource, path: Path, suite_key: str) -> bool:
        if self._keyring is None:
            return self._unverifiable(resource, "no keyring is configured")
        data = await asyncio.to_thread(path.read_bytes)
        try:
            signed = await asyncio.to_thread(debian.verify_inrelease, data, self._keyring)
            release = debian.parse_release(signed)
        except debian.SignatureError as exc:
            text = str(exc)
            unknown_key = "no public key" in text and "bad:" not in text
            if self._mode == "auto" and unknown_key:
                return self._unverifiable(resource, text)
            raise VerificationFailed("signature", text) from None
        except debian.DebianIndexError as exc:
            raise VerificationFailed(exc.kind, str(exc)) from None
        self._releases[suite_key] = release
        return True

    def _unverifiable(self, resource: Resource, why: str) -> bool:
        if self._mode == "enforce":
            raise VerificationFailed(
                "unverifiable", f"refusing {resource.path}: cannot verify it ({why})"
            )
        log.info("index_unverified", path=resource.path, reason=why)
        return False
