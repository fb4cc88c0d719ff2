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
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import formatdate
from pathlib import Path

from aiohttp import web

from aptmesh.debian import (
    FileHash,
    PackageEntry,
    Release,
    by_hash_path,
    decompress_index,
    dump_packages,
    dump_release,
    parse_packages,
    parse_release,
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

    @property
    def source_name(self) -> str:
        return self.source or self.name

    @property
    def filename(self) -> str:
        """Pool path: the version's epoch is not part of file names."""
        src = self.source_name
        initial = src[:4] if src.startswith("lib") else src[0]
        version = self.version.partition(":")[2] or self.version
        deb = f"{self.name}_{version}_{self.architecture}.deb"
        return f"pool/{COMPONENT}/{initial}/{src}/{deb}"


DEFAULT_PACKAGES: tuple[PackageSpec, ...] = (
    PackageSpec("aptmesh-tiny", "1.0-1", 20 * KiB, section="utils"),
    PackageSpec("libaptmesh-test1", "1.2.3-1", 80 * KiB, source="libaptmesh-test", section="libs"),
    PackageSpec("aptmesh-medium", "2.0~rc1+dfsg-1", 200 * KiB),
    PackageSpec("aptmesh-large", "1:3.1-2", 3 * MiB // 2, section="net"),
    PackageSpec("aptmesh-huge", "0.9-1", 3 * MiB, architecture="all", section="doc"),
)


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
    size: int
    sha256: str


def _build_deb(spec: PackageSpec, dest: Path) -> _Published:
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
    return _Published(spec, len(data), hashlib.sha256(data).hexdigest())


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


class DebRepo:
    """A built repository; served when `server` is running. See the module docstring."""

    suite = SUITE
    codename = CODENAME
    components = (COMPONENT,)
    architectures = (ARCHITECTURE,)
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
    ) -> None:
        self.root = root
        self.key = key
        self.keyring = key.keyring
        self.keyring_asc = key.keyring_asc
        self.mutable = mutable
        self.clock = clock
        self._published = dict(published)
        self.server = RepoServer(root, prefix="/debian")

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

    def sources_line(self, url: str | None = None) -> str:
        """A one-line-style apt source for this repository (or for `url` standing in for it)."""
        return f"deb [signed-by={self.keyring}] {url or self.base_url} {SUITE} {COMPONENT}"

    @property
    def packages(self) -> list[RepoPackage]:
        return [self._package(p) for _, p in sorted(self._published.items())]

    def package(self, name: str) -> RepoPackage:
        return self._package(self._published[name])

    def _package(self, p: _Published) -> RepoPackage:
        s = p.spec
        url = self.url(s.filename) if self.server.port else ""
        return RepoPackage(
            name=s.name,
            version=s.version,
            architecture=s.architecture,
            source=s.source_name,
            section=s.section,
            filename=s.filename,
            size=p.size,
            sha256=p.sha256,
            path=self.root / s.filename,
            url=url,
        )

    def read(self, path: str) -> bytes:
        return (self.root / path).read_bytes()

    def release(self) -> Release:
        return parse_release(self.read(self.RELEASE))

    def index_paths(self) -> list[str]:
        """Every file under dists/ (by-hash copies included), relative to the archive root."""
        return sorted(
            str(p.relative_to(self.root)) for p in (self.root / "dists").rglob("*") if p.is_file()
        )

    # --- writing ---

    def _check_mutable(self) -> None:
        if not self.mutable:
            raise RuntimeError(
                "this repository is shared by the session; use the `debrepo` fixture to change it"
            )

    def resign(
        self, *, date: datetime | None = None, valid_for: timedelta = timedelta(days=7)
    ) -> None:
        """Regenerate Packages, Release, by-hash copies, InRelease and Release.gpg.

        `date` defaults to a minute ago by `clock` (apt refuses dates in its future).
        A file whose content is unchanged keeps its mtime; a changed one gets a
        later mtime even within the same second, so conditional requests see it.
        """
        self._check_mutable()
        self._write_indexes(
            date or self.clock().replace(microsecond=0) - timedelta(minutes=1), valid_for
        )

    def _write_indexes(self, date: datetime, valid_for: timedelta) -> None:
        entries = []
        for p in sorted(self._published.values(), key=lambda p: p.spec.name):
            s = p.spec
            extra = [("Source", s.source_name)] if s.source else []
            extra += [
                ("Installed-Size", str(s.payload_size // KiB + 1)),
                ("Maintainer", "aptmesh tests <tests@aptmesh.invalid>"),
                ("Priority", "optional"),
                ("Description", f"aptmesh test package {s.name}\n{s.payload_size} random bytes."),
            ]
            entry = PackageEntry(
                package=s.name,
                version=s.version,
                architecture=s.architecture,
                filename=s.filename,
                size=p.size,
                sha256=p.sha256,
                section=s.section,
                extra=tuple(extra),
            )
            entries.append(entry)
        plain = dump_packages(entries).encode()
        index_dir = f"{COMPONENT}/binary-{ARCHITECTURE}"
        variants = {
            f"{index_dir}/Packages": plain,
            f"{index_dir}/Packages.gz": gzip.compress(plain, mtime=0),
            f"{index_dir}/Packages.xz": lzma.compress(plain),
        }
        dists = self.root / self.DISTS
        for rel, data in variants.items():
            _write(dists / rel, data)
            _write(dists / by_hash_path(rel, hashlib.sha256(data).hexdigest()), data)
            md5 = hashlib.md5(data, usedforsecurity=False).hexdigest()
            _write(dists / f"{index_dir}/by-hash/MD5Sum/{md5}", data)
        release = Release(
            origin="aptmesh",
            label="aptmesh-test",
            suite=SUITE,
            codename=CODENAME,
            date=date,
            valid_until=date + valid_for,
            acquire_by_hash=True,
            architectures=(ARCHITECTURE,),
            components=(COMPONENT,),
            description="aptmesh test repository",
            files={
                rel: FileHash(len(d), hashlib.sha256(d).hexdigest()) for rel, d in variants.items()
            },
            md5sum={
                rel: (len(d), hashlib.md5(d, usedforsecurity=False).hexdigest())
                for rel, d in variants.items()
            },
        )
        self._sign(dump_release(release).encode(), self.key)

    def _sign(self, text: bytes, key: SigningKey) -> None:
        _write(self.root / self.RELEASE, text)
        _write(self.root / self.INRELEASE, key.clearsign(text))
        _write(self.root / self.RELEASE_GPG, key.detach_sign(text))

    def add_package(self, spec: PackageSpec) -> RepoPackage:
        """Build and publish `spec` (replacing a package of the same name), then re-sign."""
        self._check_mutable()
        self._published[spec.name] = _build_deb(spec, self.root / spec.filename)
        self.resign()
        return self.package(spec.name)

    def remove_package(self, name: str, *, delete_file: bool = True) -> None:
        """Drop `name` from the indexes and re-sign (and delete its pool file)."""
        self._check_mutable()
        gone = self._published.pop(name)
        self.resign()
        if delete_file:
            (self.root / gone.spec.filename).unlink()

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
            digest = self.release().files[f"{COMPONENT}/binary-{ARCHITECTURE}/Packages"].sha256
            assert digest.encode() in data
            data = data.replace(digest.encode(), hashlib.sha256(b"tampered").hexdigest().encode())
        elif name.startswith("Packages") or "/by-hash/" in path:
            text = decompress_index(data, path)
            first = parse_packages(text)[0].sha256
            text = text.replace(first.encode(), hashlib.sha256(b"tampered").hexdigest().encode(), 1)
            if data.startswith(b"\x1f\x8b"):
                data = gzip.compress(text, mtime=0)
            elif data.startswith(b"\xfd7zXZ"):
                data = lzma.compress(text)
            else:
                data = text
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
                self._sign(self.read(self.RELEASE), stranger)
            finally:
                stranger.close()

    def copy(self, dest: Path, *, mutable: bool = True) -> DebRepo:
        """A copy of the archive at `dest` (mtimes kept), sharing the key; not served yet."""
        shutil.copytree(self.root, dest, copy_function=shutil.copy2)
        return DebRepo(dest, self.key, self._published, mutable=mutable, clock=self.clock)

    def close(self) -> None:
        self.server.close()


def build_repo(
    root: Path,
    key: SigningKey,
    packages: Sequence[PackageSpec] = DEFAULT_PACKAGES,
    *,
    mutable: bool = True,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> DebRepo:
    """Build and sign a repository at `root` (which becomes the archive root); not served yet."""
    root.mkdir(parents=True, exist_ok=True)
    published = {s.name: _build_deb(s, root / s.filename) for s in packages}
    repo = DebRepo(root, key, published, mutable=True, clock=clock)
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
    "DEFAULT_PACKAGES",
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
