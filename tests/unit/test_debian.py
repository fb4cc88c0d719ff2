"""aptmesh.debian: deb822, Release and Packages parsing, hash checks, gpgv verification.

No sockets: signatures are made with the fixture's throw-away key directly.
"""

from __future__ import annotations

import bz2
import gzip
import hashlib
import lzma
from datetime import UTC, datetime, timedelta
from pathlib import Path

import lz4.frame
import pytest
import zstandard
from hypothesis import given
from hypothesis import strategies as st

from aptmesh import debian
from aptmesh.debian import (
    FileClass,
    FileHash,
    IndexHashError,
    MalformedIndexError,
    PackageEntry,
    PackageHashError,
    Paragraph,
    Release,
    Sha256Checker,
    SignatureError,
)
from aptmesh.debrepo import SigningKey

RELEASE_TEXT = """\
Origin: Debian
Label: Debian
Suite: stable
Version: 12.8
Codename: bookworm
Changelogs: https://changelogs.example.invalid/@CHANGEPATH@_changelog
Date: Sat, 09 Nov 2024 10:06:55 UTC
Valid-Until: Sat, 16 Nov 2024 10:06:55 +0000
Acquire-By-Hash: yes
No-Support-for-Architecture-all: Packages
Architectures: all amd64 arm64
Components: main contrib
Description: Debian 12.8 Released 09 November 2024
MD5Sum:
 0ed6d4c8891eb86358b94bb35d9e4da4  1484322 contrib/Contents-all
 d41d8cd98f00b204e9800998ecf8427e        0 main/binary-amd64/Packages
SHA256:
 e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855        0 main/binary-amd64/Packages
 2e5b3b3f0bbf4b3a5a1d6b3b9e1c1f84d0c6b3e9b4f0e1c5d2a3b4c5d6e7f809    12345 main/binary-amd64/Packages.xz
 1111111111111111111111111111111111111111111111111111111111111111      678 main/i18n/Translation-en.bz2
"""  # noqa: E501 (real Release lines are this long)

PACKAGES_TEXT = """\
Package: hello
Version: 2.10-3
Installed-Size: 280
Maintainer: Hello Maintainer <hello@example.invalid>
Architecture: amd64
Depends: libc6 (>= 2.34)
Description: example package based on GNU hello
 The GNU hello program produces a familiar, friendly greeting.
 .
 It allows non-programmers to use a classic computer science tool.
Section: devel
Filename: pool/main/h/hello/hello_2.10-3_amd64.deb
Size: 53048
SHA256: 0e0e4a5e8b0a3ac4c8ee6d2b7e0cc5b6e8a3b6f3a0bbd2b9ef1f8a1a2ed8b2f5

Package: libfoo1
Source: foo (1:2.0~rc1+dfsg-1)
Version: 1:2.0~rc1+dfsg-1
Architecture: all
Filename: pool/main/f/foo/libfoo1_2.0~rc1+dfsg-1_all.deb
Size: 2
SHA256: 0E0E4A5E8B0A3AC4C8EE6D2B7E0CC5B6E8A3B6F3A0BBD2B9EF1F8A1A2ED8B2F5
"""


# --- deb822 ---


def test_deb822_paragraphs_continuations_and_comments() -> None:
    text = "# a comment\nA: 1\nb-Field:  two words \nMulti:\n line one\n .\n\n\n\nA: 2\n"
    first, second = debian.parse_deb822(text)
    assert list(first.items()) == [("A", "1"), ("b-Field", "two words"), ("Multi", "\nline one\n.")]
    assert first["B-FIELD"] == "two words"
    assert "multi" in first
    assert second == Paragraph([("A", "2")])


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (" orphan\n", "continuation line without a field"),
        ("A: 1\na: 2\n", "appears twice"),
        ("no colon here\n", "not a field"),
        ("-----BEGIN PGP SIGNED MESSAGE-----\n", "not a field"),
    ],
)
def test_deb822_rejects_malformed(text: str, message: str) -> None:
    with pytest.raises(MalformedIndexError, match=message):
        debian.parse_deb822(text)


_names = st.from_regex(r"[A-Za-z][A-Za-z0-9-]{0,12}", fullmatch=True)
_line = st.from_regex(r"[!-~]([ -~]{0,20}[!-~])?", fullmatch=True)
_values = st.one_of(
    _line,
    st.lists(_line, min_size=1, max_size=4).map(lambda ls: "\n" + "\n".join(ls)),
    st.tuples(_line, st.lists(_line, min_size=1, max_size=3)).map(
        lambda t: "\n".join([t[0], *t[1]])
    ),
)
_paragraphs = st.dictionaries(_names, _values, min_size=1, max_size=6).filter(
    lambda d: len({k.lower() for k in d}) == len(d)
)


