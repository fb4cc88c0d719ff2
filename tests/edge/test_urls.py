"""Unit tests of the pure parts: request targets, upstream remaps, ranges, policies."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aptmesh.debian import FileClass, FileHash
from aptmesh_edge.decisions import FallbackReason, SourceKind
from aptmesh_edge.http import ByteRange, RangeNotSatisfiable, not_modified, parse_range
from aptmesh_edge.sources import (
    AfterCommit,
    Choice,
    Facts,
    Step,
    TorrentState,
    after_fetch,
    choose_source,
)
from aptmesh_edge.trust import SuitePath, split_suite
from aptmesh_edge.urls import (
    Origin,
    Resource,
    Target,
    UpstreamError,
    UrlError,
    classify,
    parse_target,
    parse_upstreams,
    quote_path,
)

UPSTREAMS = parse_upstreams(
    (
        "deb.example.org=http://10.0.0.1:8080/mirror|http://10.0.0.2",
        "http://127.0.0.1:8081",
        "https://secure.example.org/base",
        "[::1]:9000=http://[::1]:9000",
    )
)


def resolve(raw: str) -> Resource:
    target = parse_target(raw)
    assert target is not None
    return UPSTREAMS.resolve(target)


def test_three_forms_parse_to_one_origin_and_path() -> None:
    want = Target(Origin("http", "deb.example.org", 80), "debian/dists/stable/InRelease")
    assert parse_target("http://deb.example.org/debian/dists/stable/InRelease") == want
    assert parse_target("/deb.example.org/debian/dists/stable/InRelease") == want
    https = parse_target("/HTTPS///deb.example.org/debian/dists/stable/InRelease")
    assert https == Target(Origin("https", "deb.example.org", 443), want.path)


def test_remap_backends_and_cache_keys_hold_host_and_port() -> None:
    resource = resolve("/deb.example.org/debian/pool/a_1+b1_all.deb")
    assert resource.upstream_urls() == [
        "http://10.0.0.1:8080/mirror/debian/pool/a_1+b1_all.deb",
        "http://10.0.0.2/debian/pool/a_1+b1_all.deb",
    ]
    assert resource.key == "http_deb.example.org_80/debian/pool/a_1+b1_all.deb"
    own = resolve("http://127.0.0.1:8081/debian/x.deb")
    assert own.upstream_urls() == ["http://127.0.0.1:8081/debian/x.deb"]
    assert own.key.startswith("http_127.0.0.1_8081/")
    secure = resolve("/HTTPS///secure.example.org/debian/x.deb")
    assert secure.upstream_urls() == ["https://secure.example.org/base/debian/x.deb"]
    v6 = resolve("/[::1]:9000/debian/x.deb")
    assert v6.key == "http___1_9000/debian/x.deb"
    # The same host on another port is another origin, and not configured.
    with pytest.raises(UrlError) as err:
        resolve("/deb.example.org:8080/debian/x.deb")
    assert err.value.status == 403
    with pytest.raises(UrlError):
        resolve("http://127.0.0.1:8082/debian/x.deb")


@pytest.mark.parametrize(
    "entry",
    ["deb.example.org=", "deb.example.org=ftp://x", "not a url", "x.example.org=http://h/?q=1"],
)
def test_bad_upstream_entries_are_config_errors(entry: str) -> None:
    with pytest.raises(UpstreamError):
        parse_upstreams((entry,))


def test_percent_decoding_keeps_plus() -> None:
    target = parse_target("/deb.example.org/debian/pool/g%2B%2B_1%3A2.0+b1.deb")
    assert target is not None and target.path == "debian/pool/g++_1:2.0+b1.deb"


@pytest.mark.parametrize(
    "raw",
    [
        "/deb.example.org/../etc/passwd",
        "/deb.example.org/debian/%2E%2E/x",
        "/deb.example.org//etc/passwd",
        "/deb.example.org/debian/%2Fetc/passwd",
        "/deb.example.org/debian/a%00b",
        "/deb.example.org/debian/a%5Cb",
        "/deb.example.org/debian/%ff",
        "/user@deb.example.org/debian/x",
        "/deb.example.org:99999/debian/x",
    ],
)
def test_escapes_are_refused(raw: str) -> None:
    with pytest.raises(UrlError) as err:
        parse_target(raw)
    assert 400 <= err.value.status < 500


def test_dot_segments_of_flat_repositories_go() -> None:
    for raw in ("/deb.example.org/debian/./InRelease", "/deb.example.org/debian/%2E/InRelease"):
        target = parse_target(raw)
        assert target is not None and target.path == "debian/InRelease"


def test_local_paths_are_not_targets() -> None:
    assert parse_target("/metrics") is None
    assert parse_target("/") is None


@given(
    st.lists(
        st.text(
            alphabet=st.characters(
                min_codepoint=33, max_codepoint=0x2FF, exclude_characters="\x7f/\\"
            ),
            min_size=1,
        ),
        min_size=1,
        max_size=5,
    )
)
def test_quoted_paths_round_trip(segments: list[str]) -> None:
    segments = [s if s not in {".", ".."} else s + "x" for s in segments]
    path = "/".join(segments)
    target = parse_target("/deb.example.org/" + quote_path(path))
    assert target is not None and target.path == path


@pytest.mark.parametrize(
    ("path", "cls"),
    [
        ("debian/dists/stable/InRelease", FileClass.INDEX),
        ("debian/dists/stable/main/binary-amd64/Packages.xz", FileClass.INDEX),
        ("debian/dists/stable/main/binary-amd64/by-hash/SHA256/ab", FileClass.INDEX),
        ("debian/dists/stable/main/i18n/Translation-en.bz2", FileClass.INDEX),
        ("debian/pool/main/h/hello/hello_2.10-3_amd64.deb", FileClass.PACKAGE),
        ("debian/pool/main/h/hello/hello_2.10.orig.tar.gz", FileClass.PACKAGE),
        ("debian/README", FileClass.OTHER),
    ],
)
def test_classify(path: str, cls: FileClass) -> None:
    assert classify(path) is cls


@pytest.mark.parametrize(
    ("header", "want"),
    [
        ("bytes=0-99", ByteRange(0, 100)),
        ("bytes=100-", ByteRange(100, 1000)),
        ("bytes=-10", ByteRange(990, 1000)),
        ("bytes=-5000", ByteRange(0, 1000)),
        ("bytes=900-5000", ByteRange(900, 1000)),
        ("bytes=1000-", RangeNotSatisfiable),
        ("bytes=-0", RangeNotSatisfiable),
        ("bytes=5-1", None),
        ("bytes=0-1,5-6", None),
        ("items=0-1", None),
        ("bytes=a-b", None),
    ],
)
def test_parse_range(header: str, want: object) -> None:
    if want is RangeNotSatisfiable:
        with pytest.raises(RangeNotSatisfiable):
            parse_range(header, 1000)
    else:
        assert parse_range(header, 1000) == want


def test_a_range_of_an_empty_file_is_not_satisfiable() -> None:
    with pytest.raises(RangeNotSatisfiable):
        parse_range("bytes=-10", 0)


def test_not_modified() -> None:
    lm = "Wed, 01 Jan 2025 00:00:00 GMT"
    assert not_modified(lm, lm)
    assert not_modified("Thu, 02 Jan 2025 00:00:00 GMT", lm)
    assert not not_modified("Tue, 31 Dec 2024 00:00:00 GMT", lm)
    assert not not_modified("garbage", lm)


BIG = FileHash(5 << 20, "a" * 64)
SMALL = FileHash(60_000, "b" * 64)
UPSTREAM, R = Step.UPSTREAM, FallbackReason


@pytest.mark.parametrize(
    ("facts", "choice"),
    [
        (Facts(False, 1 << 20, BIG), Choice(UPSTREAM, R.SWARM_DISABLED)),
        (Facts(True, 1 << 20, None), Choice(UPSTREAM, R.UNVERIFIED)),
        (Facts(True, 1 << 20, SMALL), Choice(UPSTREAM, R.BELOW_THRESHOLD)),
        (Facts(True, 1 << 20, BIG), Choice(Step.LOOKUP)),
        (Facts(True, 1 << 20, BIG, TorrentState.FOUND), Choice(Step.SWARM)),
        (Facts(True, 1 << 20, BIG, TorrentState.ABSENT), Choice(UPSTREAM, R.NO_TORRENT)),
        (
            Facts(True, 1 << 20, BIG, TorrentState.TRACKER_UNREACHABLE),
            Choice(UPSTREAM, R.TRACKER_UNREACHABLE),
        ),
    ],
)
def test_choose_source(facts: Facts, choice: Choice) -> None:
    assert choose_source(facts) == choice


def test_after_fetch() -> None:
    swarm, upstream = SourceKind.SWARM, SourceKind.UPSTREAM
    assert after_fetch(swarm, BIG, 1 << 20) is AfterCommit.SEED
    assert after_fetch(upstream, BIG, 1 << 20) is AfterCommit.MAKE_TORRENT
    assert after_fetch(upstream, SMALL, 1 << 20) is AfterCommit.NOTHING
    assert after_fetch(upstream, None, 1 << 20) is AfterCommit.NOTHING


def test_split_suite() -> None:
    assert split_suite("debian/dists/stable/main/binary-amd64/Packages.xz") == SuitePath(
        "debian/", "debian/dists/stable", "stable", "main/binary-amd64/Packages.xz"
    )
    assert split_suite("dists/sid/InRelease") == SuitePath("", "dists/sid", "sid", "InRelease")
    assert split_suite("debian/pool/main/a.deb") is None
    # A flat repository (`deb URL ./`): its Release and Packages beside its package files.
    assert split_suite("vendor/Packages.gz") == SuitePath("vendor/", "vendor", "./", "Packages.gz")
    assert split_suite("InRelease") == SuitePath("", "", "./", "InRelease")
    assert split_suite("vendor/a_1.0_all.deb") is None
