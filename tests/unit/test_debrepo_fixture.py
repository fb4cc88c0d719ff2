"""The signed repository fixture is a real Debian repository, served correctly.

Sockets: these tests talk HTTP to the fixture's loopback server, and run a
real apt-get against it; that is what they prove.
"""

from __future__ import annotations

import hashlib
import http.client
import time
from datetime import timedelta
from email.utils import formatdate, parsedate_to_datetime
from pathlib import Path
from urllib.parse import quote, urlsplit

import pytest

from aptmesh import debian
from aptmesh.debian import IndexHashError, PackageHashError, SignatureError
from aptmesh.debrepo import (
    SWARM_MIN_SIZE,
    DebRepo,
    Misbehaviour,
    PackageSpec,
    apt_env,
)

PACKAGES_DIR = "main/binary-amd64"


def _request(
    repo: DebRepo, path: str, method: str = "GET", headers: dict[str, str] | None = None
) -> tuple[int, http.client.HTTPMessage, bytes]:
    url = urlsplit(repo.url(path))
    conn = http.client.HTTPConnection(url.hostname or "", url.port, timeout=10)
    try:
        conn.request(method, url.path, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.headers, response.read()
    finally:
        conn.close()


def _verified_release(repo: DebRepo) -> debian.Release:
    return debian.parse_release(debian.verify_inrelease(repo.read(repo.INRELEASE), repo.keyring))


# --- the archive ---


def test_inrelease_verifies_with_both_keyrings(debrepo_session: DebRepo) -> None:
    repo = debrepo_session
    signed = debian.verify_inrelease(repo.read(repo.INRELEASE), repo.keyring)
    assert signed == repo.read(repo.RELEASE)
    assert debian.verify_inrelease(repo.read(repo.INRELEASE), repo.keyring_asc) == signed
    release = repo.read(repo.RELEASE)
    debian.verify_detached(release, repo.read(repo.RELEASE_GPG), repo.keyring)
    parsed = debian.parse_release(signed)
    assert (parsed.suite, parsed.codename) == (repo.suite, repo.codename)
    assert parsed.acquire_by_hash
    assert parsed.date is not None and parsed.valid_until is not None
    assert parsed.date < parsed.valid_until
    assert set(parsed.md5sum) == set(parsed.files)


def test_packages_variants_and_by_hash_copies_match_release(debrepo_session: DebRepo) -> None:
    repo = debrepo_session
    release = _verified_release(repo)
    base = f"{PACKAGES_DIR}/Packages"
    assert set(release.files) == {base, base + ".gz", base + ".xz"}
    assert debian.pick_index_variant(release, base) == base + ".xz"
    entries = []
    for rel, expected in release.files.items():
        data = repo.read(f"{repo.DISTS}/{rel}")
        entries.append(debian.load_packages(release, rel, data))
        by_hash = debian.by_hash_path(rel, expected.sha256)
        assert repo.read(f"{repo.DISTS}/{by_hash}") == data
        md5 = release.md5sum[rel][1]
        assert repo.read(f"{repo.DISTS}/{PACKAGES_DIR}/by-hash/MD5Sum/{md5}") == data
    assert entries[0] == entries[1] == entries[2]


def test_packages_match_their_files_and_the_fixture_api(debrepo_session: DebRepo) -> None:
    repo = debrepo_session
    release = _verified_release(repo)
    rel = f"{PACKAGES_DIR}/Packages.xz"
    entries = debian.load_packages(release, rel, repo.read(f"{repo.DISTS}/{rel}"))
    by_name = {e.package: e for e in entries}
    assert sorted(by_name) == [p.name for p in repo.packages]
    for pkg in repo.packages:
        entry = by_name[pkg.name]
        assert (entry.version, entry.filename, entry.expected) == (
            pkg.version,
            pkg.filename,
            pkg.expected,
        )
        assert pkg.path == repo.root / pkg.filename
        debian.check_package_file(pkg.path, entry.expected, entry.filename)
        assert pkg.url == f"{repo.base_url}/{pkg.filename}"
        assert debian.classify_path(pkg.filename) is debian.FileClass.PACKAGE
    sizes = sorted(p.size for p in repo.packages)
    assert sum(s < SWARM_MIN_SIZE for s in sizes) == 3
    assert [s for s in sizes if s >= SWARM_MIN_SIZE] == [s for s in sizes[3:]]
    assert 1.4 * 2**20 < sizes[3] < 1.7 * 2**20 and 2.9 * 2**20 < sizes[4] < 3.2 * 2**20
    medium = repo.package("aptmesh-medium")
    assert medium.version == "2.0~rc1+dfsg-1"
    assert medium.filename == "pool/main/a/aptmesh-medium/aptmesh-medium_2.0~rc1+dfsg-1_amd64.deb"
    large = repo.package("aptmesh-large")
    assert large.version == "1:3.1-2" and large.filename.endswith("/aptmesh-large_3.1-2_amd64.deb")
    assert repo.package("libaptmesh-test1").filename.startswith("pool/main/liba/libaptmesh-test/")
    assert repo.package("aptmesh-huge").filename.endswith("_all.deb")
    assert [p.name for p in repo.packages if p.swarmed] == ["aptmesh-huge", "aptmesh-large"]


def test_session_repository_is_read_only(debrepo_session: DebRepo) -> None:
    with pytest.raises(RuntimeError, match="use the `debrepo` fixture"):
        debrepo_session.tamper(debrepo_session.INRELEASE)
    with pytest.raises(RuntimeError):
        debrepo_session.remove_package("aptmesh-tiny")


# --- HTTP ---


def test_get_head_and_counters(debrepo: DebRepo) -> None:
    pkg = debrepo.package("aptmesh-medium")
    status, headers, body = _request(debrepo, pkg.filename)
    assert status == 200 and hashlib.sha256(body).hexdigest() == pkg.sha256
    assert headers["Accept-Ranges"] == "bytes"
    status, headers, body = _request(debrepo, pkg.filename, "HEAD")
    assert (status, body, int(headers["Content-Length"])) == (200, b"", pkg.size)
    status, _, body = _request(debrepo, quote(pkg.filename))  # %7E, %2B decode to ~, +
    assert status == 200 and len(body) == pkg.size
    assert debrepo.server.requests(pkg.filename) == 3
    assert debrepo.server.requests(pkg.filename, "HEAD") == 1
    assert debrepo.server.bytes_served(pkg.filename) == 2 * pkg.size
    assert _request(debrepo, "pool/nothing.deb")[0] == 404
    assert _request(debrepo, "../../../etc/passwd")[0] == 404
    assert _request(debrepo, "pool/main/a/%2E%2E/%2E%2E/%2E%2E/%2E%2E/etc/passwd")[0] == 404
    assert _request(debrepo, "pool", "POST")[0] == 405
    debrepo.server.reset_counters()
    assert debrepo.server.log == []


@pytest.mark.parametrize(
    ("header", "first", "last"),
    [
        ("bytes=0-99", 0, 99),
        ("bytes=1000-", 1000, None),
        ("bytes=-500", None, None),
        ("bytes=10-99999999", 10, None),
    ],
)
def test_ranges(debrepo: DebRepo, header: str, first: int | None, last: int | None) -> None:
    pkg = debrepo.package("aptmesh-large")
    data = pkg.path.read_bytes()
    if first is None:
        first = pkg.size - 500
    if last is None:
        last = pkg.size - 1
    status, headers, body = _request(debrepo, pkg.filename, headers={"Range": header})
    assert status == 206
    assert headers["Content-Range"] == f"bytes {first}-{last}/{pkg.size}"
    assert body == data[first : last + 1]
    assert debrepo.server.bytes_served(pkg.filename) == len(body)


def test_unsatisfiable_and_if_range(debrepo: DebRepo) -> None:
    pkg = debrepo.package("aptmesh-tiny")
    status, headers, body = _request(debrepo, pkg.filename, headers={"Range": f"bytes={pkg.size}-"})
    assert (status, headers["Content-Range"], body) == (416, f"bytes */{pkg.size}", b"")
    _, headers, _ = _request(debrepo, pkg.filename, "HEAD")
    fresh = {"Range": "bytes=0-9", "If-Range": headers["ETag"]}
    assert _request(debrepo, pkg.filename, headers=fresh)[0] == 206
    assert (
        _request(debrepo, pkg.filename, headers={**fresh, "If-Range": headers["Last-Modified"]})[0]
        == 206
    )
    stale = {"Range": "bytes=0-9", "If-Range": formatdate(0, usegmt=True)}
    status, _, body = _request(debrepo, pkg.filename, headers=stale)
    assert (status, len(body)) == (200, pkg.size)
    status, _, body = _request(debrepo, pkg.filename, headers={"Range": "bytes=0-1,5-9"})
    assert (status, len(body)) == (200, pkg.size)  # multiple ranges: the whole file


def test_conditional_requests(debrepo: DebRepo) -> None:
    path = debrepo.INRELEASE
    status, headers, _ = _request(debrepo, path)
    last_modified, etag = headers["Last-Modified"], headers["ETag"]
    assert status == 200
    assert _request(debrepo, path, headers={"If-Modified-Since": last_modified})[0] == 304
    assert _request(debrepo, path, "HEAD", {"If-Modified-Since": last_modified})[0] == 304
    assert _request(debrepo, path, headers={"If-None-Match": etag})[0] == 304
    older = formatdate(parsedate_to_datetime(last_modified).timestamp() - 1, usegmt=True)
    assert _request(debrepo, path, headers={"If-Modified-Since": older})[0] == 200
    date = debrepo.release().date
    assert date is not None
    debrepo.resign(date=date + timedelta(seconds=1))  # Last-Modified moves, even in the same second
    status, headers, _ = _request(debrepo, path, headers={"If-Modified-Since": last_modified})
    assert status == 200
    assert parsedate_to_datetime(headers["Last-Modified"]) > parsedate_to_datetime(last_modified)
    assert [r.status for r in debrepo.server.log] == [200, 304, 304, 304, 200, 200]
    assert debrepo.server.log[1].if_modified_since == last_modified


def test_stop_and_start_on_the_same_port(debrepo: DebRepo) -> None:
    url = debrepo.base_url
    debrepo.server.stop()
    with pytest.raises(ConnectionRefusedError):
        _request(debrepo, debrepo.INRELEASE)
    assert debrepo.package("aptmesh-tiny").url.startswith(url)  # still known while down
    debrepo.server.start()
    assert debrepo.base_url == url
    assert debrepo.host == urlsplit(url).netloc
    assert _request(debrepo, debrepo.INRELEASE)[0] == 200


def test_stop_cuts_transfers_in_flight(debrepo: DebRepo) -> None:
    pkg = debrepo.package("aptmesh-huge")
    debrepo.server.rate_limit = 2 * 2**20  # about 1.5 s for the whole file
    url = urlsplit(pkg.url)
    conn = http.client.HTTPConnection(url.hostname or "", url.port, timeout=10)
    try:
        conn.request("GET", url.path)
        response = conn.getresponse()
        assert len(response.read(64 * 1024)) == 64 * 1024
        debrepo.server.stop()
        with pytest.raises(http.client.IncompleteRead):
            response.read()
    finally:
        conn.close()
    assert debrepo.server.bytes_served(pkg.filename) < pkg.size


def test_rate_limit_paces_bodies(debrepo: DebRepo) -> None:
    pkg = debrepo.package("aptmesh-large")
    debrepo.server.rate_limit = 8 * 2**20
    started = time.monotonic()
    status, _, body = _request(debrepo, pkg.filename)
    assert status == 200 and len(body) == pkg.size
    assert time.monotonic() - started >= pkg.size / (8 * 2**20) * 0.9


# --- test hooks ---


def test_tamper_package_keeps_size_breaks_hash(debrepo: DebRepo) -> None:
    pkg = debrepo.package("aptmesh-huge")
    debrepo.tamper(pkg.filename)
    assert pkg.path.stat().st_size == pkg.size
    with pytest.raises(PackageHashError, match="SHA-256"):
        debian.check_package_file(pkg.path, pkg.expected, pkg.filename)
    _verified_release(debrepo)  # indexes untouched
    _, _, body = _request(debrepo, pkg.filename)
    assert len(body) == pkg.size and hashlib.sha256(body).hexdigest() != pkg.sha256


def test_tamper_inrelease_breaks_the_signature(debrepo: DebRepo) -> None:
    before = debrepo.read(debrepo.INRELEASE)
    debrepo.tamper(debrepo.INRELEASE)
    assert debrepo.read(debrepo.INRELEASE) != before
    with pytest.raises(SignatureError, match="BADSIG"):
        _verified_release(debrepo)


def test_sign_with_unknown_key(debrepo: DebRepo) -> None:
    debrepo.sign_with_unknown_key()
    with pytest.raises(SignatureError, match="no public key"):
        _verified_release(debrepo)
    with pytest.raises(SignatureError, match="no public key"):
        debian.verify_detached(
            debrepo.read(debrepo.RELEASE), debrepo.read(debrepo.RELEASE_GPG), debrepo.keyring
        )


@pytest.mark.parametrize("suffix", ["", ".gz", ".xz", "by-hash"])
def test_tamper_packages_disagrees_with_release(debrepo: DebRepo, suffix: str) -> None:
    release = _verified_release(debrepo)
    rel = f"{PACKAGES_DIR}/Packages{suffix}"
    if suffix == "by-hash":
        rel = debian.by_hash_path(
            f"{PACKAGES_DIR}/Packages.xz", release.files[f"{PACKAGES_DIR}/Packages.xz"].sha256
        )
    path = f"{debrepo.DISTS}/{rel}"
    debrepo.tamper(path)
    data = debrepo.read(path)
    assert len(debian.parse_packages(debian.decompress_index(data, rel))) == len(debrepo.packages)
    with pytest.raises(IndexHashError):
        debian.load_packages(release, rel, data)


def _published(repo: DebRepo) -> dict[str, debian.PackageEntry]:
    """The entries of the repository's Packages.gz, through the verified chain."""
    release = _verified_release(repo)
    rel = f"{PACKAGES_DIR}/Packages.gz"
    entries = debian.load_packages(release, rel, repo.read(f"{repo.DISTS}/{rel}"))
    return {e.package: e for e in entries}


def test_add_and_remove_package(debrepo: DebRepo) -> None:
    spec = PackageSpec("aptmesh-extra", "5.0+git20240101-0.1", 50 * 1024, section="misc")
    added = debrepo.add_package(spec)
    assert _published(debrepo)["aptmesh-extra"].expected == added.expected
    status, _, body = _request(debrepo, added.filename)
    assert status == 200 and hashlib.sha256(body).hexdigest() == added.sha256

    gone = debrepo.package("aptmesh-huge")
    debrepo.remove_package("aptmesh-huge")
    published = _published(debrepo)
    assert "aptmesh-huge" not in published and "aptmesh-extra" in published
    assert "aptmesh-huge" not in {p.name for p in debrepo.packages}
    assert _request(debrepo, gone.filename)[0] == 404


# --- real apt ---


def test_apt_get_update_and_download(debrepo: DebRepo, tmp_path: Path) -> None:
    apt = apt_env(tmp_path / "apt", debrepo.sources_line())
    apt.run("apt-get", "update")
    log = debrepo.server.log
    assert any("/by-hash/SHA256/" in r.path and r.status == 200 for r in log)
    show = apt.run("apt-cache", "show", "aptmesh-medium").stdout
    assert "Version: 2.0~rc1+dfsg-1" in show
    apt.run("apt-get", "download", "aptmesh-medium", "aptmesh-large", cwd=tmp_path)
    medium, large = debrepo.package("aptmesh-medium"), debrepo.package("aptmesh-large")
    downloaded = tmp_path / "aptmesh-medium_2.0~rc1+dfsg-1_amd64.deb"
    assert hashlib.sha256(downloaded.read_bytes()).hexdigest() == medium.sha256
    # apt-get download names files after the full version, epoch as %3a
    assert (tmp_path / "aptmesh-large_1%3a3.1-2_amd64.deb").stat().st_size == large.size

    debrepo.server.reset_counters()
    out = apt.run("apt-get", "update").stdout
    assert "Hit:1" in out
    inrelease = [r for r in debrepo.server.log if r.path == debrepo.INRELEASE]
    assert [(r.status, r.if_modified_since is not None) for r in inrelease] == [(304, True)]


def test_apt_get_refuses_a_tampered_inrelease(debrepo: DebRepo, tmp_path: Path) -> None:
    debrepo.tamper(debrepo.INRELEASE)
    apt = apt_env(tmp_path / "apt", debrepo.sources_line())
    proc = apt.run("apt-get", "update", check=False)
    assert proc.returncode == 100
    assert "The following signatures were invalid: BADSIG" in proc.stderr
    assert "is not signed" in proc.stderr
    assert not list(apt.lists.glob("*Packages*"))


def test_apt_env_isolates_settings(tmp_path: Path) -> None:
    apt = apt_env(
        tmp_path,
        ["deb [signed-by=/k.gpg] http://127.0.0.1:9/debian stable main"],
        {"Acquire::Retries": "3"},
    )
    assert (tmp_path / "etc/apt/sources.list").read_text().startswith("deb [signed-by=/k.gpg]")
    assert "APT_CONFIG" in apt.env and "http_proxy" not in apt.env
    dump = apt.run("apt-config", "dump").stdout
    assert f'Dir "{tmp_path.resolve()}/";' in dump
    assert 'Acquire::Retries "3";' in dump
    assert apt.options[apt.options.index("-o") + 1].startswith("Dir=")


def test_misbehave_fails_or_replays_until_behave(debrepo: DebRepo) -> None:
    old = debrepo.read(debrepo.INRELEASE)
    date = debrepo.release().date
    assert date is not None
    debrepo.resign(date=date + timedelta(hours=1))
    future = time.time() + 86400
    debrepo.server.misbehave(debrepo.INRELEASE, Misbehaviour(body=old, last_modified=future))
    debrepo.server.misbehave("dists/*/Packages*", Misbehaviour(status=500))
    status, headers, body = _request(debrepo, debrepo.INRELEASE)
    assert (status, body) == (200, old)  # the replayed generation, validly signed
    assert parsedate_to_datetime(headers["Last-Modified"]).timestamp() == int(future)
    lm = headers["Last-Modified"]
    assert _request(debrepo, debrepo.INRELEASE, headers={"If-Modified-Since": lm})[0] == 304
    assert _request(debrepo, debrepo.INRELEASE, headers={"Range": "bytes=0-9"})[2] == old[:10]
    assert _request(debrepo, f"dists/stable/{PACKAGES_DIR}/Packages.gz")[0] == 500
    debrepo.server.behave()
    assert _request(debrepo, debrepo.INRELEASE)[2] == debrepo.read(debrepo.INRELEASE) != old
    assert _request(debrepo, f"dists/stable/{PACKAGES_DIR}/Packages.gz")[0] == 200