@given(st.lists(_paragraphs, max_size=4))
def test_deb822_round_trip(paragraphs: list[dict[str, str]]) -> None:
    text = debian.dump_deb822(paragraphs)
    assert debian.parse_deb822(text) == [Paragraph(p.items()) for p in paragraphs]


# --- Release ---


def test_parse_release_literal() -> None:
    r = debian.parse_release(RELEASE_TEXT.encode())
    assert (r.suite, r.codename, r.version, r.origin) == ("stable", "bookworm", "12.8", "Debian")
    assert r.date == datetime(2024, 11, 9, 10, 6, 55, tzinfo=UTC)
    assert r.valid_until == datetime(2024, 11, 16, 10, 6, 55, tzinfo=UTC)
    assert r.acquire_by_hash
    assert r.architectures == ("all", "amd64", "arm64")
    assert r.components == ("main", "contrib")
    assert r.files["main/binary-amd64/Packages.xz"] == FileHash(
        12345, "2e5b3b3f0bbf4b3a5a1d6b3b9e1c1f84d0c6b3e9b4f0e1c5d2a3b4c5d6e7f809"
    )
    assert r.files["main/binary-amd64/Packages.xz"].size == 12345
    assert "contrib/Contents-all" not in r.files  # only in MD5Sum: not trusted
    assert r.md5sum["contrib/Contents-all"] == (1484322, "0ed6d4c8891eb86358b94bb35d9e4da4")
    assert dict(r.extra)["No-Support-for-Architecture-all"] == "Packages"
    assert not r.expired(datetime(2024, 11, 16, 10, 6, 54, tzinfo=UTC))
    assert r.expired(datetime(2024, 11, 16, 10, 6, 55, tzinfo=UTC))


def test_release_lookup_resolves_by_hash() -> None:
    r = debian.parse_release(RELEASE_TEXT)
    empty = hashlib.sha256(b"").hexdigest()
    assert r.lookup(f"main/binary-amd64/by-hash/SHA256/{empty}") == FileHash(0, empty)
    assert r.lookup(f"main/binary-arm64/by-hash/SHA256/{empty}") is None  # other directory
    assert r.lookup("main/binary-amd64/by-hash/SHA256/" + "2" * 64) is None
    assert r.lookup("main/binary-amd64/by-hash/MD5Sum/d41d8cd98f00b204e9800998ecf8427e") is None
    assert r.lookup("main/binary-amd64/Packages.gz") is None


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("Suite: stable\n", ""), None),  # Codename is enough
        # A flat repository's Release may name no suite at all; `check_suite` is the check.
        (("Suite: stable\n", "", "Codename: bookworm\n", ""), None),
        (("SHA256:", "SHA512:"), "no SHA256"),
        (("Date: Sat, 09 Nov 2024", "Date: yesterday"), "not an RFC 2822 date"),
        (("  12345 main", "  12x45 main"), "bad line"),
        (("main/i18n/Translation-en.bz2", "../../etc/passwd"), "unsafe path"),
        (("Origin: Debian\n", "Origin: Debian\n\nOrigin: Again\n"), "2 paragraphs"),
    ],
)
def test_parse_release_rejects(change: tuple[str, ...], message: str | None) -> None:
    text = RELEASE_TEXT
    for old, new in zip(change[::2], change[1::2], strict=True):
        assert old in text
        text = text.replace(old, new)
    if message is None:
        debian.parse_release(text)
        return
    with pytest.raises(MalformedIndexError, match=message):
        debian.parse_release(text)


def test_dates_round_trip_literal() -> None:
    when = datetime(2024, 2, 29, 23, 5, 7, tzinfo=UTC)
    assert debian.format_date(when) == "Thu, 29 Feb 2024 23:05:07 UTC"
    assert debian.parse_date("Thu, 29 Feb 2024 23:05:07 UTC", "test") == when
    assert debian.parse_date("Fri, 01 Mar 2024 01:05:07 +0200", "test") == when


