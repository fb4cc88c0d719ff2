"""Debian archive indexes: parsing, hash checks, and InRelease signature checks.

Theory of operation. Trust flows down a chain, exactly as apt's does
(DESIGN.md, "Integrity"):

1. `verify_inrelease` runs gpgv on a clearsigned `InRelease` against one
   keyring and returns only the text gpgv says is signed. Nothing outside the
   signature is ever parsed.
2. `parse_release` turns that text into a `Release`, whose `files` map each
   index path (relative to `dists/<suite>/`) to its size and SHA-256.
3. `check_index` / `load_packages` check a `Packages` file (any compressed
   variant, or its `by-hash` copy) against the `Release`, then parse it into
   `PackageEntry` values, each carrying the size and SHA-256 of its pool file.
4. `Sha256Checker` (streaming) and `check_package_bytes` / `check_package_file`
   check a package file against its `PackageEntry`.

Everything here is pure except the gpgv wrapper and `check_package_file`.
Every failure raises a `DebianIndexError` subclass whose message reads
"what I was doing: what disagreed", and whose `kind` is the label of
`aptmesh_verification_failures_total`.
"""

from __future__ import annotations

import bz2
import enum
import gzip
import hashlib
import lzma
import os
import re
import subprocess
import tempfile
import zlib
from base64 import b64decode
from binascii import Error as Base64Error
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from pathlib import Path, PurePosixPath
from typing import NamedTuple

import lz4.frame
import zstandard

# --- errors ----------------------------------------------------------------------------------


class DebianIndexError(Exception):
    """An archive file failed a check; nothing from it may be believed."""

    kind = "index"


class SignatureError(DebianIndexError):
    """InRelease/Release.gpg: bad, missing or unverifiable signature, or unusable keyring."""

    kind = "signature"


class MalformedIndexError(DebianIndexError):
    """A Release or Packages file (or a clearsigned wrapper) does not parse."""

    kind = "malformed"


class IndexHashError(DebianIndexError):
    """An index file's size or SHA-256 disagrees with Release, or Release does not list it."""

    kind = "index_hash"


class PackageHashError(DebianIndexError):
    """A package file's size or SHA-256 disagrees with Packages."""

    kind = "package_hash"


# --- deb822 ----------------------------------------------------------------------------------


class Paragraph(Mapping[str, str]):
    """One deb822 paragraph: ordered fields, looked up case-insensitively.

    A value is the text after the colon with surrounding blanks stripped; a
    multi-line value keeps its continuation lines, joined by "\\n", each with
    its one leading blank removed (so "SHA256:\\n h 1 p" gives "\\nh 1 p").
    """

    __slots__ = ("_fields", "_index")

    def __init__(self, fields: Iterable[tuple[str, str]] = ()) -> None:
        self._fields: dict[str, str] = {}
        self._index: dict[str, str] = {}
        for name, value in fields:
            key = name.lower()
            if key in self._index:
                raise MalformedIndexError(f"parsing deb822: field {name!r} appears twice")
            self._index[key] = name
            self._fields[name] = value

    def __getitem__(self, name: str) -> str:
        return self._fields[self._index[name.lower()]]

    def __iter__(self) -> Iterator[str]:
        return iter(self._fields)

    def __len__(self) -> int:
        return len(self._fields)

    def __repr__(self) -> str:
        return f"Paragraph({list(self._fields.items())!r})"

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Paragraph):
            return list(self._fields.items()) == list(other._fields.items())
        return NotImplemented

    def __hash__(self) -> int:
        return hash(tuple(self._fields.items()))


_FIELD_NAME = re.compile(r"[!-9;-~][!-9;-~]*")  # printable ASCII but ':' and blanks


def parse_deb822(text: str) -> list[Paragraph]:
    """Parse deb822 text (Release, Packages, ...) into paragraphs.

    Paragraphs are separated by blank lines; lines starting with '#' are
    comments; a line starting with a blank continues the previous field.
    """
    paragraphs: list[Paragraph] = []
    fields: list[tuple[str, list[str]]] = []

    def flush() -> None:
        if fields:
            paragraphs.append(Paragraph((n, "\n".join(v)) for n, v in fields))
            fields.clear()

    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.rstrip()
        if not line:
            flush()
        elif line.startswith("#"):
            continue
        elif line[0] in " \t":
            if not fields:
                raise MalformedIndexError(
                    f"parsing deb822 line {number}: continuation line without a field"
                )
            fields[-1][1].append(line[1:])
        else:
            name, colon, value = line.partition(":")
            if not colon or not _FIELD_NAME.fullmatch(name):
                raise MalformedIndexError(f"parsing deb822 line {number}: not a field: {line!r}")
            fields.append((name, [value.strip()]))
    flush()
    return paragraphs


