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

Generations (DESIGN integrity rule 5): per suite the verifier keeps the newest
`aptmesh.debian.Generation` it verified, on disk (`state`) so a restart keeps
it; an InRelease older by `Date` is refused as `replay`. Every index is
believed against one generation, the one whose InRelease the edge serves
(`generation` names it, so the caller re-checks an index checked against an
earlier one). A replaced generation still vouches for its `by-hash/` files for
`GENERATION_GRACE` seconds: a client that read the old InRelease a moment ago
still gets the indexes it names.

Modes: `enforce` refuses whatever does not verify. `auto` refuses what is
proven wrong (a bad signature, a hash mismatch) but passes through what it
cannot check (no keyring, a key it does not hold, a suite without InRelease)
unverified: such files are served but nothing is learned from them, so
package files they name are passed through, never cached.
Hosts served because an `allowed_hosts` pattern matches (`Resource.by_pattern`)
are treated as in `auto` whatever the mode: the operator named no key for them,
and a client whose only setting is a proxy line must keep working.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal, Protocol

from aptmesh import debian, logs
from aptmesh.debian import FileHash, Generation
from aptmesh.files import write_atomic
from aptmesh_edge.urls import Resource

log = logs.get(__name__)

# Seconds a replaced generation's Release still vouches for its by-hash indexes (apt reads
# an update's InRelease and its indexes within seconds; archives keep by-hash files longer).
GENERATION_GRACE = 600.0


class KeyringError(OSError):
    """The keyring an enforcing edge needs cannot be read: the edge must not start."""


def check_keyring(keyring: Path) -> None:
    """Raise KeyringError naming the file unless `keyring` can be read and is not empty (an
    edge enforcing verification without it would refuse every index)."""
    try:
        with keyring.open("rb") as f:
            empty = not f.read(1)
    except OSError as exc:
        raise KeyringError(
            f"verify_mode enforce: cannot read the keyring {keyring}: {exc.strerror or exc}"
        ) from None
    if empty:
        raise KeyringError(f"verify_mode enforce: the keyring {keyring} is empty")


REPLAY = "replay"  # the VerificationFailed kind of an InRelease older than the one verified


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

    def generation(self, resource: Resource) -> str | None:
        """The generation (signed Release's SHA-256) that vouches for `resource`'s suite now,
        None if none: an index checked against another one must be checked again."""
        ...

    def by_hash(self, resource: Resource) -> str | None:
        """The `by-hash/SHA256/` path of the copy of `resource` (an index by name) that the
        current generation names, when its Release offers by-hash (Acquire-By-Hash)."""
        ...

    def trust_problem(self) -> str | None:
        """Why this verifier cannot verify anything now (an unreadable keyring), if so."""
        ...

    def locate(self, sha256: str) -> Resource | None:
        """A package file the verified indexes list with this SHA-256."""
        ...

    def keeps_unverified(self) -> bool:
        """Whether files no verified index vouches for may be cached (only with verify off)."""
        ...

    def generations(self) -> list[tuple[str, Generation]]:
        """(suite key, generation) of every InRelease served now, by suite key."""
        ...

    def served(self) -> list[Served]:
        """The generation served now of each suite verified in this process, by suite key."""
        ...


class NullVerifier:
    """verify_mode off: every file is accepted, cached by the hash of its bytes."""

    def release_for(self, resource: Resource) -> Resource | None:
        return None

    async def check_index(self, resource: Resource, path: Path, sha256: str, size: int) -> bool:
        return False

    def expected(self, resource: Resource) -> FileHash | None:
        return None

    def generation(self, resource: Resource) -> str | None:
        return None

    def by_hash(self, resource: Resource) -> str | None:
        return None

    def trust_problem(self) -> str | None:
        return None

    def locate(self, sha256: str) -> Resource | None:
        return None

    def keeps_unverified(self) -> bool:
        return True

    def generations(self) -> list[tuple[str, Generation]]:
        return []

    def served(self) -> list[Served]:
        return []