_word = st.from_regex(r"[a-z0-9][a-z0-9.+~-]{0,10}", fullmatch=True)
_path = st.lists(
    st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,10}", fullmatch=True), min_size=1, max_size=4
).map("/".join)
_hex64 = st.binary(min_size=32, max_size=32).map(bytes.hex)
_dates = st.datetimes(
    min_value=datetime(1990, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
).map(lambda d: d.replace(microsecond=0))


@st.composite
def _releases(draw: st.DrawFn) -> Release:
    files = draw(st.dictionaries(_path, st.tuples(st.integers(0, 2**40), _hex64), max_size=5))
    return Release(
        suite=draw(st.none() | _word),
        codename=draw(_word),
        date=draw(st.none() | _dates),
        valid_until=draw(st.none() | _dates),
        origin=draw(st.none() | _line),
        label=draw(st.none() | _line),
        version=draw(st.none() | _word),
        description=draw(st.none() | _line),
        architectures=tuple(draw(st.lists(_word, max_size=3))),
        components=tuple(draw(st.lists(_word, max_size=3))),
        acquire_by_hash=draw(st.booleans()),
        files={p: FileHash(size, digest) for p, (size, digest) in files.items()},
        md5sum={
            p: (size, digest[:32]) for p, (size, digest) in files.items() if draw(st.booleans())
        },
        extra=tuple(
            draw(
                st.dictionaries(st.sampled_from(["X-A", "Changelogs", "Signed-By"]), _line)
            ).items()
        ),
    )


@given(_releases())
def test_release_round_trip(release: Release) -> None:
    assert debian.parse_release(debian.dump_release(release)) == release


# --- Packages ---


def test_parse_packages_literal() -> None:
    hello, libfoo = debian.parse_packages(PACKAGES_TEXT.encode())
    assert hello.package == "hello"
    assert hello.version == "2.10-3"
    assert hello.section == "devel"
    assert hello.filename == "pool/main/h/hello/hello_2.10-3_amd64.deb"
    assert hello.expected == FileHash(
        53048, "0e0e4a5e8b0a3ac4c8ee6d2b7e0cc5b6e8a3b6f3a0bbd2b9ef1f8a1a2ed8b2f5"
    )
    assert dict(hello.extra)["Description"].endswith(
        "\n.\nIt allows non-programmers to use a classic computer science tool."
    )
    assert libfoo.version == "1:2.0~rc1+dfsg-1"
    assert libfoo.section is None
    assert libfoo.sha256 == hello.sha256  # hex is normalised to lower case
    assert dict(libfoo.extra)["Source"] == "foo (1:2.0~rc1+dfsg-1)"


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("Size: 53048\n", "", "entry 1 \\(hello\\): missing Size"),
        ("Size: 53048", "Size: big", "not a number"),
        ("SHA256: 0e0e", "SHA256: 0e0", "not 64 hex digits"),
        ("Filename: pool/main/h", "Filename: /pool/main/h", "unsafe path"),
        (
            "Filename: pool/main/f/foo",
            "Filename: pool/../../f/foo",
            "entry 2 \\(libfoo1\\): unsafe path",
        ),
    ],
)
def test_parse_packages_rejects(old: str, new: str, message: str) -> None:
    assert old in PACKAGES_TEXT
    with pytest.raises(MalformedIndexError, match=message):
        debian.parse_packages(PACKAGES_TEXT.replace(old, new))


_entries = st.builds(
    PackageEntry,
    package=_word,
    version=_word,
    architecture=st.sampled_from(["amd64", "all", "arm64"]),
    filename=_path,
    size=st.integers(0, 2**40),
    sha256=_hex64,
    section=st.none() | _word,
    extra=st.dictionaries(
        st.sampled_from(["Depends", "Description", "Source", "Tag"]), _values
    ).map(lambda d: tuple(d.items())),
)


@given(st.lists(_entries, max_size=5))
def test_packages_round_trip(entries: list[PackageEntry]) -> None:
    assert debian.parse_packages(debian.dump_packages(entries)) == entries


# --- index files ---


def _release_for(files: dict[str, bytes]) -> Release:
    return Release(
        suite="stable",
        files={p: FileHash(len(d), hashlib.sha256(d).hexdigest()) for p, d in files.items()},
    )


