"""Every repository shape the builder makes is one a real apt takes, laid out as documented.

Sockets: the shapes are served on loopback and read by a real apt-get with an
isolated configuration.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from aptmesh import debian
from aptmesh.debrepo import DebRepo, Signing, apt_env
from tests.fixtures.debrepo import SHAPES, ShapedRepo


def _signed_release(repo: DebRepo, suite: str) -> debian.Release:
    """Release of `suite` through whichever signed form the shape publishes."""
    root = repo.root
    inrelease = root / repo.suite_path(suite, "InRelease")
    if inrelease.exists():
        text = debian.verify_release(
            debian.ReleaseForm.INRELEASE, inrelease.read_bytes(), repo.keyring
        )
    else:
        text = debian.verify_release(
            debian.ReleaseForm.DETACHED,
            (root / repo.suite_path(suite, "Release")).read_bytes(),
            repo.keyring,
            (root / repo.suite_path(suite, "Release.gpg")).read_bytes(),
        )
    return debian.parse_release(text)


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_each_shape_is_signed_consistent_and_taken_by_apt(
    name: str, shaped_repo: ShapedRepo, tmp_path: Path
) -> None:
    repo = shaped_repo(name)
    for suite in repo.suites:
        release = _signed_release(repo, suite)
        assert release == repo.release(suite)
        for path, listed in release.files.items():
            file = repo.root / repo.suite_path(suite, path)
            if file.exists():
                data = file.read_bytes()
            else:  # listed by its uncompressed name only: one of its variants holds it
                [variant, *_] = [v for v in debian.index_variants(release, path) if v != path]
                data = debian.decompress_index(repo.read(repo.suite_path(suite, variant)), variant)
            assert (len(data), hashlib.sha256(data).hexdigest()) == listed
    lines = [repo.sources_line(suite=suite) for suite in repo.suites]
    lines += [line.replace("deb ", "deb-src ", 1) for line in lines if SHAPES[name].sources]
    apt = apt_env(tmp_path / "apt", lines)
    update = apt.run("apt-get", "update")
    assert "W:" not in update.stderr and "E:" not in update.stderr, update.stderr
    big = max(repo.packages, key=lambda p: p.size)
    apt.run("apt-get", "download", big.name, cwd=tmp_path)
    [downloaded] = tmp_path.glob(f"{big.name}_*.deb")
    assert hashlib.sha256(downloaded.read_bytes()).hexdigest() == big.sha256


def test_signing_forms_publish_only_their_files(shaped_repo: ShapedRepo) -> None:
    inline, detached = shaped_repo("inrelease-only"), shaped_repo("detached-only")
    assert inline.shape.signing is Signing.INRELEASE
    assert (inline.root / inline.INRELEASE).exists()
    assert not (inline.root / inline.RELEASE).exists()
    assert not (inline.root / inline.RELEASE_GPG).exists()
    assert not (detached.root / detached.INRELEASE).exists()
    assert (detached.root / detached.RELEASE_GPG).exists()


def test_flat_repository_layout(shaped_repo: ShapedRepo) -> None:
    repo = shaped_repo("flat")
    assert repo.suite == "./" and repo.INRELEASE == "InRelease" and repo.PACKAGES == "Packages"
    release = repo.release()
    assert release.suite is None and release.codename is None and not release.components
    assert set(release.files) == {"Packages", "Packages.gz", "Packages.xz"}
    assert all("/" not in p.filename for p in repo.packages)  # beside Packages
    assert repo.sources_line().endswith(f"{repo.base_url} ./")


def test_vendor_shape_lists_indexes_it_does_not_have(shaped_repo: ShapedRepo) -> None:
    repo = shaped_repo("vendor-absent-indexes")
    release = repo.release()
    assert release.architectures == ("amd64", "arm64", "all")
    assert release.components == ("main", "contrib")
    assert set(release.files) == {"main/binary-all/Packages", "main/binary-all/Packages.gz"}
    assert release.valid_until is None and not release.acquire_by_hash


@pytest.mark.parametrize(
    ("name", "copies", "announced"),
    [("no-by-hash", False, False), ("by-hash-unannounced", True, False)],
)
def test_by_hash_copies_and_their_announcement_are_separate(
    name: str, copies: bool, announced: bool, shaped_repo: ShapedRepo
) -> None:
    repo = shaped_repo(name)
    assert repo.release().acquire_by_hash is announced
    assert any("/by-hash/" in p for p in repo.index_paths()) is copies


def test_single_compression_shapes_list_only_it(shaped_repo: ShapedRepo) -> None:
    for suffix in (".zst", ".lz4"):
        repo = shaped_repo(f"only{suffix}")
        base = "main/binary-amd64/Packages"
        assert debian.index_variants(repo.release(), base) == (base + suffix, base)
        assert not (repo.root / repo.PACKAGES).exists()
        data = repo.read(repo.PACKAGES + suffix)
        assert debian.load_packages(repo.release(), base + suffix, data)


def test_sources_list_the_source_files(shaped_repo: ShapedRepo, tmp_path: Path) -> None:
    repo = shaped_repo("sources")
    release = repo.release()
    data = repo.read(repo.suite_path(repo.suite, "main/source/Sources.xz"))
    entries = {e.package: e for e in debian.load_sources(release, "main/source/Sources.xz", data)}
    big = repo.source_files("aptmesh-src-big")
    assert [f.filename.rsplit("/", 1)[1] for f in big] == [
        "aptmesh-src-big_1.0-1.dsc",
        "aptmesh-src-big_1.0.orig.tar.gz",
        "aptmesh-src-big_1.0-1.debian.tar.xz",
    ]
    listed = {(f.filename, f.size, f.sha256) for f in entries["aptmesh-src-big"].files}
    assert listed == {(f.filename, f.size, f.sha256) for f in big}
    assert [f.swarmed for f in big] == [False, True, False]  # only the .orig.tar.gz
    for f in big:
        assert hashlib.sha256(f.path.read_bytes()).hexdigest() == f.sha256
    apt = apt_env(
        tmp_path / "apt",
        [repo.sources_line(), repo.sources_line().replace("deb ", "deb-src ", 1)],
    )
    apt.run("apt-get", "update")
    apt.run("apt-get", "source", "--download-only", "aptmesh-src-big", cwd=tmp_path)
    assert (tmp_path / big[1].filename.rsplit("/", 1)[1]).stat().st_size == big[1].size


def test_ubuntu_shape_has_its_suites_and_phasing(shaped_repo: ShapedRepo) -> None:
    repo = shaped_repo("ubuntu")
    assert repo.suites == ("noble", "noble-updates", "noble-security")
    for suite in repo.suites:
        release = repo.release(suite)
        assert (release.suite, release.codename, release.origin) == (suite, "noble", "Ubuntu")
        assert release.valid_until is None
    path = "universe/binary-amd64/Packages"
    data = repo.read(repo.suite_path("noble-updates", path))
    [entry] = debian.load_packages(repo.release("noble-updates"), path, data)
    assert dict(entry.extra)["Phased-Update-Percentage"] == "10"
    fix = repo.package("aptmesh-fix")
    for suite in ("noble-updates", "noble-security"):
        main = repo.read(repo.suite_path(suite, "main/binary-amd64/Packages"))
        assert fix.sha256 in main.decode()
