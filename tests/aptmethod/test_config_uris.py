"""Pure parts: URI mapping and settings from apt's configuration."""

from __future__ import annotations

import pytest

from aptmesh_apt_method.config import (
    MeshConfig,
    from_items,
    items_from_message,
    normalize_edge_url,
    split_edges,
)
from aptmesh_apt_method.uris import UriError, parse_mesh_uri, redirect_targets

EDGES = ["http://edge-a:3142", "http://edge-b:3142"]


def test_http_uri_goes_through_edges_then_the_mirror() -> None:
    target = parse_mesh_uri("mesh+http://deb.example.org/debian/pool/main/a/a%2bb%7e1_all.deb")
    assert redirect_targets(target, EDGES) == [
        "http://edge-a:3142/deb.example.org/debian/pool/main/a/a%2bb%7e1_all.deb",
        "http://edge-b:3142/deb.example.org/debian/pool/main/a/a%2bb%7e1_all.deb",
        "http://deb.example.org/debian/pool/main/a/a%2bb%7e1_all.deb",
    ]


def test_https_uri_uses_acng_https_form() -> None:
    target = parse_mesh_uri("mesh+https://deb.example.org:8443/debian/dists/bookworm/InRelease")
    assert redirect_targets(target, EDGES[:1]) == [
        "http://edge-a:3142/HTTPS///deb.example.org:8443/debian/dists/bookworm/InRelease",
        "https://deb.example.org:8443/debian/dists/bookworm/InRelease",
    ]


def test_credentials_never_reach_an_edge_but_stay_for_the_mirror() -> None:
    target = parse_mesh_uri("mesh+http://user:secret@deb.example.org/debian/x?y=1")
    assert redirect_targets(target, EDGES[:1]) == [
        "http://edge-a:3142/deb.example.org/debian/x?y=1",
        "http://user:secret@deb.example.org/debian/x?y=1",
    ]


def test_bare_mesh_scheme_means_http() -> None:
    assert parse_mesh_uri("mesh://deb.example.org/x").mirror_uri == "http://deb.example.org/x"


@pytest.mark.parametrize(
    "uri", ["mesh+ftp://h/x", "+http://h/x", "mesh+http:/h/x", "mesh+http:///x", "nothing"]
)
def test_unusable_uris(uri: str) -> None:
    with pytest.raises(UriError):
        parse_mesh_uri(uri)


def test_edge_urls_are_normalized() -> None:
    assert normalize_edge_url("edge1:3142") == "http://edge1:3142"
    assert normalize_edge_url("HTTP://edge1:3142/acng/") == "http://edge1:3142/acng"
    assert normalize_edge_url("https://edge1") == "https://edge1"
    for bad in [
        "ftp://edge1",
        "http://",
        "http://u:p@edge1",
        "http://edge1/a\nb",
        "http://e/?q",
        "",
    ]:
        assert normalize_edge_url(bad) is None, bad


def test_edges_split_on_commas_and_spaces() -> None:
    urls, bad = split_edges(["http://a:1, b:2  http://a:1", "ftp://c"])
    assert urls == ["http://a:1", "http://b:2"]
    assert bad == ["ftp://c"]


def config(*items: str, name: str = "mesh+http") -> MeshConfig:
    return from_items(items_from_message(items), name)


def test_defaults() -> None:
    c = config()
    assert (c.edges, c.zone, c.discover, c.probe_timeout, c.cache_seconds, c.debug) == (
        (),
        None,
        True,
        0.5,
        60.0,
        False,
    )
    assert c.cache_file is None
    assert c.warnings == ()


def test_settings_from_601_items() -> None:
    c = config(
        "Acquire::mesh::Edges=http://edge1:3142,http://edge2:3142",
        "Acquire::mesh::Zone=zone-a",
        "Acquire::mesh::Cache-Seconds=5",
        "Acquire::mesh::Probe-Timeout=0.2",
        "Acquire::mesh::Discover=false",
        "Debug::Acquire::mesh=true",
        "Dir=/srv/chroot/",
        "Dir::State=var/lib/apt/",
    )
    assert c.edges == ("http://edge1:3142", "http://edge2:3142")
    assert (c.zone, c.cache_seconds, c.probe_timeout, c.discover, c.debug) == (
        "zone-a",
        5.0,
        0.2,
        False,
        True,
    )
    assert c.cache_file == "/srv/chroot/var/lib/apt/mesh-edges.json"


def test_values_are_percent_decoded_as_apt_quotes_them() -> None:
    c = config("Acquire::mesh::Edges=http://a:1%20http://b:2", "Acquire::mesh::Zone=zone%25a")
    assert c.edges == ("http://a:1", "http://b:2")
    assert c.zone == "zone%a"


def test_apt_list_syntax_and_per_method_override() -> None:
    # apt dumps `Acquire::mesh::Edges { "a"; "b"; };` as repeated `Edges::=` items.
    c = config("Acquire::mesh::Edges::=http://a:1", "Acquire::mesh::Edges::=http://b:2")
    assert c.edges == ("http://a:1", "http://b:2")
    c = config("Acquire::mesh::Zone=z1", "Acquire::mesh+https::Zone=z2", "Dir::State=/var/lib/apt")
    assert c.zone == "z1"
    assert (
        config("Acquire::mesh::Zone=z1", "Acquire::mesh+https::Zone=z2", name="mesh+https").zone
        == "z2"
    )
    assert c.cache_file == "/var/lib/apt/mesh-edges.json"


def test_bad_values_fall_back_to_defaults_with_a_warning() -> None:
    c = config(
        "Acquire::mesh::Cache-Seconds=soon",
        "Acquire::mesh::Probe-Timeout=-1",
        "Acquire::mesh::Edges=ftp://x http://ok:1",
        "Debug::Acquire::mesh=maybe",
    )
    assert (c.cache_seconds, c.probe_timeout, c.debug, c.edges) == (
        60.0,
        0.5,
        False,
        ("http://ok:1",),
    )
    assert len(c.warnings) == 4
    assert any("Cache-Seconds 'soon'" in w for w in c.warnings)


def test_cache_key_follows_the_settings_that_shape_the_choice() -> None:
    a = config("Acquire::mesh::Edges=http://a:1")
    assert (
        a.cache_key()
        == config("Acquire::mesh::Edges=http://a:1", "Debug::Acquire::mesh=1").cache_key()
    )
    assert (
        a.cache_key()
        != config("Acquire::mesh::Edges=http://a:1", "Acquire::mesh::Zone=z").cache_key()
    )