def test_check_index_and_load_packages_every_variant() -> None:
    plain = PACKAGES_TEXT.encode()
    variants = {
        "main/binary-amd64/Packages": plain,
        "main/binary-amd64/Packages.gz": gzip.compress(plain),
        "main/binary-amd64/Packages.xz": lzma.compress(plain),
        "main/binary-amd64/Packages.bz2": bz2.compress(plain),
        "main/binary-amd64/Packages.lzma": lzma.compress(plain, format=lzma.FORMAT_ALONE),
        "main/binary-amd64/Packages.zst": zstandard.ZstdCompressor().compress(plain),
        "main/binary-amd64/Packages.lz4": lz4.frame.compress(plain),
    }
    release = _release_for(variants)
    expected = debian.parse_packages(plain)
    for path, data in variants.items():
        assert debian.load_packages(release, path, data) == expected
        by_hash = debian.by_hash_path(path, hashlib.sha256(data).hexdigest())
        assert by_hash.startswith("main/binary-amd64/by-hash/SHA256/")
        if not path.endswith(".lzma"):  # legacy .lzma has no magic bytes: named only
            assert debian.load_packages(release, by_hash, data) == expected  # sniffed


def test_a_zstd_stream_without_its_content_size_decompresses() -> None:
    plain = PACKAGES_TEXT.encode() * 50
    data = zstandard.ZstdCompressor(write_content_size=False).compress(plain)
    assert debian.decompress_index(data, "main/binary-amd64/Packages.zst") == plain


def test_check_index_says_what_disagreed() -> None:
    data = lzma.compress(PACKAGES_TEXT.encode())
    path = "main/binary-amd64/Packages.xz"
    release = _release_for({path: data})
    with pytest.raises(
        IndexHashError, match=f"checking {path} against Release: size {len(data) + 1}"
    ):
        debian.check_index(release, path, data + b"x")
    tampered = bytes([data[0] ^ 1]) + data[1:]
    with pytest.raises(IndexHashError, match="SHA-256 [0-9a-f]{64}, expected"):
        debian.check_index(release, path, tampered)
    with pytest.raises(IndexHashError, match="does not list it"):
        debian.check_index(release, "main/binary-amd64/Packages.gz", data)
    wrong = debian.by_hash_path(path, hashlib.sha256(tampered).hexdigest())
    with pytest.raises(IndexHashError, match="does not list it"):
        debian.load_packages(release, wrong, tampered)


def test_pick_index_variant_prefers_smallest_supported() -> None:
    base = "main/binary-amd64/Packages"
    names = ["", ".gz", ".xz", ".zst", ".lz4", ".bz2"]
    release = _release_for({base + s: b"" for s in names})
    assert debian.pick_index_variant(release, base) == base + ".xz"
    assert debian.index_variants(release, base) == tuple(
        base + s for s in (".xz", ".zst", ".bz2", ".gz", ".lz4", "")
    )
    release = _release_for({base + s: b"" for s in ["", ".lz4", ".unknown"]})
    assert debian.pick_index_variant(release, base) == base + ".lz4"
    assert debian.index_variants(release, base) == (base + ".lz4", base)
    with pytest.raises(IndexHashError, match="Release lists none"):
        debian.pick_index_variant(_release_for({}), base)


def test_decompress_index_rejects_garbage() -> None:
    with pytest.raises(MalformedIndexError, match="decompressing Packages.gz"):
        debian.decompress_index(b"not gzip", "Packages.gz")
    with pytest.raises(MalformedIndexError, match="decompressing x/Packages.xz"):
        debian.decompress_index(lzma.compress(b"abc")[:-5], "x/Packages.xz")
    assert debian.decompress_index(b"Package: a\n", "by-hash/SHA256/" + "0" * 64) == b"Package: a\n"
    with pytest.raises(MalformedIndexError, match="decompressing Packages.zst"):
        debian.decompress_index(b"\x28\xb5\x2f\xfdjunk", "Packages.zst")
    with pytest.raises(MalformedIndexError, match="decompressing Packages.lz4"):
        debian.decompress_index(b"\x04\x22\x4d\x18junk", "Packages.lz4")


# --- package files ---

_BLOB = bytes(range(256)) * 40
_GOOD = FileHash(len(_BLOB), hashlib.sha256(_BLOB).hexdigest())


def test_sha256_checker_accepts_the_right_stream() -> None:
    checker = Sha256Checker(_GOOD, "pool/x.deb")
    for i in range(0, len(_BLOB), 1000):
        checker.update(_BLOB[i : i + 1000])
    checker.finish()
    assert checker.received == len(_BLOB)
    assert checker.hexdigest() == _GOOD.sha256


def test_sha256_checker_fails_early_on_extra_bytes() -> None:
    checker = Sha256Checker(_GOOD, "pool/x.deb")
    checker.update(_BLOB)
    with pytest.raises(PackageHashError, match="checking pool/x.deb: more than the expected 10240"):
        checker.update(b"x")