def dump_deb822(paragraphs: Iterable[Mapping[str, str]]) -> str:
    """The inverse of `parse_deb822` for values it can produce."""
    blocks = []
    for paragraph in paragraphs:
        lines = []
        for name, value in paragraph.items():
            first, *rest = value.split("\n")
            lines.append(f"{name}: {first}" if first else f"{name}:")
            lines.extend(" " + line for line in rest)
        blocks.append("\n".join(lines) + "\n")
    return "\n".join(blocks)


def _text(data: bytes | str, what: str) -> str:
    if isinstance(data, str):
        return data
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise MalformedIndexError(f"parsing {what}: not UTF-8 ({e})") from None


# --- Release ---------------------------------------------------------------------------------


class FileHash(NamedTuple):
    """What an index says a file must be."""

    size: int
    sha256: str


_HEX64 = re.compile(r"[0-9a-f]{64}")
_HEX32 = re.compile(r"[0-9a-f]{32}")
_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_RELEASE_FIELDS = (
    "Origin",
    "Label",
    "Suite",
    "Version",
    "Codename",
    "Date",
    "Valid-Until",
    "Acquire-By-Hash",
    "Architectures",
    "Components",
    "Description",
    "MD5Sum",
    "SHA1",
    "SHA256",
    "SHA512",
)


def format_date(when: datetime) -> str:
    """RFC 2822 date as the archive writes it: `Sat, 01 Jan 2022 00:00:00 UTC`."""
    when = when.astimezone(UTC)
    day, month = _DAYS[when.weekday()], _MONTHS[when.month - 1]
    return f"{day}, {when.day:02d} {month} {when.year:04d} {when:%H:%M:%S} UTC"


def parse_date(value: str, what: str) -> datetime:
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        raise MalformedIndexError(f"parsing {what}: not an RFC 2822 date: {value!r}") from None
    if when.tzinfo is None:  # "-0000" means "UTC, source unknown"
        when = when.replace(tzinfo=UTC)
    return when.astimezone(UTC)


def _safe_relative(path: str, what: str) -> str:
    parts = PurePosixPath(path).parts
    if not path or path.startswith("/") or ".." in parts or "\\" in path:
        raise MalformedIndexError(f"parsing {what}: unsafe path {path!r}")
    return path


@dataclass(frozen=True)
class Release:
    """A parsed (and, if it came through `verify_inrelease`, verified) Release.

    `files` maps paths relative to `dists/<suite>/` (e.g.
    `main/binary-amd64/Packages.xz`) to their size and SHA-256; `md5sum` keeps
    the MD5Sum list only so a Release can be written back out.
    """

    suite: str | None = None
    codename: str | None = None
    date: datetime | None = None
    valid_until: datetime | None = None
    origin: str | None = None
    label: str | None = None
    version: str | None = None
    description: str | None = None
    architectures: tuple[str, ...] = ()
    components: tuple[str, ...] = ()
    acquire_by_hash: bool = False
    files: Mapping[str, FileHash] = field(default_factory=dict)
    md5sum: Mapping[str, tuple[int, str]] = field(default_factory=dict)
    extra: tuple[tuple[str, str], ...] = ()  # other fields, in order

    def lookup(self, path: str) -> FileHash | None:
        """The size and hash Release vouches for at `path`, resolving `by-hash/SHA256/<hex>`.

        A by-hash path is vouched for when a file in the same directory has
        that SHA-256.
        """
        entry = self.files.get(path)
        if entry is not None:
            return entry
        directory, sep, digest = path.rpartition("/by-hash/SHA256/")
        if not sep or not _HEX64.fullmatch(digest):
            return None
        prefix = directory + "/" if directory else ""
        for name, candidate in self.files.items():
            if (
                candidate.sha256 == digest
                and name.startswith(prefix)
                and "/" not in name[len(prefix) :]
            ):
                return candidate
        return None

    def expired(self, now: datetime) -> bool:
        return self.valid_until is not None and now >= self.valid_until


def _file_list(value: str, digest: re.Pattern[str], what: str) -> dict[str, tuple[int, str]]:
    files: dict[str, tuple[int, str]] = {}
    for line in value.split("\n"):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 3 or not digest.fullmatch(parts[0].lower()) or not parts[1].isdigit():
            raise MalformedIndexError(f"parsing {what}: bad line {line.strip()!r}")
        files[_safe_relative(parts[2], what)] = (int(parts[1]), parts[0].lower())
    return files


