from __future__ import annotations

from pathlib import Path

from aptmesh.aptsources import AptSource, debian_mirror, parse_deb822, parse_one_line, read_sources

DEB822 = """\
Types: deb deb-src
# a comment
URIs: http://mirror.example/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://mirror.example/debian-security
Suites: bookworm-security
Components: main contrib

Types: deb
Enabled: no
URIs: http://off.example/debian
Suites: x
Components: main
"""


def test_deb822_stanzas() -> None:
    sources = parse_deb822(DEB822)
    assert [s.uri for s in sources] == [
        "http://mirror.example/debian",
        "http://mirror.example/debian-security",
    ]
    assert sources[0].suites == ("bookworm", "bookworm-updates")
    assert sources[0].signed_by == Path("/usr/share/keyrings/debian-archive-keyring.gpg")
    assert sources[1].components == ("main", "contrib") and sources[1].signed_by is None


def test_one_line_format() -> None:
    text = (
        "deb [arch=amd64,arm64 signed-by=/k.gpg] http://mirror.example/debian/ bookworm main\n"
        "# deb http://commented.example/debian bookworm main\n"
        "deb-src http://mirror.example/debian bookworm main\n"
    )
    assert parse_one_line(text) == [
        AptSource(
            "http://mirror.example/debian",
            ("bookworm",),
            ("main",),
            Path("/k.gpg"),
            ("amd64", "arm64"),
        )
    ]


def test_reads_only_list_and_sources_files_and_finds_the_debian_mirror(tmp_path: Path) -> None:
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list.d" / "a.sources").write_text(DEB822)
    (tmp_path / "sources.list.d" / "b.list.disabled").write_text("deb http://x.example/y s main\n")
    sources = read_sources(tmp_path)
    assert len(sources) == 2
    mirror = debian_mirror(sources)
    assert mirror is not None and mirror.uri == "http://mirror.example/debian"
    assert debian_mirror([sources[1]]) is None