def test_sha256_checker_fails_short_or_wrong() -> None:
    short = Sha256Checker(_GOOD, "x.deb")
    short.update(_BLOB[:-1])
    with pytest.raises(PackageHashError, match="size 10239, expected 10240"):
        short.finish()
    wrong = Sha256Checker(_GOOD, "x.deb", error=IndexHashError)
    wrong.update(_BLOB[:-1] + b"\0")
    with pytest.raises(IndexHashError, match="SHA-256"):
        wrong.finish()


def test_check_package_bytes_and_file(tmp_path: Path) -> None:
    debian.check_package_bytes(_BLOB, _GOOD, "x.deb")
    with pytest.raises(PackageHashError, match="checking x.deb: SHA-256"):
        debian.check_package_bytes(_BLOB[::-1], _GOOD, "x.deb")
    f = tmp_path / "x.deb"
    f.write_bytes(_BLOB)
    debian.check_package_file(f, _GOOD)
    f.write_bytes(_BLOB[:-1] + b"\0")
    with pytest.raises(PackageHashError, match="checking x.deb: SHA-256"):
        debian.check_package_file(f, _GOOD)
    f.write_bytes(_BLOB + b"\0")
    with pytest.raises(PackageHashError, match="size 10241, expected 10240"):
        debian.check_package_file(f, _GOOD, "pool/x.deb")
    with pytest.raises(PackageHashError, match="cannot read"):
        debian.check_package_file(tmp_path / "missing.deb", _GOOD)


def test_errors_form_one_hierarchy_with_metric_kinds() -> None:
    kinds = {
        e.kind for e in (SignatureError, IndexHashError, PackageHashError, MalformedIndexError)
    }
    assert kinds == {"signature", "index_hash", "package_hash", "malformed"}
    for e in (SignatureError, IndexHashError, PackageHashError, MalformedIndexError):
        assert issubclass(e, debian.DebianIndexError)


# --- path classes ---


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("debian/dists/bookworm/InRelease", FileClass.INDEX),
        ("dists/bookworm/Release", FileClass.INDEX),
        ("dists/bookworm/Release.gpg", FileClass.INDEX),
        ("dists/bookworm/main/binary-amd64/Packages", FileClass.INDEX),
        ("dists/bookworm/main/binary-amd64/Packages.xz", FileClass.INDEX),
        ("dists/bookworm/main/source/Sources.gz", FileClass.INDEX),
        ("dists/bookworm/main/i18n/Translation-en.bz2", FileClass.INDEX),
        ("dists/bookworm/main/Contents-amd64.gz", FileClass.INDEX),
        ("dists/bookworm/main/binary-amd64/by-hash/SHA256/" + "a" * 64, FileClass.INDEX),
        ("dists/bookworm/main/binary-amd64/Packages.diff/Index", FileClass.INDEX),
        (
            "dists/bookworm/main/binary-amd64/Packages.diff/T-2024-11-09-1405.35-F-2024.gz",
            FileClass.INDEX,
        ),
        ("dists/bookworm/main/dep11/Components-amd64.yml.gz", FileClass.INDEX),
        ("pool/main/h/hello/hello_2.10-3_amd64.deb", FileClass.PACKAGE),
        (
            "host/debian/pool/main/a/aptmesh-medium/aptmesh-medium_2.0~rc1+dfsg-1_amd64.deb",
            FileClass.PACKAGE,
        ),
        ("pool/main/d/debian-installer/foo_1.0_amd64.udeb", FileClass.PACKAGE),
        ("pool/main/h/hello/hello_2.10-3.dsc", FileClass.PACKAGE),
        ("pool/main/h/hello/hello_2.10.orig.tar.gz", FileClass.PACKAGE),
        ("pool/main/h/hello/hello_2.10-3.debian.tar.xz", FileClass.PACKAGE),
        ("pool/main/h/hello/hello_2.10-3.diff.gz", FileClass.PACKAGE),
        ("README", FileClass.OTHER),
        ("ls-lR.gz", FileClass.OTHER),
        ("", FileClass.OTHER),
        ("pool/main/p/packages-foo/Packages-helper_1.0_all.deb", FileClass.PACKAGE),
    ],
)
def test_classify_path(path: str, expected: FileClass) -> None:
    assert debian.classify_path(path) is expected


def test_is_by_hash() -> None:
    assert debian.is_by_hash("dists/x/main/binary-amd64/by-hash/SHA256/abc")
    assert not debian.is_by_hash("dists/x/main/binary-amd64/Packages")