def parse_release(data: bytes | str) -> Release:
    """Parse the text of a Release file (or the signed text of an InRelease)."""
    paragraphs = parse_deb822(_text(data, "Release"))
    if len(paragraphs) != 1:
        raise MalformedIndexError(f"parsing Release: {len(paragraphs)} paragraphs, expected 1")
    p = paragraphs[0]
    # No Suite/Codename check here: a flat repository's Release may have neither (apt takes
    # it). Whoever fetched a Release for a named suite checks the name (`check_suite`).
    if "SHA256" not in p:
        raise MalformedIndexError("parsing Release: no SHA256 file list")
    sha256 = _file_list(p["SHA256"], _HEX64, "Release SHA256")
    md5 = _file_list(p["MD5Sum"], _HEX32, "Release MD5Sum") if "MD5Sum" in p else {}
    known = {f.lower() for f in _RELEASE_FIELDS}
    return Release(
        suite=p.get("Suite"),
        codename=p.get("Codename"),
        date=parse_date(p["Date"], "Release Date") if "Date" in p else None,
        valid_until=(
            parse_date(p["Valid-Until"], "Release Valid-Until") if "Valid-Until" in p else None
        ),
        origin=p.get("Origin"),
        label=p.get("Label"),
        version=p.get("Version"),
        description=p.get("Description"),
        architectures=tuple(p.get("Architectures", "").split()),
        components=tuple(p.get("Components", "").split()),
        acquire_by_hash=p.get("Acquire-By-Hash", "no").lower() == "yes",
        files={path: FileHash(size, digest) for path, (size, digest) in sha256.items()},
        md5sum=md5,
        extra=tuple((k, v) for k, v in p.items() if k.lower() not in known),
    )


def dump_release(release: Release) -> str:
    """Release text (what gets signed into InRelease)."""
    fields: list[tuple[str, str]] = []
    optional = [
        ("Origin", release.origin),
        ("Label", release.label),
        ("Suite", release.suite),
        ("Version", release.version),
        ("Codename", release.codename),
        ("Date", format_date(release.date) if release.date else None),
        ("Valid-Until", format_date(release.valid_until) if release.valid_until else None),
        ("Acquire-By-Hash", "yes" if release.acquire_by_hash else None),
        ("Architectures", " ".join(release.architectures) or None),
        ("Components", " ".join(release.components) or None),
        ("Description", release.description),
    ]
    fields += [(name, value) for name, value in optional if value is not None]
    fields += release.extra

    def listing(entries: Iterable[tuple[str, int, str]]) -> str:
        return "".join(f"\n{digest} {size:>8} {path}" for path, size, digest in entries)

    if release.md5sum:
        fields.append(("MD5Sum", listing((p, s, d) for p, (s, d) in release.md5sum.items())))
    fields.append(("SHA256", listing((p, f.size, f.sha256) for p, f in release.files.items())))
    return dump_deb822([Paragraph(fields)])


# --- suites, freshness, generations ----------------------------------------------------------

# apt's Acquire::Max-FutureTime default: a Release dated further ahead is "not valid yet".
MAX_FUTURE = timedelta(seconds=10)


class ReleaseDateError(SignatureError):
    """A verified Release is expired (Valid-Until) or not valid yet (Date in the future)."""


class ReplayError(DebianIndexError):
    """A verified Release is older (by Date) than one already verified for the same suite."""

    kind = "replay"


def is_flat(suite: str) -> bool:
    """A flat repository's "suite" (`deb URL ./`, `deb URL sub/`) is a directory ending in /."""
    return suite.endswith("/")


def suite_dir(suite: str) -> str:
    """Where a suite's Release, InRelease and indexes live, relative to the archive root.

    `bookworm` -> `dists/bookworm`; a flat repository's `./` -> `` (the root itself),
    `sub/` or `./sub/` -> `sub`.
    """
    if not is_flat(suite):
        return f"dists/{_safe_relative(suite, 'suite name')}"
    parts = [part for part in PurePosixPath(suite).parts if part != "."]
    if not parts:
        return ""
    return _safe_relative("/".join(parts), "flat repository directory")


def suite_path(suite: str, name: str) -> str:
    """`name` (`InRelease`, `main/binary-amd64/Packages.xz`...) of `suite`, from the root."""
    directory = suite_dir(suite)
    return f"{directory}/{name}" if directory else name


def check_suite(release: Release, suite: str, what: str) -> None:
    """A Release fetched as `suite` must say it is that suite (no replay of another one).

    Flat repositories have no suite name to check (apt checks none either).
    """
    if is_flat(suite) or suite in (release.suite, release.codename):
        return
    raise SignatureError(
        f"{what}: it is signed for suite {release.suite!r} (codename {release.codename!r}), "
        f"not {suite!r}"
    )


