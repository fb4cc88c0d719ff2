"""Fuzz targets: the archive index parsers refuse bad input only with `DebianIndexError`.

Whatever bytes an upstream sends as Release, Packages or Sources text, or as a
compressed index of any suffix, parsing either succeeds or raises an error of
`aptmesh.debian`'s hierarchy (a clean sync failure), never another exception.
"""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aptmesh import debian

_FIELDS = st.sampled_from(
    ["Package", "Version", "Directory", "Checksums-Sha256", "SHA256", "Suite", "Date", "Files"]
)
_LINE = st.one_of(
    st.builds(lambda k, v: f"{k}: {v}", _FIELDS, st.text(max_size=80)),
    st.builds(lambda v: f" {v}", st.text(max_size=80)),
    st.text(max_size=80),
)
_TEXT = st.lists(_LINE, max_size=20).map("\n".join)


@pytest.mark.fuzz
@given(st.one_of(_TEXT, st.binary(max_size=400).map(lambda b: b.decode("latin-1"))))
def test_parsers_raise_only_index_errors(text: str) -> None:
    for parse in (debian.parse_release, debian.parse_packages, debian.parse_sources):
        with contextlib.suppress(debian.DebianIndexError):
            parse(text)


# Each compression's magic bytes, so the fuzzer reaches past the decoders' first check.
_MAGIC = st.sampled_from(
    [b"", b"\xfd7zXZ\x00", b"\x28\xb5\x2f\xfd", b"\x1f\x8b", b"BZh", b"\x04\x22\x4d\x18"]
)


@pytest.mark.fuzz
@given(
    st.builds(bytes.__add__, _MAGIC, st.binary(max_size=400)),
    st.sampled_from([*debian.COMPRESSIONS, "/by-hash/SHA256/x"]),
)
def test_decompress_index_raises_only_index_errors(data: bytes, suffix: str) -> None:
    with contextlib.suppress(debian.DebianIndexError):
        debian.decompress_index(data, "main/binary-amd64/Packages" + suffix)