# --- signatures (real gpgv, the fixture's key; no sockets) ---

SIGNED_RELEASE = RELEASE_TEXT.encode()


def test_verify_inrelease_returns_only_the_signed_text(debrepo_signing_key: SigningKey) -> None:
    inrelease = debrepo_signing_key.clearsign(SIGNED_RELEASE)
    signed = debian.verify_inrelease(inrelease, debrepo_signing_key.keyring)
    assert signed == SIGNED_RELEASE
    assert debian.parse_release(signed) == debian.parse_release(RELEASE_TEXT)
    assert debian.verify_inrelease(inrelease, debrepo_signing_key.keyring_asc) == signed


def test_verify_inrelease_rejects_altered_text(debrepo_signing_key: SigningKey) -> None:
    inrelease = debrepo_signing_key.clearsign(SIGNED_RELEASE)
    forged = inrelease.replace(
        b"        0 main/binary-amd64/Packages", b"        1 main/binary-amd64/Packages"
    )
    assert forged != inrelease
    with pytest.raises(SignatureError, match="verifying InRelease: bad: BADSIG"):
        debian.verify_inrelease(forged, debrepo_signing_key.keyring)


def test_verify_inrelease_rejects_text_outside_the_signature(
    debrepo_signing_key: SigningKey,
) -> None:
    inrelease = debrepo_signing_key.clearsign(SIGNED_RELEASE)
    keyring = debrepo_signing_key.keyring
    with pytest.raises(SignatureError, match="not a clearsigned message"):
        debian.verify_inrelease(b"Suite: evil\n" + inrelease, keyring)
    with pytest.raises(SignatureError, match="text after the signature"):
        debian.verify_inrelease(inrelease + b"Suite: evil\n", keyring)
    with pytest.raises(SignatureError, match="more than one signed message"):
        debian.verify_inrelease(inrelease + inrelease, keyring)
    with pytest.raises(SignatureError, match="not a clearsigned message"):
        debian.verify_inrelease(SIGNED_RELEASE, keyring)


def test_verify_inrelease_rejects_an_unknown_key(
    debrepo_signing_key: SigningKey, tmp_path: Path
) -> None:
    stranger = SigningKey.generate(tmp_path / "stranger", "stranger <s@aptmesh.invalid>")
    try:
        inrelease = stranger.clearsign(SIGNED_RELEASE)
    finally:
        stranger.close()
    with pytest.raises(SignatureError, match="no public key [0-9A-F]+ in the keyring"):
        debian.verify_inrelease(inrelease, debrepo_signing_key.keyring)


def test_verify_inrelease_reports_keyring_problems(
    debrepo_signing_key: SigningKey, tmp_path: Path
) -> None:
    inrelease = debrepo_signing_key.clearsign(SIGNED_RELEASE)
    with pytest.raises(SignatureError, match="cannot read keyring"):
        debian.verify_inrelease(inrelease, tmp_path / "missing.gpg")
    (tmp_path / "empty.gpg").write_bytes(b"")
    with pytest.raises(SignatureError, match="is empty"):
        debian.verify_inrelease(inrelease, tmp_path / "empty.gpg")
    asc = debrepo_signing_key.keyring_asc.read_text()
    body_line = asc.splitlines()[3]
    (tmp_path / "bad.asc").write_text(asc.replace(body_line, body_line[::-1], 1))
    with pytest.raises(SignatureError, match="armor checksum mismatch|bad base64"):
        debian.verify_inrelease(inrelease, tmp_path / "bad.asc")


def test_verify_detached(debrepo_signing_key: SigningKey) -> None:
    signature = debrepo_signing_key.detach_sign(SIGNED_RELEASE)
    keyring = debrepo_signing_key.keyring
    assert debian.verify_detached(SIGNED_RELEASE, signature, keyring) == SIGNED_RELEASE
    with pytest.raises(SignatureError, match="verifying Release with Release.gpg: bad: BADSIG"):
        debian.verify_detached(SIGNED_RELEASE + b"Suite: evil\n", signature, keyring)


def test_dearmor_matches_gpg_export(debrepo_signing_key: SigningKey) -> None:
    asc = debrepo_signing_key.keyring_asc.read_text()
    assert debian.dearmor(asc) == debrepo_signing_key.keyring.read_bytes()
    assert debian.dearmor(asc + "\n" + asc) == debrepo_signing_key.keyring.read_bytes() * 2
    with pytest.raises(SignatureError, match="no '-----BEGIN PGP PUBLIC KEY BLOCK-----'"):
        debian.dearmor("hello")


