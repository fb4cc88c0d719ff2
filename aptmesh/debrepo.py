"""A real, signed Debian repository served over HTTP on loopback.

Used by `make run OFFLINE=1` (demo/run.py), the tests (tests/fixtures/debrepo.py
makes pytest fixtures of it) and the benchmarks.

What it gives tests:

- `debrepo_session` (session scope): the pristine repository, built once per
  test session (per xdist worker) and served read-only. Its mutating methods
  raise; its request counters are shared by every test of the session, so do
  not assert on them.
- `debrepo` (function scope): a private, mutable copy of it on its own port,
  with fresh counters: tamper with it, stop and start it, add and remove
  packages.
- `debrepo_signing_key` (session scope): the throw-away archive key.

Both repositories are `DebRepo` objects::

    def test_fetch(debrepo: DebRepo) -> None:
        pkg = debrepo.package("aptmesh-huge")          # a RepoPackage
        body = urllib.request.urlopen(pkg.url).read()  # real HTTP
        assert hashlib.sha256(body).hexdigest() == pkg.sha256
        assert debrepo.server.requests(pkg.filename) == 1
        signed = verify_inrelease(debrepo.read(debrepo.INRELEASE), debrepo.keyring)
        debrepo.tamper(pkg.filename)                   # same size, wrong SHA-256

The archive (`DebRepo.root`, served at `DebRepo.base_url`,
`http://127.0.0.1:PORT/debian`) has the layout of a Debian mirror:
`pool/main/<initial>/<source>/<name>_<version>_<arch>.deb` made by
`dpkg-deb`, and `dists/stable/` with `Release`, `InRelease`, `Release.gpg`,
`main/binary-amd64/Packages{,.gz,.xz}` and their `by-hash/{SHA256,MD5Sum}`
copies (`Acquire-By-Hash: yes`). Paths given to and returned by the API are
relative to the archive root, as in `Packages`' `Filename` field.

`apt_env` gives a real apt an isolated configuration; see its docstring.
`build_repo`, `SigningKey`, `PackageSpec` and `RepoServer` are usable on
their own to build other repositories (more packages, other sizes).
"""

from __future__ import annotations

import asyncio
import bz2
import enum
import fnmatch
import gzip
import hashlib
import io
import lzma
import os
import random
import re
import shutil
import socket
import subprocess
import tarfile
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import formatdate
from pathlib import Path

import lz4.frame
import zstandard
from aiohttp import web

from aptmesh.debian import (
    FileHash,
    PackageEntry,
    Release,
    by_hash_path,
    decompress_index,
    dump_deb822,
    dump_packages,
    dump_release,
    is_flat,
    parse_packages,
    parse_release,
    suite_dir,
    suite_path,
)

SUITE = "stable"
CODENAME = "aptmesh-test"
COMPONENT = "main"
ARCHITECTURE = "amd64"
SWARM_MIN_SIZE = 1 << 20  # DESIGN.md's default threshold
KiB, MiB = 1024, 1 << 20


@dataclass(frozen=True)
class PackageSpec:
    """A package to build: a random (incompressible) payload of `payload_size` bytes.

    The .deb (built with -Znone) is 10-30 KiB larger: tar pads to 10 KiB records.
    """

    name: str
    version: str
    payload_size: int
    architecture: str = ARCHITECTURE
    source: str | None = None  # defaults to `name`
    section: str = "misc"
    component: str = COMPONENT
    suites: tuple[str, ...] = ()  # the suites whose indexes list it; empty: every suite
    fields: tuple[tuple[str, str], ...] = ()  # more Packages fields (Phased-Update-Percentage)

    @property
    def source_name(self) -> str:
        return self.source or self.name

    @property
    def deb_name(self) -> str:
        """The file's basename: the version's epoch is not part of file names."""
        version = self.version.partition(":")[2] or self.version
        return f"{self.name}_{version}_{self.architecture}.deb"

    @property
    def filename(self) -> str:
        """Pool path (a flat repository keeps its files beside its Packages instead)."""
        return f"{_pool_dir(self.component, self.source_name)}/{self.deb_name}"


def _pool_dir(component: str, source: str) -> str:
    initial = source[:4] if source.startswith("lib") else source[0]
    return f"pool/{component}/{initial}/{source}"


@dataclass(frozen=True)
class SourceSpec:
    """A source package to publish in `Sources`: a `.dsc`, an `.orig.tar.gz` holding
    `orig_size` random (incompressible) bytes, and a small `.debian.tar.xz`, all real
    (uncompressed) tarballs, so `apt-get source --download-only` and `dpkg-source` take them."""

    name: str
    version: str  # Debian revision included: `1.0-1`
    orig_size: int
    component: str = COMPONENT
    suites: tuple[str, ...] = ()
    section: str = "misc"

    @property
    def upstream_version(self) -> str:
        version = self.version.partition(":")[2] or self.version
        return version.rpartition("-")[0] or version

    @property
    def directory(self) -> str:
        return _pool_dir(self.component, self.name)