Mode = Literal["enforce", "auto"]
ROOT_NAMES = frozenset({"InRelease", "Release", "Release.gpg"})


@dataclass(frozen=True)
class SuitePath:
    """An index path split at its suite: `<directory>/` + `rest`."""

    archive: str  # where Packages' Filename paths start: "debian/" or "" (trailing slash)
    directory: str  # the suite's: "debian/dists/stable", or a flat repository's "debian"
    suite: str  # "stable", or "./" for a flat repository (`deb URL ./`)
    rest: str  # relative to the directory, e.g. "main/binary-amd64/Packages.xz"

    def file(self, name: str) -> str:
        return f"{self.directory}/{name}" if self.directory else name


# A flat repository's own files: beside its Release, not under dists/.
_FLAT_NAME = re.compile(r"(In)?Release(\.gpg)?|(Packages|Sources)(\.[a-z0-9]+)?")


def is_release_file(resource: Resource) -> bool:
    """InRelease, Release or Release.gpg of a suite: what vouches for the other indexes."""
    where = split_suite(resource.path)
    return where is not None and where.rest in ROOT_NAMES


def split_suite(path: str) -> SuitePath | None:
    """Pure: where the suite directory is in an archive path (None outside a suite).

    Under `dists/<suite>/`; else a flat repository's Release, Packages or Sources, taken
    as `deb URL ./` (its Filename paths start beside its Release).
    """
    parts = path.split("/")
    if "dists" in parts[:-2]:
        at = parts.index("dists")
        archive = "".join(p + "/" for p in parts[:at])
        return SuitePath(
            archive, "/".join(parts[: at + 2]), parts[at + 1], "/".join(parts[at + 2 :])
        )
    if not _FLAT_NAME.fullmatch(parts[-1]):
        return None
    directory = "/".join(parts[:-1])
    return SuitePath(directory + "/" if directory else "", directory, "./", parts[-1])


@dataclass(frozen=True)
class Served:
    """A suite's generation as this edge serves it: what it reports to the registry."""

    suite: str  # suite key: origin key / suite directory (the same on every edge of a site)
    generation: Generation
    first_seen: float  # wall clock: when this edge first verified it
    release: Resource  # the InRelease (or Release) that carries it: what to revalidate


class GenerationStore:
    """Owns the newest generation verified per suite key and when it was first verified, in
    one JSON file (`path`; None: in memory only). Written atomically on every change:
    generations change a few times a day."""

    def __init__(self, path: Path | None, clock: Callable[[], float] = time.time) -> None:
        self._path = path
        self._clock = clock
        self._known: dict[str, Generation] = {}
        self._seen: dict[str, float] = {}  # suite key -> when its generation was first verified
        if path is None:
            return
        try:
            raw = json.loads(path.read_text())
            self._known = {key: Generation.from_json(value) for key, value in raw.items()}
            # Files written before first-seen times were kept: seen now, at the latest.
            self._seen = {key: float(value.get("seen", clock())) for key, value in raw.items()}
        except FileNotFoundError:
            pass
        except (OSError, ValueError, TypeError, KeyError, AttributeError) as exc:
            # Forgetting is safe only one way: the next InRelease becomes the newest known.
            log.warning("generations_unreadable", path=str(path), reason=str(exc))

    def get(self, key: str) -> Generation | None:
        return self._known.get(key)

    def first_seen(self, key: str) -> float:
        return self._seen.get(key, self._clock())

    def put(self, key: str, generation: Generation) -> None:
        if self._known.get(key) == generation:
            return
        self._known[key] = generation
        self._seen[key] = self._clock()
        if self._path is None:
            return
        data = {k: {**g.to_json(), "seen": self._seen[k]} for k, g in self._known.items()}
        try:
            write_atomic(self._path, json.dumps(data, sort_keys=True).encode())
        except OSError as exc:  # kept in memory; a restart forgets only this change
            log.warning("generations_not_stored", path=str(self._path), reason=exc.strerror)