def check_fresh(release: Release, now: datetime, what: str) -> None:
    """As apt: refuse a Release past its Valid-Until, or dated more than MAX_FUTURE ahead."""
    if release.expired(now):
        raise ReleaseDateError(f"{what}: expired at {release.valid_until} (Valid-Until)")
    if release.date is not None and release.date > now + MAX_FUTURE:
        raise ReleaseDateError(
            f"{what}: not valid yet: its Date {release.date} is after now ({now})"
        )


class Order(enum.Enum):
    """How a candidate Release compares to a known one of the same suite."""

    NEWER = "newer"  # a later Date: a new generation
    SAME = "same"  # the same Date and the same signed text
    OLDER = "older"  # an earlier Date: never believe it (a replay, or a mirror behind)
    UNORDERED = "unordered"  # same Date, other text, or no Date on a side: Date cannot say


@dataclass(frozen=True)
class Generation:
    """One suite's Release generation: what `Order` compares, and what services persist.

    `sha256` is of the signed Release text (what gpgv returned, or the detached Release).
    """

    date: datetime | None
    sha256: str

    @classmethod
    def of(cls, release: Release, signed: bytes) -> Generation:
        return cls(release.date, hashlib.sha256(signed).hexdigest())

    def compare(self, known: Generation | None) -> Order:
        """This generation against `known` (None: nothing known yet, so this one is newer)."""
        if known is None:
            return Order.NEWER
        if self.date is None or known.date is None:
            return Order.SAME if self.sha256 == known.sha256 else Order.UNORDERED
        if self.date > known.date:
            return Order.NEWER
        if self.date < known.date:
            return Order.OLDER
        return Order.SAME if self.sha256 == known.sha256 else Order.UNORDERED

    def to_json(self) -> dict[str, str | None]:
        return {"date": self.date.isoformat() if self.date else None, "sha256": self.sha256}

    @classmethod
    def from_json(cls, value: Mapping[str, str | None]) -> Generation:
        date = value.get("date")
        return cls(datetime.fromisoformat(date) if date else None, str(value["sha256"]))


def newest(candidate: Generation, known: Generation | None, what: str) -> Generation:
    """The generation to keep after verifying `candidate`; ReplayError if it is older.

    UNORDERED keeps the candidate: apt compares Dates only, and a republish within the
    same second is not a replay.
    """
    order = candidate.compare(known)
    if order is Order.OLDER:
        assert known is not None and known.date is not None and candidate.date is not None
        raise ReplayError(
            f"{what}: dated {format_date(candidate.date)}, older than the "
            f"{format_date(known.date)} already verified"
        )
    return candidate


# --- Packages --------------------------------------------------------------------------------

_PACKAGE_FIELDS = ("Package", "Version", "Architecture", "Section", "Filename", "Size", "SHA256")


@dataclass(frozen=True)
class PackageEntry:
    """One paragraph of a Packages file; `filename` is the pool path from the archive root."""

    package: str
    version: str
    architecture: str
    filename: str
    size: int
    sha256: str
    section: str | None = None
    extra: tuple[tuple[str, str], ...] = ()  # other fields (Depends, Description...), in order

    @property
    def expected(self) -> FileHash:
        return FileHash(self.size, self.sha256)

    def to_paragraph(self) -> Paragraph:
        fields = [
            ("Package", self.package),
            ("Version", self.version),
            ("Architecture", self.architecture),
        ]
        fields += self.extra
        if self.section is not None:
            fields.append(("Section", self.section))
        fields += [("Filename", self.filename), ("Size", str(self.size)), ("SHA256", self.sha256)]
        return Paragraph(fields)


def _package_entry(p: Paragraph, number: int) -> PackageEntry:
    what = f"Packages entry {number} ({p.get('Package', '?')})"
    missing = [f for f in _PACKAGE_FIELDS if f != "Section" and f not in p]
    if missing:
        raise MalformedIndexError(f"parsing {what}: missing {', '.join(missing)}")
    sha256 = p["SHA256"].lower()
    if not _HEX64.fullmatch(sha256):
        raise MalformedIndexError(f"parsing {what}: SHA256 is not 64 hex digits")
    if not p["Size"].isdigit():
        raise MalformedIndexError(f"parsing {what}: Size {p['Size']!r} is not a number")
    known = {f.lower() for f in _PACKAGE_FIELDS}
    return PackageEntry(
        package=p["Package"],
        version=p["Version"],
        architecture=p["Architecture"],
        filename=_safe_relative(p["Filename"], what),
        size=int(p["Size"]),
        sha256=sha256,
        section=p.get("Section"),
        extra=tuple((k, v) for k, v in p.items() if k.lower() not in known),
    )