_FPR = "A" * 40


@pytest.mark.parametrize(
    ("status", "valid", "fatal"),
    [
        (f"[GNUPG:] VALIDSIG {_FPR} 2024-11-09 1731146815 0 4 0 22 8 01 {_FPR}", True, False),
        (
            f"[GNUPG:] VALIDSIG {_FPR} 2024-11-09 1731146815 0 4 0 1 2 01 {_FPR}",
            False,
            True,
        ),  # SHA1
        (
            f"[GNUPG:] VALIDSIG {_FPR} 2024-11-09 1731146815 0 4 0 22 8 01 {_FPR}\n"
            "[GNUPG:] ERRSIG 0123456789ABCDEF 1 8 01 1731146815 9 -\n"
            "[GNUPG:] NO_PUBKEY 0123456789ABCDEF",
            True,
            False,
        ),  # a second signature by a key we lack: fine, as for apt
        (
            f"[GNUPG:] VALIDSIG {_FPR} 2024-11-09 1731146815 0 4 0 22 8 01 {_FPR}\n"
            "[GNUPG:] ERRSIG 0123456789ABCDEF 99 8 01 1731146815 4 -",
            True,
            True,
        ),  # a second signature gpgv cannot check for another reason: refused
        ("[GNUPG:] BADSIG 0123456789ABCDEF someone", False, True),
        ("[GNUPG:] NODATA 1", False, False),
    ],
)
def test_gpgv_status_policy(status: str, valid: bool, fatal: bool) -> None:
    good, problems = debian._status_summary(status)
    assert bool(good) is valid
    assert any(p.startswith("bad:") for p in problems) is fatal


def test_release_valid_until_window() -> None:
    now = datetime(2030, 1, 1, tzinfo=UTC)
    r = Release(suite="s", date=now, valid_until=now + timedelta(days=1))
    assert not r.expired(now)
    assert r.expired(now + timedelta(days=2))
    assert not Release(suite="s").expired(now)


# --- suites, freshness, generations ---


@pytest.mark.parametrize(
    ("suite", "directory"),
    [("bookworm", "dists/bookworm"), ("./", ""), ("sub/", "sub"), ("./a/b/", "a/b")],
)
def test_suite_dir_of_named_and_flat_suites(suite: str, directory: str) -> None:
    assert debian.suite_dir(suite) == directory
    expected = f"{directory}/InRelease" if directory else "InRelease"
    assert debian.suite_path(suite, "InRelease") == expected


@pytest.mark.parametrize("suite", ["../", "a/../../", "../x"])
def test_suite_dir_refuses_escaping_paths(suite: str) -> None:
    with pytest.raises(MalformedIndexError, match="unsafe path"):
        debian.suite_dir(suite)


def test_check_suite_names_and_flat_repositories() -> None:
    release = debian.parse_release(RELEASE_TEXT)
    debian.check_suite(release, "stable", "x")
    debian.check_suite(release, "bookworm", "x")
    debian.check_suite(release, "./", "x")  # a flat repository names no suite
    with pytest.raises(SignatureError, match="signed for suite 'stable'"):
        debian.check_suite(release, "oldstable", "verifying oldstable/InRelease")


def test_check_fresh_refuses_expired_and_future_dates() -> None:
    release = debian.parse_release(RELEASE_TEXT)
    assert release.date is not None and release.valid_until is not None
    debian.check_fresh(release, release.date, "x")
    debian.check_fresh(release, release.date - debian.MAX_FUTURE, "x")
    with pytest.raises(debian.ReleaseDateError, match="not valid yet"):
        debian.check_fresh(release, release.date - debian.MAX_FUTURE - timedelta(seconds=1), "x")
    with pytest.raises(debian.ReleaseDateError, match="Valid-Until"):
        debian.check_fresh(release, release.valid_until, "x")
    assert debian.ReleaseDateError("x").kind == "signature"


_T0 = datetime(2024, 11, 9, 10, 6, 55, tzinfo=UTC)