@dataclass(frozen=True)
class _Replaced:
    release: debian.Release
    until: float  # wall clock: it vouches for its by-hash files until then


class ReleaseVerifier:
    """Owns what the verified indexes say: per upstream and suite the `Release` whose InRelease
    verified (and its generation), per package file its SHA-256 and size, per SHA-256 where an
    index lists it."""

    def __init__(
        self,
        keyring: Path | None,
        mode: Mode = "enforce",
        *,
        state: Path | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._keyring = keyring
        self._mode = mode
        self._clock = clock
        self._generations = GenerationStore(state, clock)
        self._releases: dict[str, debian.Release] = {}  # origin key + suite dir -> Release
        self._forms: dict[str, debian.ReleaseForm] = {}  # suite key -> how it is signed
        self._signatures: dict[str, bytes] = {}  # suite key -> the last Release.gpg seen
        self._current: dict[str, Generation] = {}  # suite key -> the generation of _releases
        self._release_of: dict[str, Resource] = {}  # suite key -> its verified InRelease
        # Called when a suite's served generation changes (the edge renews its registration).
        self.on_new_generation: Callable[[], None] = lambda: None
        self._replaced: dict[str, list[_Replaced]] = {}  # suite key -> earlier, in grace
        self._expected: dict[str, FileHash] = {}  # package cache key -> its index entry
        self._located: dict[str, Resource] = {}  # package SHA-256 -> where an index lists it

    @staticmethod
    def _suite_key(resource: Resource, where: SuitePath) -> str:
        return f"{resource.origin.key}/{where.directory}"

    def generation(self, resource: Resource) -> str | None:
        where = split_suite(resource.path)
        if where is None:
            return None
        current = self._current.get(self._suite_key(resource, where))
        return None if current is None else current.sha256

    def by_hash(self, resource: Resource) -> str | None:
        where = split_suite(resource.path)
        if where is None or where.rest in ROOT_NAMES or "/by-hash/" in f"/{where.rest}":
            return None
        release = self._releases.get(self._suite_key(resource, where))
        if release is None or not release.acquire_by_hash:
            return None
        listed = release.files.get(where.rest)
        if listed is None:
            return None
        return where.file(debian.by_hash_path(where.rest, listed.sha256))

    def trust_problem(self) -> str | None:
        if self._keyring is None or os.access(self._keyring, os.R_OK):
            return None
        return f"the keyring {self._keyring} cannot be read"

    def release_for(self, resource: Resource) -> Resource | None:
        where = split_suite(resource.path)
        if where is None or where.rest in ROOT_NAMES:
            return None
        form = self._forms.get(self._suite_key(resource, where), debian.ReleaseForm.INRELEASE)
        return replace(resource, path=where.file(form.value))

    def expected(self, resource: Resource) -> FileHash | None:
        return self._expected.get(resource.key)

    def locate(self, sha256: str) -> Resource | None:
        return self._located.get(sha256)

    def keeps_unverified(self) -> bool:
        return False

    def served(self) -> list[Served]:
        return [
            Served(key, generation, self._generations.first_seen(key), self._release_of[key])
            for key, generation in sorted(self._current.items())
        ]

    def generations(self) -> list[tuple[str, Generation]]:
        return [(served.suite, served.generation) for served in self.served()]

    async def check_index(self, resource: Resource, path: Path, sha256: str, size: int) -> bool:
        where = split_suite(resource.path)
        if where is None:
            return self._unverifiable(resource, "it is not under dists/<suite>/")
        suite_key = self._suite_key(resource, where)
        if where.rest == "Release.gpg":
            # Kept for the Release it signs (the caller fetches it first); apt checks it too.
            self._signatures[suite_key] = await asyncio.to_thread(path.read_bytes)
            return False
        if where.rest in ROOT_NAMES:
            form = debian.ReleaseForm(where.rest)
            return await self._check_release(resource, path, suite_key, where.suite, form)
        release = self._releases.get(suite_key)
        if release is None:
            return self._unverifiable(resource, "no verified InRelease for its suite")
        listed = release.lookup(where.rest)
        if listed is None:
            earlier = self._replaced_listing(suite_key, where.rest, sha256, size)
            if earlier:
                return True  # an earlier generation's by-hash copy: served, not learned
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
                # Flat repositories' Filename is often `./name.deb`; request paths lose the `.`.
                filename = "/".join(part for part in entry.filename.split("/") if part != ".")
                self._expected[prefix + filename] = FileHash(entry.size, entry.sha256)
                self._located[entry.sha256] = replace(resource, path=where.archive + filename)
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

    def _replaced_listing(self, suite_key: str, rest: str, sha256: str, size: int) -> bool:
        """Whether a replaced generation still in its grace lists this by-hash file."""
        if "/by-hash/" not in f"/{rest}":
            return False
        now = self._clock()
        held = [r for r in self._replaced.get(suite_key, []) if r.until > now]
        self._replaced[suite_key] = held
        for replaced in held:
            listed = replaced.release.lookup(rest)
            if listed is not None and listed.sha256 == sha256 and listed.size == size:
                return True
        return False

    async def _check_release(
        self, resource: Resource, path: Path, suite_key: str, suite: str, form: debian.ReleaseForm
    ) -> bool:
        if self._keyring is None:
            return self._unverifiable(resource, "no keyring is configured")
        signature = self._signatures.get(suite_key)
        if form is debian.ReleaseForm.DETACHED and signature is None:
            return self._unverifiable(resource, "no Release.gpg for it")
        data = await asyncio.to_thread(path.read_bytes)
        try:
            signed = await asyncio.to_thread(
                debian.verify_release, form, data, self._keyring, signature
            )
            release = debian.parse_release(signed)
            what = f"checking {resource.path}"
            debian.check_suite(release, suite, what)
            debian.check_fresh(release, datetime.fromtimestamp(self._clock(), UTC), what)
            generation = debian.newest(
                Generation.of(release, signed), self._generations.get(suite_key), what
            )
        except debian.ReleaseDateError as exc:
            raise VerificationFailed("release_date", str(exc)) from None
        except debian.SignatureError as exc:
            text = str(exc)
            unknown_key = "no public key" in text and "bad:" not in text
            if (self._mode == "auto" or resource.by_pattern) and unknown_key:
                return self._unverifiable(resource, text)
            raise VerificationFailed("signature", text) from None
        except debian.DebianIndexError as exc:
            raise VerificationFailed(exc.kind, str(exc)) from None
        previous, current = self._releases.get(suite_key), self._current.get(suite_key)
        if current is not None and previous is not None and current != generation:
            self._replaced.setdefault(suite_key, []).append(
                _Replaced(previous, self._clock() + GENERATION_GRACE)
            )
            log.info("generation_replaced", suite=suite_key, date=str(generation.date))
        self._releases[suite_key] = release
        self._forms[suite_key] = form
        self._current[suite_key] = generation
        self._release_of[suite_key] = resource
        self._generations.put(suite_key, generation)
        if current != generation:
            self.on_new_generation()
        return True

    def _unverifiable(self, resource: Resource, why: str) -> bool:
        """Refused in enforce mode; accepted unverified in auto mode, and for hosts served by
        an allowed_hosts pattern (their files pass through, never cached)."""
        if self._mode == "enforce" and not resource.by_pattern:
            raise VerificationFailed(
                "unverifiable", f"refusing {resource.path}: cannot verify it ({why})"
            )
        log.info("index_unverified", path=resource.path, reason=why)
        return False