def parse_packages(data: bytes | str) -> list[PackageEntry]:
    """Parse an uncompressed Packages file."""
    paragraphs = parse_deb822(_text(data, "Packages"))
    return [_package_entry(p, n) for n, p in enumerate(paragraphs, start=1)]


def dump_packages(entries: Iterable[PackageEntry]) -> str:
    return dump_deb822(e.to_paragraph() for e in entries)


# --- Sources ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class SourceFile:
    """One file of a source package (`.dsc`, `.orig.tar.xz`, ...), from the archive root."""

    filename: str
    size: int
    sha256: str

    @property
    def expected(self) -> FileHash:
        return FileHash(self.size, self.sha256)


@dataclass(frozen=True)
class SourceEntry:
    """One paragraph of a Sources file: a source package and its files (Checksums-Sha256)."""

    package: str
    version: str
    directory: str
    files: tuple[SourceFile, ...]
    section: str | None = None


def _source_entry(p: Paragraph, number: int) -> SourceEntry:
    what = f"Sources entry {number} ({p.get('Package', '?')})"
    missing = [f for f in ("Package", "Version", "Directory", "Checksums-Sha256") if f not in p]
    if missing:
        raise MalformedIndexError(f"parsing {what}: missing {', '.join(missing)}")
    directory = _safe_relative(p["Directory"].rstrip("/"), what)
    files = []
    for line in p["Checksums-Sha256"].split("\n"):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 3 or not _HEX64.fullmatch(parts[0].lower()) or not parts[1].isdigit():
            raise MalformedIndexError(f"parsing {what}: bad Checksums-Sha256 line {line!r}")
        if "/" in parts[2]:
            raise MalformedIndexError(f"parsing {what}: unsafe file name {parts[2]!r}")
        # A flat repository's Directory is "." (its files are beside Sources).
        name = _safe_relative(f"{directory}/{parts[2]}" if directory != "." else parts[2], what)
        files.append(SourceFile(name, int(parts[1]), parts[0].lower()))
    return SourceEntry(p["Package"], p["Version"], directory, tuple(files), p.get("Section"))


def parse_sources(data: bytes | str) -> list[SourceEntry]:
    """Parse an uncompressed Sources file."""
    paragraphs = parse_deb822(_text(data, "Sources"))
    return [_source_entry(p, n) for n, p in enumerate(paragraphs, start=1)]


# --- index files: variants, decompression, checks --------------------------------------------

# Preferred first: smallest to fetch. Every compression apt reads: `.lz4` and `.zst` through
# the `lz4` and `zstandard` packages (Python 3.11's standard library has neither).
COMPRESSIONS = (".xz", ".zst", ".bz2", ".lzma", ".gz", ".lz4", "")
_MAGIC = (
    (b"\xfd7zXZ\x00", ".xz"),
    (b"\x28\xb5\x2f\xfd", ".zst"),
    (b"\x1f\x8b", ".gz"),
    (b"BZh", ".bz2"),
    (b"\x04\x22\x4d\x18", ".lz4"),
)


def index_variants(release: Release, base: str) -> tuple[str, ...]:
    """Every variant of `base` (e.g. `main/binary-amd64/Packages`) that Release lists, best
    first (apt, too, tries the next one when a variant cannot be fetched)."""
    return tuple(base + suffix for suffix in COMPRESSIONS if base + suffix in release.files)


def pick_index_variant(release: Release, base: str) -> str:
    """The best variant of `base` (e.g. `main/binary-amd64/Packages`) that Release lists."""
    variants = index_variants(release, base)
    if not variants:
        raise IndexHashError(f"choosing a variant of {base}: Release lists none of it")
    return variants[0]


def by_hash_path(path: str, sha256: str) -> str:
    """`main/binary-amd64/Packages.xz` -> `main/binary-amd64/by-hash/SHA256/<sha256>`."""
    directory = path.rpartition("/")[0]
    return f"{directory}/by-hash/SHA256/{sha256}" if directory else f"by-hash/SHA256/{sha256}"


def _decompress(data: bytes, suffix: str) -> bytes:
    if suffix in (".xz", ".lzma"):
        return lzma.decompress(data)  # FORMAT_AUTO: .xz and legacy .lzma alike
    if suffix == ".gz":
        return gzip.decompress(data)
    if suffix == ".bz2":
        return bz2.decompress(data)
    if suffix == ".zst":
        # Frame by frame: archive tools do not always write the content size in a frame,
        # and a stream cut short must fail, not end early.
        out, rest = [], data
        while rest:
            frame = zstandard.ZstdDecompressor().decompressobj()
            out.append(frame.decompress(rest))
            if not frame.eof:
                raise ValueError("the zstd stream ends inside a frame")
            rest = frame.unused_data
        return b"".join(out)
    if suffix == ".lz4":
        return bytes(lz4.frame.decompress(data))
    return data