@pytest.mark.parametrize(
    ("date", "digest", "known", "order"),
    [
        (_T0, "a", None, debian.Order.NEWER),
        (_T0 + timedelta(seconds=1), "b", (_T0, "a"), debian.Order.NEWER),
        (_T0, "a", (_T0, "a"), debian.Order.SAME),
        (_T0 - timedelta(days=1), "b", (_T0, "a"), debian.Order.OLDER),
        (_T0, "b", (_T0, "a"), debian.Order.UNORDERED),
        (None, "b", (_T0, "a"), debian.Order.UNORDERED),
        (None, "a", (None, "a"), debian.Order.SAME),
    ],
)
def test_generation_order(
    date: datetime | None,
    digest: str,
    known: tuple[datetime | None, str] | None,
    order: debian.Order,
) -> None:
    candidate = debian.Generation(date, digest)
    old = debian.Generation(*known) if known else None
    assert candidate.compare(old) is order
    if order is debian.Order.OLDER:
        with pytest.raises(debian.ReplayError, match="older than the"):
            debian.newest(candidate, old, "verifying stable/InRelease")
    else:
        assert debian.newest(candidate, old, "x") == candidate
    assert debian.Generation.from_json(candidate.to_json()) == candidate


def test_generation_of_a_release_is_its_date_and_signed_text() -> None:
    release = debian.parse_release(RELEASE_TEXT)
    generation = debian.Generation.of(release, RELEASE_TEXT.encode())
    assert generation.date == release.date
    assert generation.sha256 == hashlib.sha256(RELEASE_TEXT.encode()).hexdigest()
    assert debian.ReplayError("x").kind == "replay"


# --- Sources ---

SOURCES_TEXT = """Package: hello
Binary: hello
Version: 2.10-3
Maintainer: Hello Maintainer <hello@example.invalid>
Architecture: any
Format: 3.0 (quilt)
Directory: pool/main/h/hello
Section: devel
Files:
 0ed6d4c8891eb86358b94bb35d9e4da4 1183 hello_2.10-3.dsc
Checksums-Sha256:
 2e5b3b3f0bbf4b3a5a1d6b3b9e1c1f84d0c6b3e9b4f0e1c5d2a3b4c5d6e7f809 1183 hello_2.10-3.dsc
 1111111111111111111111111111111111111111111111111111111111111111 725946 hello_2.10.orig.tar.gz
"""


def test_parse_sources_literal() -> None:
    [entry] = debian.parse_sources(SOURCES_TEXT)
    assert (entry.package, entry.version, entry.directory, entry.section) == (
        "hello",
        "2.10-3",
        "pool/main/h/hello",
        "devel",
    )
    assert [(f.filename, f.size) for f in entry.files] == [
        ("pool/main/h/hello/hello_2.10-3.dsc", 1183),
        ("pool/main/h/hello/hello_2.10.orig.tar.gz", 725946),
    ]
    assert entry.files[1].expected == FileHash(725946, "1" * 64)


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("Directory: pool/main/h/hello\n", "", "missing Directory"),
        ("Directory: pool/main/h/hello", "Directory: ../../etc", "unsafe path"),
        (" 725946 hello_2.10.orig", " 72x946 hello_2.10.orig", "bad Checksums-Sha256"),
        ("hello_2.10.orig.tar.gz", "../x.tar.gz", "unsafe file name"),
    ],
)
def test_parse_sources_rejects(old: str, new: str, message: str) -> None:
    assert old in SOURCES_TEXT
    with pytest.raises(MalformedIndexError, match=message):
        debian.parse_sources(SOURCES_TEXT.replace(old, new))


def test_load_sources_checks_against_release() -> None:
    data = lzma.compress(SOURCES_TEXT.encode())
    release = _release_for({"main/source/Sources.xz": data})
    assert debian.load_sources(release, "main/source/Sources.xz", data)[0].package == "hello"
    with pytest.raises(IndexHashError):
        debian.load_sources(release, "main/source/Sources.xz", data + b"x")


def test_verify_release_either_form(debrepo_signing_key: SigningKey) -> None:
    text = RELEASE_TEXT.encode()
    keyring = debrepo_signing_key.keyring
    inline = debrepo_signing_key.clearsign(text)
    assert debian.verify_release(debian.ReleaseForm.INRELEASE, inline, keyring) == text
    detached = debrepo_signing_key.detach_sign(text)
    form = debian.ReleaseForm.DETACHED
    assert debian.verify_release(form, text, keyring, detached) == text
    with pytest.raises(SignatureError):
        debian.verify_release(form, text.replace(b"12.8", b"12.9"), keyring, detached)
    with pytest.raises(SignatureError, match="no Release.gpg"):
        debian.verify_release(form, text, keyring)
    assert form.files == ("Release", "Release.gpg")