DEFAULT_PACKAGES: tuple[PackageSpec, ...] = (
    PackageSpec("aptmesh-tiny", "1.0-1", 20 * KiB, section="utils"),
    PackageSpec("libaptmesh-test1", "1.2.3-1", 80 * KiB, source="libaptmesh-test", section="libs"),
    PackageSpec("aptmesh-medium", "2.0~rc1+dfsg-1", 200 * KiB),
    PackageSpec("aptmesh-large", "1:3.1-2", 3 * MiB // 2, section="net"),
    PackageSpec("aptmesh-huge", "0.9-1", 3 * MiB, architecture="all", section="doc"),
)


class Signing(enum.Enum):
    """Which signed forms of Release a shape publishes."""

    BOTH = "both"  # InRelease, and Release + Release.gpg (Debian's and Ubuntu's archives)
    INRELEASE = "inrelease"  # InRelease only
    DETACHED = "detached"  # Release + Release.gpg only (older and many vendor repositories)


@dataclass(frozen=True)
class RepoShape:
    """The layout of a built repository: every shape apt takes that tests need.

    The default is a Debian mirror's shape: one suite (`stable`, codename
    `aptmesh-test`) in `dists/`, component `main`, architecture `amd64`
    (arch-`all` packages listed in `binary-amd64`, as Debian does),
    `Packages{,.gz,.xz}`, by-hash copies with `Acquire-By-Hash: yes`,
    `InRelease` and `Release` + `Release.gpg`, `Valid-Until` a week on.

    The fields change one aspect each:

    - `suites`: several suites, each with its own `dists/<suite>/` and Release
      (Ubuntu: `noble noble-updates noble-security`, one `codename` for all);
      a suite ending in `/` is a flat repository (`deb URL ./`): Release and
      Packages in that directory (`./` is the archive root), no components,
      no Suite or Codename in Release, package files beside Packages.
    - `components`, `architectures`: what Release lists. With `empty_indexes`
      False an index with no packages is not written at all though Release
      lists its component and architecture (vendor repositories); with
      `arch_all_index` arch-`all` packages are only in `binary-all/Packages`
      (and `all` joins Architectures), not in every `binary-ARCH`.
    - `compressions`: which variants of each index are published, from `""`
      (uncompressed), `.gz`, `.xz`, `.bz2`, `.lzma`, `.zst`, `.lz4`. Release
      lists these and, always, the uncompressed name (apt looks an index up by
      it; Debian's mirrors, too, list a plain `Packages` they do not have).
    - `by_hash` (copies under `by-hash/SHA256/` and `by-hash/MD5Sum/`) and
      `acquire_by_hash` (Release says `Acquire-By-Hash: yes`) independently.
    - `signing`: `Signing.BOTH`, `INRELEASE` only, or `DETACHED` only.
    - `valid_for`: Release's `Valid-Until` after its `Date`; None: no Valid-Until.
    - `origin`, `label`, `version`: Release's fields (`Ubuntu`, `24.04`...).

    `Sources` indexes (`<component>/source/Sources*`) are written when the
    repository has source packages (`build_repo(..., sources=...)`).
    """

    suites: tuple[str, ...] = (SUITE,)
    codename: str | None = CODENAME
    components: tuple[str, ...] = (COMPONENT,)
    architectures: tuple[str, ...] = (ARCHITECTURE,)
    compressions: tuple[str, ...] = ("", ".gz", ".xz")
    by_hash: bool = True
    acquire_by_hash: bool = True
    signing: Signing = Signing.BOTH
    valid_for: timedelta | None = timedelta(days=7)
    empty_indexes: bool = True
    arch_all_index: bool = False
    origin: str = "aptmesh"
    label: str = "aptmesh-test"
    version: str | None = None

    def __post_init__(self) -> None:
        unknown = set(self.compressions) - set(_COMPRESSORS)
        if unknown or not self.compressions:
            raise ValueError(f"compressions: not among {sorted(_COMPRESSORS)}: {unknown}")
        if not self.suites:
            raise ValueError("a repository needs at least one suite")

    @property
    def flat(self) -> bool:
        return is_flat(self.suites[0])


def _zstd(data: bytes) -> bytes:
    return zstandard.ZstdCompressor().compress(data)


def _lz4(data: bytes) -> bytes:
    return bytes(lz4.frame.compress(data))


_COMPRESSORS: dict[str, Callable[[bytes], bytes]] = {
    "": lambda data: data,
    ".gz": lambda data: gzip.compress(data, mtime=0),
    ".xz": lzma.compress,
    ".bz2": bz2.compress,
    ".lzma": lambda data: lzma.compress(data, format=lzma.FORMAT_ALONE),
    ".zst": _zstd,
    ".lz4": _lz4,
}

DEBIAN = RepoShape()
INRELEASE_ONLY = RepoShape(signing=Signing.INRELEASE)
DETACHED_ONLY = RepoShape(signing=Signing.DETACHED)
FLAT = RepoShape(suites=("./",), codename=None, components=(), by_hash=False, acquire_by_hash=False)
# A vendor repository: Release lists contrib and arm64, but only binary-all/Packages exists.
VENDOR = RepoShape(
    components=(COMPONENT, "contrib"),
    architectures=(ARCHITECTURE, "arm64"),
    arch_all_index=True,
    empty_indexes=False,
    by_hash=False,
    acquire_by_hash=False,
    compressions=(".gz",),
    valid_for=None,
)
NO_BY_HASH = RepoShape(by_hash=False, acquire_by_hash=False)
BY_HASH_UNANNOUNCED = RepoShape(by_hash=True, acquire_by_hash=False)
UBUNTU_SUITES = ("noble", "noble-updates", "noble-security")
UBUNTU = RepoShape(
    suites=UBUNTU_SUITES,
    codename="noble",
    components=("main", "restricted", "universe", "multiverse"),
    compressions=("", ".gz", ".xz"),
    valid_for=None,  # Ubuntu's archive sets no Valid-Until
    origin="Ubuntu",
    label="Ubuntu",
    version="24.04",
)
UBUNTU_PACKAGES: tuple[PackageSpec, ...] = (
    PackageSpec("aptmesh-base", "1.0-0ubuntu1", 20 * KiB, suites=("noble",)),
    PackageSpec("aptmesh-big", "2.0-0ubuntu1", 3 * MiB // 2, suites=("noble",), section="net"),
    PackageSpec(
        "aptmesh-update",
        "2.1-0ubuntu0.24.04.1",
        3 * MiB // 2,
        component="universe",
        suites=("noble-updates",),
        fields=(("Phased-Update-Percentage", "10"),),
    ),
    PackageSpec(
        "aptmesh-fix",
        "1.0-0ubuntu0.1",
        2 * MiB,
        suites=("noble-updates", "noble-security"),
        section="libs",
    ),
)


@dataclass(frozen=True)
class RepoFile:
    """A published source package's file: where it is listed, lives and is served."""

    filename: str  # from the archive root: Directory + name
    size: int
    sha256: str
    path: Path
    url: str

    @property
    def swarmed(self) -> bool:
        return self.size >= SWARM_MIN_SIZE


@dataclass(frozen=True)
class RepoPackage:
    """A package as published: what its Packages entry says, where it lives, where it is served."""

    name: str
    version: str
    architecture: str
    source: str
    section: str
    filename: str  # pool path relative to the archive root (Packages' Filename)
    size: int
    sha256: str
    path: Path  # the file on disk
    url: str  # the file over HTTP ("" if the repository was never served)

    @property
    def expected(self) -> FileHash:
        return FileHash(self.size, self.sha256)

    @property
    def swarmed(self) -> bool:
        """At or over DESIGN.md's default `swarm_min_size`."""
        return self.size >= SWARM_MIN_SIZE


# --- signing ---------------------------------------------------------------------------------


class SigningKey:
    """A throw-away, passphrase-less ed25519 archive key in its own GNUPGHOME."""

    def __init__(self, home: Path, fingerprint: str) -> None:
        self.home = home
        self.fingerprint = fingerprint
        self.keyring = home / "archive-keyring.gpg"  # binary: gpgv --keyring, signed-by
        self.keyring_asc = home / "archive-keyring.asc"

    @classmethod
    def generate(
        cls, home: Path, uid: str = "aptmesh test archive <archive@aptmesh.invalid>"
    ) -> SigningKey:
        home.mkdir(mode=0o700, parents=True, exist_ok=True)
        _gpg(home, "--quick-gen-key", uid, "ed25519", "sign", "never")
        listing = _gpg(home, "--with-colons", "--list-secret-keys").decode()
        fingerprint = next(
            line.split(":")[9] for line in listing.splitlines() if line.startswith("fpr:")
        )
        key = cls(home, fingerprint)
        key.keyring.write_bytes(_gpg(home, "--export", fingerprint))
        key.keyring_asc.write_bytes(_gpg(home, "--armor", "--export", fingerprint))
        return key

    def clearsign(self, text: bytes) -> bytes:
        return _gpg(
            self.home,
            "--local-user",
            self.fingerprint,
            "--digest-algo",
            "SHA256",
            "--clearsign",
            stdin=text,
        )

    def detach_sign(self, text: bytes) -> bytes:
        args = (
            "--local-user",
            self.fingerprint,
            "--digest-algo",
            "SHA256",
            "--armor",
            "--detach-sign",
        )
        return _gpg(self.home, *args, stdin=text)

    def close(self) -> None:
        """Stop the gpg-agent that gpg started for this home (it belongs to us)."""
        subprocess.run(
            ["gpgconf", "--homedir", str(self.home), "--kill", "gpg-agent"],
            capture_output=True,
            check=False,
        )


def _gpg(home: Path, *args: str, stdin: bytes = b"") -> bytes:
    cmd = [
        "gpg",
        "--homedir",
        str(home),
        "--batch",
        "--yes",
        "--quiet",
        "--pinentry-mode",
        "loopback",
        "--passphrase",
        "",
    ]
    env = {**os.environ, "GNUPGHOME": str(home), "LC_ALL": "C"}
    proc = subprocess.run(
        [*cmd, *args], input=stdin, capture_output=True, env=env, timeout=60, check=False
    )
    if proc.returncode != 0:
        raise RuntimeError(f"gpg {' '.join(args)}: {proc.stderr.decode(errors='replace').strip()}")
    return proc.stdout


# --- building --------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Published:
    spec: PackageSpec
    filename: str  # from the archive root, as Packages' Filename gives it
    size: int
    sha256: str


@dataclass(frozen=True)
class _PublishedSource:
    spec: SourceSpec
    files: tuple[tuple[str, int, str, str], ...]  # (name, size, sha256, md5) in Directory


def _build_deb(spec: PackageSpec, root: Path, filename: str) -> _Published:
    dest = root / filename
    epoch = 1_700_000_000  # fixed timestamps: same spec, same bytes
    with tempfile.TemporaryDirectory(prefix="aptmesh-deb-") as tmp:
        stage = Path(tmp) / "stage"
        payload = stage / "usr/share/aptmesh-test" / f"{spec.name}.bin"
        payload.parent.mkdir(parents=True)
        payload.write_bytes(
            random.Random(f"{spec.name}_{spec.version}").randbytes(spec.payload_size)
        )
        control = {
            "Package": spec.name,
            "Source": spec.source_name,
            "Version": spec.version,
            "Architecture": spec.architecture,
            "Maintainer": "aptmesh tests <tests@aptmesh.invalid>",
            "Installed-Size": str(spec.payload_size // KiB + 1),
            "Section": spec.section,
            "Priority": "optional",
            "Description": f"aptmesh test package {spec.name}\n {spec.payload_size} random bytes.",
        }
        (stage / "DEBIAN").mkdir()
        (stage / "DEBIAN/control").write_text("".join(f"{k}: {v}\n" for k, v in control.items()))
        for p in [stage, *stage.rglob("*")]:
            os.utime(p, (epoch, epoch))
        dest.parent.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "SOURCE_DATE_EPOCH": str(epoch)}
        cmd = ["dpkg-deb", "--root-owner-group", "-Znone", "--build", str(stage), str(dest)]
        proc = subprocess.run(cmd, capture_output=True, env=env, timeout=60, check=False)
        if proc.returncode != 0:
            raise RuntimeError(
                f"dpkg-deb --build {spec.name}: {proc.stderr.decode(errors='replace')}"
            )
    data = dest.read_bytes()
    return _Published(spec, filename, len(data), hashlib.sha256(data).hexdigest())


_TAR_EPOCH = 1_700_000_000


def _tarball(members: Mapping[str, bytes]) -> bytes:
    """An uncompressed tar with fixed metadata: same members, same bytes."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), _TAR_EPOCH, 0o644
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def _build_source(spec: SourceSpec, directory: Path) -> _PublishedSource:
    """Writes the .dsc, .orig.tar.gz and .debian.tar.xz of `spec` into `directory`."""
    upstream = spec.upstream_version
    base = f"{spec.name}-{upstream}"
    payload = random.Random(f"{spec.name}_{spec.version}_orig").randbytes(spec.orig_size)
    orig = gzip.compress(_tarball({f"{base}/payload.bin": payload}), compresslevel=1, mtime=0)
    control = (
        f"Source: {spec.name}\nSection: {spec.section}\nPriority: optional\n"
        "Maintainer: aptmesh tests <tests@aptmesh.invalid>\n\n"
        f"Package: {spec.name}\nArchitecture: all\nDescription: aptmesh test source\n x\n"
    ).encode()
    changelog = (
        f"{spec.name} ({spec.version}) unstable; urgency=medium\n\n  * Test.\n\n"
        " -- aptmesh tests <tests@aptmesh.invalid>  Tue, 14 Nov 2023 22:13:20 +0000\n"
    ).encode()
    debian_tar = lzma.compress(
        _tarball(
            {
                "debian/control": control,
                "debian/changelog": changelog,
                "debian/source/format": b"3.0 (quilt)\n",
            }
        )
    )
    version = spec.version.partition(":")[2] or spec.version
    parts = {
        f"{spec.name}_{upstream}.orig.tar.gz": orig,
        f"{spec.name}_{version}.debian.tar.xz": debian_tar,
    }

    def listing(entries: Mapping[str, bytes], md5: bool) -> str:
        return "".join(
            f"\n {_md5(d) if md5 else hashlib.sha256(d).hexdigest()} {len(d)} {n}"
            for n, d in entries.items()
        )

    dsc_fields = [
        ("Format", "3.0 (quilt)"),
        ("Source", spec.name),
        ("Binary", spec.name),
        ("Architecture", "all"),
        ("Version", spec.version),
        ("Maintainer", "aptmesh tests <tests@aptmesh.invalid>"),
        ("Checksums-Sha256", listing(parts, md5=False)),
        ("Files", listing(parts, md5=True)),
    ]
    dsc = "".join(f"{k}: {v}\n" for k, v in dsc_fields).encode()
    files = {f"{spec.name}_{version}.dsc": dsc, **parts}
    for name, data in files.items():
        _write(directory / name, data)
    return _PublishedSource(
        spec,
        tuple((n, len(d), hashlib.sha256(d).hexdigest(), _md5(d)) for n, d in files.items()),
    )


def _md5(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def _write(path: Path, data: bytes) -> None:
    """Replace `path` atomically, with an mtime later than the old one (so Last-Modified moves)."""
    old = path.stat().st_mtime if path.exists() else 0.0
    if old and path.read_bytes() == data:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    mtime = max(float(int(time.time())), float(int(old)) + 1)
    os.utime(tmp, (mtime, mtime))
    tmp.replace(path)


def _corrupt(data: bytes) -> bytes:
    """Same length, different bytes, in the middle (not only the last piece)."""
    mid = len(data) // 2
    return data[:mid] + bytes(b ^ 0xFF for b in data[mid : mid + 16]) + data[mid + 16 :]


def _recompress(original: bytes, text: bytes) -> bytes:
    """`text` compressed like `original` (by its magic bytes; plain when it has none)."""
    magic = {
        b"\x1f\x8b": ".gz",
        b"\xfd7zXZ": ".xz",
        b"BZh": ".bz2",
        b"\x28\xb5\x2f\xfd": ".zst",
        b"\x04\x22\x4d\x18": ".lz4",
    }
    suffix = next((s for m, s in magic.items() if original.startswith(m)), "")
    if not suffix and original[:1] == b"\x5d":  # legacy .lzma
        suffix = ".lzma"
    return _COMPRESSORS[suffix](text)


class DebRepo:
    """A built repository; served when `server` is running. See the module docstring.

    The upper-case paths (`INRELEASE`, `PACKAGES`...) are those of the first suite
    (of the default shape: `dists/stable/...`); `suite_path` gives any suite's.
    `INRELEASE` and `RELEASE` name the file even where the shape publishes no such file.
    """

    suite = SUITE
    codename: str | None = CODENAME
    components: tuple[str, ...] = (COMPONENT,)
    architectures: tuple[str, ...] = (ARCHITECTURE,)
    DISTS = f"dists/{SUITE}"
    INRELEASE = f"dists/{SUITE}/InRelease"
    RELEASE = f"dists/{SUITE}/Release"
    RELEASE_GPG = f"dists/{SUITE}/Release.gpg"
    PACKAGES = f"dists/{SUITE}/{COMPONENT}/binary-{ARCHITECTURE}/Packages"  # plus .gz, .xz

    def __init__(
        self,
        root: Path,
        key: SigningKey,
        published: Mapping[str, _Published],
        *,
        mutable: bool = True,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        shape: RepoShape = DEBIAN,
        sources: Mapping[str, _PublishedSource] | None = None,
    ) -> None:
        self.root = root
        self.key = key
        self.keyring = key.keyring
        self.keyring_asc = key.keyring_asc
        self.mutable = mutable
        self.clock = clock
        self.shape = shape
        self._published = dict(published)
        self._sources = dict(sources or {})
        self._release_text: dict[str, bytes] = {}
        self.server = RepoServer(root, prefix="/debian")
        first = shape.suites[0]
        self.suite = first
        self.suites = shape.suites
        self.codename = shape.codename
        self.components = shape.components
        self.architectures = shape.architectures
        self.DISTS = suite_dir(first)
        self.INRELEASE = self.suite_path(first, "InRelease")
        self.RELEASE = self.suite_path(first, "Release")
        self.RELEASE_GPG = self.suite_path(first, "Release.gpg")
        self.PACKAGES = self.suite_path(first, self._index_dir(COMPONENT, ARCHITECTURE))

    # --- reading ---

    @property
    def base_url(self) -> str:
        return self.server.base_url

    @property
    def host(self) -> str:
        """`127.0.0.1:PORT`: the upstream's name in edge URLs (`http://EDGE/<host>/debian/...`)."""
        return self.base_url.split("/")[2]

    def url(self, path: str) -> str:
        return f"{self.base_url}/{path}"

    def suite_path(self, suite: str, name: str) -> str:
        """`name` (`InRelease`, `main/binary-amd64/Packages.xz`...) of `suite`, from the root."""
        return suite_path(suite, name)

    def sources_line(self, url: str | None = None, suite: str | None = None) -> str:
        """A one-line-style apt source for this repository (or for `url` standing in for it)."""
        suite = suite or self.suite
        components = "" if is_flat(suite) else " " + " ".join(self.components)
        return f"deb [signed-by={self.keyring}] {url or self.base_url} {suite}{components}"

    @property
    def packages(self) -> list[RepoPackage]:
        return [self._package(p) for _, p in sorted(self._published.items())]

    def package(self, name: str) -> RepoPackage:
        return self._package(self._published[name])

    def _package(self, p: _Published) -> RepoPackage:
        s = p.spec
        url = self.url(p.filename) if self.server.port else ""
        return RepoPackage(
            name=s.name,
            version=s.version,
            architecture=s.architecture,
            source=s.source_name,
            section=s.section,
            filename=p.filename,
            size=p.size,
            sha256=p.sha256,
            path=self.root / p.filename,
            url=url,
        )

    def source_files(self, name: str) -> list[RepoFile]:
        """The files (`.dsc` first) of source package `name`, as its Sources entry lists them."""
        published = self._sources[name]
        directory = self._source_dir(published.spec)
        out = []
        for file, size, sha256, _ in published.files:
            filename = f"{directory}/{file}" if directory else file
            url = self.url(filename) if self.server.port else ""
            out.append(RepoFile(filename, size, sha256, self.root / filename, url))
        return out

    def read(self, path: str) -> bytes:
        return (self.root / path).read_bytes()

    def release(self, suite: str | None = None) -> Release:
        """The Release of `suite` (default: the first), whichever forms the shape signs."""
        return parse_release(self._release_text[suite or self.suite])

    def index_paths(self) -> list[str]:
        """Every file under the suites' directories (by-hash copies included), from the root."""
        found: set[str] = set()
        for suite in self.suites:
            directory = suite_dir(suite)
            base = self.root / directory if directory else self.root
            for p in base.rglob("*"):
                rel = str(p.relative_to(self.root))
                if p.is_file() and (directory or not p.name.endswith((".deb", ".dsc", ".tmp"))):
                    found.add(rel)
        return sorted(found)

    # --- layout ---

    def _index_dir(self, component: str, architecture: str) -> str:
        """Packages' path inside a suite's directory (a flat repository has only one)."""
        if self.shape.flat:
            return "Packages"
        return f"{component}/binary-{architecture}/Packages"

    def _deb_filename(self, spec: PackageSpec) -> str:
        if not self.shape.flat:
            return spec.filename
        directory = suite_dir(self.suite)
        return f"{directory}/{spec.deb_name}" if directory else spec.deb_name

    def _source_dir(self, spec: SourceSpec) -> str:
        return suite_dir(self.suite) if self.shape.flat else spec.directory

    def _listed(self, spec: PackageSpec | SourceSpec, suite: str, component: str) -> bool:
        in_suite = not spec.suites or suite in spec.suites
        return in_suite and (self.shape.flat or spec.component == component)

    def _in_arch(self, spec: PackageSpec, arch: str) -> bool:
        """Debian lists arch-`all` packages in every binary-ARCH index, unless the shape
        gives them a binary-all index of their own; a flat index lists every package."""
        if self.shape.flat or spec.architecture == arch:
            return True
        return arch != "all" and spec.architecture == "all" and not self.shape.arch_all_index

    def _binary_entries(self, suite: str, component: str, arch: str) -> list[PackageEntry]:
        entries = []
        for p in sorted(self._published.values(), key=lambda p: p.spec.name):
            s = p.spec
            if not self._listed(s, suite, component) or not self._in_arch(s, arch):
                continue
            extra = [("Source", s.source_name)] if s.source else []
            extra += [
                ("Installed-Size", str(s.payload_size // KiB + 1)),
                ("Maintainer", "aptmesh tests <tests@aptmesh.invalid>"),
                ("Priority", "optional"),
                *s.fields,
                ("Description", f"aptmesh test package {s.name}\n{s.payload_size} random bytes."),
            ]
            entries.append(
                PackageEntry(
                    package=s.name,
                    version=s.version,
                    architecture=s.architecture,
                    filename=p.filename,
                    size=p.size,
                    sha256=p.sha256,
                    section=s.section,
                    extra=tuple(extra),
                )
            )
        return entries

    def _sources_text(self, suite: str, component: str) -> str | None:
        blocks = []
        for published in sorted(self._sources.values(), key=lambda p: p.spec.name):
            s = published.spec
            if not self._listed(s, suite, component):
                continue
            fields = [
                ("Package", s.name),
                ("Binary", s.name),
                ("Version", s.version),
                ("Maintainer", "aptmesh tests <tests@aptmesh.invalid>"),
                ("Architecture", "all"),
                ("Format", "3.0 (quilt)"),
                ("Directory", self._source_dir(s) or "."),
                ("Priority", "optional"),
                ("Section", s.section),
                ("Files", "".join(f"\n{m} {n} {f}" for f, n, _, m in published.files)),
                ("Checksums-Sha256", "".join(f"\n{h} {n} {f}" for f, n, h, _ in published.files)),
            ]
            blocks.append(dump_deb822([dict(fields)]))
        if not blocks and not (self._sources and self.shape.empty_indexes):
            return None
        return "\n".join(blocks)

    def _suite_indexes(self, suite: str) -> dict[str, bytes]:
        """Uncompressed index text by path inside the suite's directory."""
        shape = self.shape
        indexes: dict[str, bytes] = {}
        arches = [*shape.architectures, *(["all"] if shape.arch_all_index else [])]
        components = [""] if shape.flat else list(shape.components)
        for component in components:
            for arch in arches if not shape.flat else [ARCHITECTURE]:
                entries = self._binary_entries(suite, component, arch)
                if entries or shape.empty_indexes:
                    indexes[self._index_dir(component, arch)] = dump_packages(entries).encode()
            text = self._sources_text(suite, component)
            if text is not None:
                indexes["Sources" if shape.flat else f"{component}/source/Sources"] = text.encode()
        return indexes

    # --- writing ---

    def _check_mutable(self) -> None:
        if not self.mutable:
            raise RuntimeError(
                "this repository is shared by the session; use the `debrepo` fixture to change it"
            )

    def resign(self, *, date: datetime | None = None, valid_for: timedelta | None = None) -> None:
        """Regenerate every suite's indexes, by-hash copies and signed Release files.

        `date` defaults to a minute ago by `clock` (apt refuses dates in its future);
        `valid_for` to the shape's. A file whose content is unchanged keeps its
        mtime; a changed one gets a later mtime even within the same second, so
        conditional requests see it.
        """
        self._check_mutable()
        when = date or self.clock().replace(microsecond=0) - timedelta(minutes=1)
        for suite in self.suites:
            self._write_suite(suite, when, valid_for or self.shape.valid_for)

    def _write_suite(self, suite: str, date: datetime, valid_for: timedelta | None) -> None:
        shape = self.shape
        variants: dict[str, bytes] = {}
        listed: dict[str, bytes] = {}
        for rel, plain in self._suite_indexes(suite).items():
            for suffix in shape.compressions:
                variants[rel + suffix] = _COMPRESSORS[suffix](plain)
            # apt looks an index up by its uncompressed name: archives list it even where
            # they publish only compressed files (Debian's mirrors have no plain Packages).
            listed[rel] = plain
        listed.update(variants)
        directory = suite_dir(suite)
        base = self.root / directory if directory else self.root
        for rel, data in variants.items():
            _write(base / rel, data)
            if shape.by_hash:
                _write(base / by_hash_path(rel, hashlib.sha256(data).hexdigest()), data)
                index_dir = rel.rpartition("/")[0]
                md5_dir = f"{index_dir}/by-hash/MD5Sum" if index_dir else "by-hash/MD5Sum"
                _write(base / md5_dir / _md5(data), data)
        release = Release(
            origin=shape.origin,
            label=shape.label,
            suite=None if shape.flat else suite,
            version=shape.version,
            codename=None if shape.flat else shape.codename,
            date=date,
            valid_until=date + valid_for if valid_for else None,
            acquire_by_hash=shape.acquire_by_hash,
            architectures=(
                () if shape.flat else (*shape.architectures, *(["all"] * shape.arch_all_index))
            ),
            components=shape.components,
            description="aptmesh test repository",
            files={
                rel: FileHash(len(d), hashlib.sha256(d).hexdigest()) for rel, d in listed.items()
            },
            md5sum={rel: (len(d), _md5(d)) for rel, d in listed.items()},
        )
        self._sign(suite, dump_release(release).encode(), self.key)

    def _sign(self, suite: str, text: bytes, key: SigningKey) -> None:
        self._release_text[suite] = text
        signing = self.shape.signing
        if signing is not Signing.INRELEASE:
            _write(self.root / self.suite_path(suite, "Release"), text)
            _write(self.root / self.suite_path(suite, "Release.gpg"), key.detach_sign(text))
        if signing is not Signing.DETACHED:
            _write(self.root / self.suite_path(suite, "InRelease"), key.clearsign(text))

    def add_package(self, spec: PackageSpec) -> RepoPackage:
        """Build and publish `spec` (replacing a package of the same name), then re-sign."""
        self._check_mutable()
        self._published[spec.name] = _build_deb(spec, self.root, self._deb_filename(spec))
        self.resign()
        return self.package(spec.name)

    def remove_package(self, name: str, *, delete_file: bool = True) -> None:
        """Drop `name` from the indexes and re-sign (and delete its pool file)."""
        self._check_mutable()
        gone = self._published.pop(name)
        self.resign()
        if delete_file:
            (self.root / gone.filename).unlink()

    def _suite_of(self, path: str) -> str:
        return next((s for s in self.suites if path.startswith(self.suite_path(s, ""))), self.suite)

    def tamper(self, path: str) -> None:
        """Make `path` fail its check, leaving alone whatever vouches for it.

        - `InRelease`: the signed text changes under the old signature (gpgv: BADSIG);
        - `Packages*` (any variant, by-hash copies too): one package's SHA256 changes,
          recompressed alike, so the file disagrees with Release;
        - anything else (package files, Release): same size, 16 bytes flipped mid-file,
          so only a SHA-256 (or signature) check notices.
        """
        self._check_mutable()
        data = self.read(path)
        name = path.rsplit("/", 1)[-1]
        if name == "InRelease":
            listed = self.release(self._suite_of(path)).files
            digest = next(iter(listed.values())).sha256
            assert digest.encode() in data
            data = data.replace(digest.encode(), hashlib.sha256(b"tampered").hexdigest().encode())
        elif name.startswith("Packages") or "/by-hash/" in path:
            text = decompress_index(data, path)
            first = parse_packages(text)[0].sha256
            text = text.replace(first.encode(), hashlib.sha256(b"tampered").hexdigest().encode(), 1)
            data = _recompress(data, text)
        else:
            data = _corrupt(data)
        _write(self.root / path, data)

    def sign_with_unknown_key(self) -> None:
        """Re-sign the current Release with a fresh key not in `keyring` (gpgv: NO_PUBKEY)."""
        self._check_mutable()
        with tempfile.TemporaryDirectory(prefix="aptmesh-gpg-") as tmp:
            stranger = SigningKey.generate(
                Path(tmp) / "home", "stranger <stranger@aptmesh.invalid>"
            )
            try:
                for suite in self.suites:
                    self._sign(suite, self._release_text[suite], stranger)
            finally:
                stranger.close()

    def copy(self, dest: Path, *, mutable: bool = True) -> DebRepo:
        """A copy of the archive at `dest` (mtimes kept), sharing the key; not served yet."""
        shutil.copytree(self.root, dest, copy_function=shutil.copy2)
        repo = DebRepo(
            dest,
            self.key,
            self._published,
            mutable=mutable,
            clock=self.clock,
            shape=self.shape,
            sources=self._sources,
        )
        repo._release_text = dict(self._release_text)
        return repo

    def close(self) -> None:
        self.server.close()


def build_repo(
    root: Path,
    key: SigningKey,
    packages: Sequence[PackageSpec] = DEFAULT_PACKAGES,
    *,
    mutable: bool = True,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    shape: RepoShape = DEBIAN,
    sources: Sequence[SourceSpec] = (),
) -> DebRepo:
    """Build and sign a repository of `shape` at `root` (the archive root); not served yet."""
    root.mkdir(parents=True, exist_ok=True)
    repo = DebRepo(root, key, {}, mutable=True, clock=clock, shape=shape)
    for spec in packages:
        repo._published[spec.name] = _build_deb(spec, root, repo._deb_filename(spec))
    for source in sources:
        built = _build_source(source, root / repo._source_dir(source))
        repo._sources[source.name] = built
    repo.resign()
    repo.mutable = mutable
    return repo


# --- serving ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ServedRequest:
    method: str
    path: str  # relative to the archive root, percent-decoded
    status: int
    range: str | None  # the Range header, as sent
    if_modified_since: str | None
    bytes_sent: int  # body bytes handed to the connection so far (0 for HEAD, 304, 416)


_RANGE = re.compile(r"bytes=(\d*)-(\d*)")
_CHUNK = 64 * KiB


def _byte_range(header: str, size: int) -> tuple[int, int] | None:
    """(first, last) of a single-range header; None to ignore it; (size, size) if unsatisfiable."""
    m = _RANGE.fullmatch(header.strip())
    if m is None or (not m[1] and not m[2]):
        return None  # multiple ranges or junk: RFC 9110 lets us send the whole file
    if not m[1]:
        suffix = int(m[2])
        return (max(0, size - suffix), size - 1) if suffix and size else (size, size)
    first = int(m[1])
    last = min(int(m[2]), size - 1) if m[2] else size - 1
    if m[2] and int(m[2]) < first:
        return None
    return (first, last) if first < size else (size, size)


@dataclass(frozen=True)
class Misbehaviour:
    """What the server does instead of serving a path (`RepoServer.misbehave`): answer
    `status` with no body, or serve `body` (an older InRelease, say) as if it were the file,
    with `last_modified` (unix time; default: the file's) for its validators."""

    status: int | None = None
    body: bytes | None = None
    last_modified: float | None = None


class RepoServer:
    """Serves `root` at `http://127.0.0.1:PORT<prefix>/` from a background thread.

    GET and HEAD with Last-Modified/ETag, If-Modified-Since/If-None-Match (304),
    single byte ranges with If-Range (206, 416); nothing else. It records every
    request (`log`, `requests`, `bytes_served`). `stop()` closes the port and
    every connection; `start()` reopens the same port. `rate_limit` (bytes per
    second, None for unlimited) paces bodies, so tests can catch transfers in
    flight. `misbehave(pattern, Misbehaviour(...))` makes it fail or lie for the
    paths matching an fnmatch pattern (a mirror's faults: 500s, a replayed old
    file, a future Last-Modified) until `behave()`.
    """

    def __init__(self, root: Path, prefix: str = "/debian") -> None:
        self.root = root.resolve()
        self.prefix = prefix.rstrip("/")
        self.port = 0
        self.rate_limit: float | None = None
        self._faults: dict[str, Misbehaviour] = {}
        self._log: list[tuple[str, str, int, str | None, str | None, list[int]]] = []
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None

    @property
    def running(self) -> bool:
        return self._runner is not None

    @property
    def base_url(self) -> str:
        if not self.port:
            raise RuntimeError("the repository server was never started")
        return f"http://127.0.0.1:{self.port}{self.prefix}"

    # --- counters ---

    @property
    def log(self) -> list[ServedRequest]:
        with self._lock:
            return [ServedRequest(m, p, s, r, i, sent[0]) for m, p, s, r, i, sent in self._log]

    def requests(self, path: str, method: str | None = None) -> int:
        """How many requests for `path` (relative to the archive root) arrived."""
        return sum(1 for r in self.log if r.path == path and method in (None, r.method))

    def bytes_served(self, path: str | None = None) -> int:
        return sum(r.bytes_sent for r in self.log if path in (None, r.path))

    def reset_counters(self) -> None:
        with self._lock:
            self._log.clear()

    # --- faults ---

    def misbehave(self, pattern: str, fault: Misbehaviour) -> None:
        """From now on, paths matching `pattern` (fnmatch, relative to the archive root) get
        `fault` instead of the file."""
        with self._lock:
            self._faults[pattern] = fault

    def behave(self) -> None:
        """Serves every file as it is again."""
        with self._lock:
            self._faults.clear()

    def _fault(self, rel: str) -> Misbehaviour | None:
        with self._lock:
            return next((f for p, f in self._faults.items() if fnmatch.fnmatchcase(rel, p)), None)

    # --- lifecycle ---

    def start(self) -> None:
        if self.running:
            return
        if self._loop is None:
            self._loop = asyncio.new_event_loop()
            self._thread = threading.Thread(
                target=self._loop.run_forever, name="debrepo-http", daemon=True
            )
            self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(timeout=30)

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_route("*", self.prefix + "/{path:.*}", self._handle)
        # A short shutdown: stop() must cut transfers in flight, as an upstream going down does.
        runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=0.1)
        await runner.setup()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("127.0.0.1", self.port))
            self.port = sock.getsockname()[1]
            await web.SockSite(runner, sock).start()
        except BaseException:
            sock.close()
            await runner.cleanup()
            raise
        self._runner = runner

    def stop(self) -> None:
        """Close the port and all connections (upstream down); `start()` brings it back."""
        runner, self._runner = self._runner, None
        if runner is not None and self._loop is not None:
            asyncio.run_coroutine_threadsafe(runner.cleanup(), self._loop).result(timeout=30)

    def close(self) -> None:
        self.stop()
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=30)
            self._loop.close()
            self._loop = self._thread = None

    # --- handler ---

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        rel = request.match_info["path"]
        response, status, body = self._respond(request, rel)
        # Recorded before any byte leaves, so a client that has its answer sees it counted.
        served = [0]
        headers = request.headers
        entry = (
            request.method,
            rel,
            status,
            headers.get("Range"),
            headers.get("If-Modified-Since"),
            served,
        )
        with self._lock:
            self._log.append(entry)
        if body is None or request.method == "HEAD":
            return response
        await response.prepare(request)
        source, first, last = body
        with io.BytesIO(source) if isinstance(source, bytes) else source.open("rb") as f:
            f.seek(first)
            remaining = last - first + 1
            while chunk := f.read(min(_CHUNK, remaining)):
                with self._lock:
                    served[0] += len(chunk)
                await response.write(chunk)
                remaining -= len(chunk)
                if self.rate_limit:
                    await asyncio.sleep(len(chunk) / self.rate_limit)
        await response.write_eof()
        return response

    def _respond(
        self, request: web.Request, rel: str
    ) -> tuple[web.StreamResponse, int, tuple[Path | bytes, int, int] | None]:
        if request.method not in ("GET", "HEAD"):
            return web.Response(status=405, headers={"Allow": "GET, HEAD"}), 405, None
        path = (self.root / rel).resolve()
        if not path.is_relative_to(self.root) or not path.is_file():
            return web.Response(status=404, text="not found\n"), 404, None
        fault = self._fault(rel)
        if fault is not None and fault.status is not None:
            return web.Response(status=fault.status, text="misbehaving\n"), fault.status, None
        st = path.stat()
        size, mtime_ns = st.st_size, st.st_mtime_ns
        if fault is not None and fault.body is not None:
            size = len(fault.body)
        if fault is not None and fault.last_modified is not None:
            mtime_ns = int(fault.last_modified * 1e9)
        etag = f'"{size:x}-{mtime_ns:x}"'
        last_modified = formatdate(mtime_ns // 10**9, usegmt=True)
        headers = {
            "Last-Modified": last_modified,
            "ETag": etag,
            "Accept-Ranges": "bytes",
            "Content-Type": "application/octet-stream",
        }
        ims = request.if_modified_since
        inm = request.headers.get("If-None-Match")
        if inm is not None:
            if inm.strip() == "*" or etag in (t.strip() for t in inm.split(",")):
                return web.Response(status=304, headers=headers), 304, None
        elif ims is not None and mtime_ns // 10**9 <= ims.timestamp():
            return web.Response(status=304, headers=headers), 304, None
        first, last, status = 0, size - 1, 200
        if_range = request.headers.get("If-Range")
        header = request.headers.get("Range")
        if header and if_range in (None, etag, last_modified):
            wanted = _byte_range(header, size)
            if wanted == (size, size):
                headers["Content-Range"] = f"bytes */{size}"
                return web.Response(status=416, headers=headers), 416, None
            if wanted is not None:
                first, last, status = wanted[0], wanted[1], 206
                headers["Content-Range"] = f"bytes {first}-{last}/{size}"
        response = web.StreamResponse(status=status, headers=headers)
        response.content_length = last - first + 1
        served = fault.body if fault is not None and fault.body is not None else path
        return response, status, (served, first, last)


# --- apt with an isolated configuration ------------------------------------------------------


@dataclass(frozen=True)
class AptEnv:
    """An apt configuration rooted in a test directory, touching nothing of the host's.

    apt reads the host's apt.conf.d before it parses `-o`, so isolation needs
    `APT_CONFIG`: `env` points it at a file holding the same settings as
    `options`. Run apt as `aptenv.run("apt-get", "update")`, or pass
    `[tool, *aptenv.options, ...]` with `env=aptenv.env` yourself.
    """

    root: Path
    options: list[str]
    env: dict[str, str]
    settings: dict[str, str] = field(default_factory=dict)

    @property
    def lists(self) -> Path:
        return self.root / "var/lib/apt/lists"

    @property
    def archives(self) -> Path:
        return self.root / "var/cache/apt/archives"

    def run(
        self,
        tool: str,
        *args: str,
        check: bool = True,
        timeout: float = 60,
        cwd: Path | None = None,
    ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [tool, *self.options, *args],
            capture_output=True,
            text=True,
            env=self.env,
            timeout=timeout,
            check=False,
            cwd=cwd or self.root,
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"{tool} {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
            )
        return proc


def apt_env(
    tmp: Path, sources: str | Sequence[str], extra: Mapping[str, str] | None = None
) -> AptEnv:
    """Lay out an apt root in `tmp` with `sources` (one-line-style lines) as its sources.list.

    `extra` adds or overrides settings (e.g. `{"Acquire::http::Proxy": URL}`,
    `{"Dir::Bin::Methods::mesh+http": PATH}`). Retries are off and languages
    are none, so a failure shows at once.
    """
    root = tmp.resolve()
    for d in (
        "etc/apt/apt.conf.d",
        "etc/apt/sources.list.d",
        "etc/apt/preferences.d",
        "etc/apt/trusted.gpg.d",
        "var/lib/apt/lists/partial",
        "var/cache/apt/archives/partial",
        "var/lib/dpkg",
        "var/log/apt",
    ):
        (root / d).mkdir(parents=True, exist_ok=True)
    lines = [sources] if isinstance(sources, str) else list(sources)
    (root / "etc/apt/sources.list").write_text("".join(line + "\n" for line in lines))
    (root / "var/lib/dpkg/status").touch()
    settings = {
        "Dir": f"{root}/",
        "Dir::State": "var/lib/apt/",
        "Dir::State::status": f"{root}/var/lib/dpkg/status",
        "Dir::Cache": "var/cache/apt/",
        "Dir::Etc": "etc/apt/",
        "Dir::Etc::Main": "apt.conf",
        "Dir::Etc::Parts": "apt.conf.d/",
        "Dir::Etc::SourceList": "sources.list",
        "Dir::Etc::SourceParts": "sources.list.d/",
        "Dir::Etc::Preferences": "preferences",
        "Dir::Etc::PreferencesParts": "preferences.d/",
        "Dir::Etc::Trusted": "trusted.gpg",
        "Dir::Etc::TrustedParts": "trusted.gpg.d/",
        "Dir::Log": "var/log/apt/",
        "APT::Sandbox::User": "root",
        "APT::Architecture": ARCHITECTURE,
        "APT::Architectures": ARCHITECTURE,
        "Acquire::Languages": "none",
        "Acquire::Retries": "0",
        "Debug::NoLocking": "true",
        **(extra or {}),
    }
    conf = root / "apt.conf"
    conf.write_text("".join(f'{name} "{value}";\n' for name, value in settings.items()))
    env = {
        k: v
        for k, v in os.environ.items()
        if k.lower() not in ("http_proxy", "https_proxy", "no_proxy", "all_proxy")
    }
    env.update(APT_CONFIG=str(conf), LC_ALL="C")
    options = [arg for name, value in settings.items() for arg in ("-o", f"{name}={value}")]
    return AptEnv(root, options, env, settings)


__all__ = [
    "BY_HASH_UNANNOUNCED",
    "DEBIAN",
    "DEFAULT_PACKAGES",
    "DETACHED_ONLY",
    "FLAT",
    "INRELEASE_ONLY",
    "NO_BY_HASH",
    "UBUNTU",
    "UBUNTU_PACKAGES",
    "UBUNTU_SUITES",
    "VENDOR",
    "RepoFile",
    "RepoShape",
    "Signing",
    "SourceSpec",
    "SWARM_MIN_SIZE",
    "AptEnv",
    "DebRepo",
    "Misbehaviour",
    "PackageSpec",
    "RepoPackage",
    "RepoServer",
    "ServedRequest",
    "SigningKey",
    "apt_env",
    "build_repo",
]