def decompress_index(data: bytes, path: str) -> bytes:
    """Decompress by `path`'s suffix, or by magic bytes when the path has no known suffix
    (a `by-hash` name, or an uncompressed file)."""
    suffix = next((s for s in COMPRESSIONS if s and path.endswith(s)), None)
    if suffix is None:
        suffix = next((s for magic, s in _MAGIC if data.startswith(magic)), "")
    try:
        return _decompress(data, suffix)
    except (
        OSError,
        EOFError,
        RuntimeError,  # lz4.frame's errors
        lzma.LZMAError,
        zlib.error,
        zstandard.ZstdError,
        ValueError,
    ) as e:
        raise MalformedIndexError(f"decompressing {path}: {e}") from None


def check_index(release: Release, path: str, data: bytes) -> None:
    """Raise `IndexHashError` unless `data` is what Release lists at `path` (by-hash too)."""
    expected = release.lookup(path)
    if expected is None:
        raise IndexHashError(f"checking {path} against Release: Release does not list it")
    _compare(data, expected, f"checking {path} against Release", IndexHashError)


def load_packages(release: Release, path: str, data: bytes) -> list[PackageEntry]:
    """Check a Packages file (any variant or by-hash copy) against Release, then parse it."""
    check_index(release, path, data)
    return parse_packages(decompress_index(data, path))


def load_sources(release: Release, path: str, data: bytes) -> list[SourceEntry]:
    """Check a Sources file (any variant or by-hash copy) against Release, then parse it."""
    check_index(release, path, data)
    return parse_sources(decompress_index(data, path))


# --- package files ---------------------------------------------------------------------------


def _compare(data: bytes, expected: FileHash, what: str, error: type[DebianIndexError]) -> None:
    if len(data) != expected.size:
        raise error(f"{what}: size {len(data)}, expected {expected.size}")
    actual = hashlib.sha256(data).hexdigest()
    if actual != expected.sha256:
        raise error(f"{what}: SHA-256 {actual}, expected {expected.sha256}")


class Sha256Checker:
    """Checks a file against its index entry while it streams past (e.g. while writing it).

    `update` fails as soon as more bytes arrive than the index allows;
    `finish` fails if the total size or the SHA-256 is wrong. Nothing fed to a
    checker should be kept or served until `finish` has returned.
    """

    def __init__(
        self,
        expected: FileHash,
        name: str,
        error: type[DebianIndexError] = PackageHashError,
    ) -> None:
        self.expected = expected
        self.name = name
        self.received = 0
        self._hash = hashlib.sha256()
        self._error = error

    def update(self, chunk: bytes) -> None:
        self.received += len(chunk)
        if self.received > self.expected.size:
            raise self._error(
                f"checking {self.name}: more than the expected {self.expected.size} bytes"
            )
        self._hash.update(chunk)

    def hexdigest(self) -> str:
        return self._hash.hexdigest()

    def finish(self) -> None:
        what = f"checking {self.name}"
        if self.received != self.expected.size:
            raise self._error(f"{what}: size {self.received}, expected {self.expected.size}")
        if self.hexdigest() != self.expected.sha256:
            raise self._error(
                f"{what}: SHA-256 {self.hexdigest()}, expected {self.expected.sha256}"
            )


def check_package_bytes(data: bytes, expected: FileHash, name: str) -> None:
    _compare(data, expected, f"checking {name}", PackageHashError)


def check_package_file(path: Path, expected: FileHash, name: str | None = None) -> None:
    """Stream `path` through a `Sha256Checker`; size is checked first, without reading."""
    name = name or path.name
    try:
        size = path.stat().st_size
        if size != expected.size:
            raise PackageHashError(f"checking {name}: size {size}, expected {expected.size}")
        checker = Sha256Checker(expected, name)
        with path.open("rb") as f:
            while chunk := f.read(1 << 20):
                checker.update(chunk)
    except OSError as e:
        raise PackageHashError(f"checking {name}: cannot read {path}: {e.strerror}") from None
    checker.finish()


# --- archive path classes (apt-cacher-ng's VfilePattern / PfilePattern) ----------------------


class FileClass(enum.Enum):
    INDEX = "index"  # changes in place: fetch conditionally, verify via InRelease
    PACKAGE = "package"  # immutable once published: verify via Packages/Sources
    OTHER = "other"


_PACKAGE_NAME = re.compile(
    r".*\.(deb|udeb|ddeb|dsc|changes|buildinfo)"
    r"|.*\.(tar|diff|patch)(\.(gz|xz|bz2|lzma|zst|lz|Z))?"
)
_INDEX_NAME = re.compile(
    r"(In)?Release(\.gpg)?"
    r"|(Packages|Sources|Index|MD5SUMS|SHA256SUMS)(\.[a-z0-9]+)?"
    r"|(Translation|Contents|Commands|Components|icons)-[^/]+"
)
_INDEX_DIRS = ("by-hash", "Packages.diff", "Sources.diff", "i18n", "dep11", "cnf")


def classify_path(path: str) -> FileClass:
    """Classify an archive path (with or without host and archive prefix)."""
    parts = PurePosixPath(path.split("?", 1)[0]).parts
    if not parts:
        return FileClass.OTHER
    name = parts[-1]
    if "by-hash" in parts[:-1]:
        return FileClass.INDEX
    if _INDEX_NAME.fullmatch(name):
        return FileClass.INDEX
    if _PACKAGE_NAME.fullmatch(name):
        return FileClass.PACKAGE
    if any(d in _INDEX_DIRS or d.endswith(".diff") for d in parts[:-1]) and "dists" in parts:
        return FileClass.INDEX
    return FileClass.OTHER


def is_by_hash(path: str) -> bool:
    """by-hash files are named by their content: cacheable forever."""
    return "/by-hash/" in path


# --- signatures ------------------------------------------------------------------------------

_ARMOR_BEGIN = "-----BEGIN PGP PUBLIC KEY BLOCK-----"
_ARMOR_END = "-----END PGP PUBLIC KEY BLOCK-----"
_CLEARSIGN_BEGIN = b"-----BEGIN PGP SIGNED MESSAGE-----"
_SIGNATURE_END = b"-----END PGP SIGNATURE-----"
_CLEARSIGN_LINE = re.compile(rb"^-----BEGIN PGP SIGNED MESSAGE-----", re.MULTILINE)
_GPGV_TIMEOUT = 60.0


def _crc24(data: bytes) -> int:
    crc = 0xB704CE
    for byte in data:
        crc ^= byte << 16
        for _ in range(8):
            crc <<= 1
            if crc & 0x1000000:
                crc ^= 0x1864CFB
    return crc & 0xFFFFFF


def dearmor(text: str, what: str = "keyring") -> bytes:
    """Binary OpenPGP packets from one or more ASCII-armored public key blocks."""
    out = bytearray()
    lines = iter(text.splitlines())
    found = False
    for line in lines:
        if line.strip() != _ARMOR_BEGIN:
            continue
        found = True
        for header in lines:  # armor headers end at the first blank line
            if not header.strip():
                break
        body, checksum = [], None
        for line in lines:
            line = line.strip()
            if line == _ARMOR_END:
                break
            if line.startswith("="):
                checksum = line[1:]
            else:
                body.append(line)
        else:
            raise SignatureError(f"reading {what}: armored block has no END line")
        try:
            packets = b64decode("".join(body), validate=True)
            if checksum is not None and int.from_bytes(b64decode(checksum)) != _crc24(packets):
                raise SignatureError(f"reading {what}: armor checksum mismatch")
        except (Base64Error, ValueError):
            raise SignatureError(f"reading {what}: bad base64 in armored block") from None
        out += packets
    if not found:
        raise SignatureError(f"reading {what}: no '{_ARMOR_BEGIN}'")
    return bytes(out)


def _check_clearsigned(data: bytes) -> None:
    """One clearsigned message and nothing around it, as apt insists."""
    what = "verifying InRelease"
    stripped = data.strip()
    if not stripped.startswith(_CLEARSIGN_BEGIN):
        raise SignatureError(f"{what}: not a clearsigned message (no signature)")
    if len(_CLEARSIGN_LINE.findall(data)) != 1:
        raise SignatureError(f"{what}: more than one signed message")
    if not stripped.endswith(_SIGNATURE_END):
        raise SignatureError(f"{what}: text after the signature, or a missing signature block")


_WEAK_DIGESTS = {"1": "MD5", "2": "SHA1", "3": "RIPEMD160"}  # apt refuses these too
_ERRSIG_NO_PUBKEY = "9"


def _status_summary(status: str) -> tuple[set[str], list[str]]:
    """Fingerprints of good signatures with strong digests, and the problems gpgv reported.

    Problems starting with "bad" disqualify the file even beside a good signature.
    """
    valid: set[str] = set()
    problems = []
    for line in status.splitlines():
        words = line.split()
        if len(words) < 2 or words[0] != "[GNUPG:]":
            continue
        keyword, args = words[1], words[2:]
        if keyword == "VALIDSIG" and len(args) >= 8:
            if args[7] in _WEAK_DIGESTS:
                problems.append(f"bad: signature by {args[0]} uses {_WEAK_DIGESTS[args[7]]}")
            else:
                valid.add(args[0])
        elif keyword == "NO_PUBKEY":
            problems.append(f"no public key {args[0] if args else '?'} in the keyring")
        elif keyword == "ERRSIG" and len(args) >= 6 and args[5] == _ERRSIG_NO_PUBKEY:
            continue  # NO_PUBKEY says it
        elif keyword in ("BADSIG", "ERRSIG"):
            problems.append(f"bad: {keyword} {' '.join(args)}".strip())
        elif keyword in ("EXPKEYSIG", "REVKEYSIG", "EXPSIG"):
            problems.append(f"{keyword} {' '.join(args)}".strip())
        elif keyword == "NODATA":
            problems.append("no signature found")
    return valid, problems


def _gpgv(signed: list[str], files: dict[str, bytes], keyring: Path, what: str) -> bytes:
    """Run gpgv in a private home; return the --output bytes (empty for detached sigs)."""
    with tempfile.TemporaryDirectory(prefix="aptmesh-gpgv-") as tmp:
        root = Path(tmp)
        home = root / "home"
        home.mkdir(mode=0o700)
        try:
            raw = keyring.read_bytes()
        except OSError as e:
            raise SignatureError(f"{what}: cannot read keyring {keyring}: {e.strerror}") from None
        if raw.lstrip().startswith(b"-----BEGIN PGP"):
            raw = dearmor(raw.decode("ascii", "replace"), f"keyring {keyring}")
        if not raw:
            raise SignatureError(f"{what}: keyring {keyring} is empty")
        (root / "keyring.gpg").write_bytes(raw)
        for name, content in files.items():
            (root / name).write_bytes(content)
        output = root / "output"
        cmd = [
            "gpgv",
            "--homedir",
            str(home),
            "--keyring",
            str(root / "keyring.gpg"),
            "--status-fd",
            "1",
            "--output",
            str(output),
            *(str(root / name) for name in signed),
        ]
        env = {"GNUPGHOME": str(home), "LC_ALL": "C", "PATH": os.environ.get("PATH", "/usr/bin")}
        try:
            proc = subprocess.run(
                cmd, capture_output=True, env=env, timeout=_GPGV_TIMEOUT, check=False
            )
        except FileNotFoundError:
            raise SignatureError(f"{what}: gpgv is not installed") from None
        except subprocess.TimeoutExpired:
            raise SignatureError(f"{what}: gpgv took longer than {_GPGV_TIMEOUT:.0f} s") from None
        status = proc.stdout.decode("utf-8", "replace")
        valid, problems = _status_summary(status)
        # Like apt: one good signature from the keyring suffices, unless any is bad.
        if not valid or any(p.startswith("bad:") for p in problems):
            detail = "; ".join(problems) or proc.stderr.decode("utf-8", "replace").strip()
            raise SignatureError(f"{what}: {detail or f'gpgv exited with {proc.returncode}'}")
        return output.read_bytes() if output.exists() else b""


def verify_inrelease(data: bytes, keyring: Path) -> bytes:
    """Verify a clearsigned InRelease against `keyring` (binary or armored).

    Returns only the signed text, as gpgv outputs it; parse that, never `data`.
    """
    _check_clearsigned(data)
    signed = _gpgv(["InRelease"], {"InRelease": data}, keyring, "verifying InRelease")
    if not signed.strip():
        raise SignatureError("verifying InRelease: gpgv returned no signed text")
    return signed


def verify_detached(release: bytes, signature: bytes, keyring: Path) -> bytes:
    """Verify Release against Release.gpg; returns `release` when the signature is good."""
    _gpgv(
        ["Release.gpg", "Release"],
        {"Release": release, "Release.gpg": signature},
        keyring,
        "verifying Release with Release.gpg",
    )
    return release


class ReleaseForm(enum.Enum):
    """How a suite's Release is signed; apt tries InRelease first, then Release + Release.gpg."""

    INRELEASE = "InRelease"  # clearsigned
    DETACHED = "Release"  # Release beside a detached Release.gpg

    @property
    def files(self) -> tuple[str, ...]:
        """The files to fetch, relative to the suite's directory."""
        return ("InRelease",) if self is ReleaseForm.INRELEASE else ("Release", "Release.gpg")


def verify_release(
    form: ReleaseForm, data: bytes, keyring: Path, signature: bytes | None = None
) -> bytes:
    """The signed Release text of either form: `data` is InRelease, or Release with
    `signature` its Release.gpg. Parse what this returns, never `data` itself."""
    if form is ReleaseForm.INRELEASE:
        return verify_inrelease(data, keyring)
    if signature is None:
        raise SignatureError("verifying Release: no Release.gpg")
    return verify_detached(data, signature, keyring)
