"""Collection specs: the TOML file, selections of a reference machine, the rules, the wire, and
the CLI's answers to bad input (no traceback, exit 2; an unreachable tracker, exit 1)."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from aptmesh import collection as col
from aptmesh.testing import free_port
from aptmesh_cli import collection as cli

SHA = "ab" * 32


def test_a_toml_spec_with_selections_and_files(tmp_path: Path) -> None:
    (tmp_path / "ref.sel").write_text(
        "openssh-server\t\t\tinstall\nlibc6:amd64\t\t\tinstall\nold-thing\t\t\tdeinstall\n"
        "held\t\t\thold\n"
    )
    (tmp_path / "lab.toml").write_text(
        'name = "lab-a"\nzones = ["lab-a", "lab-a"]\n'
        'sources = ["deb http://deb.example.org/debian bookworm main contrib"]\n'
        'packages = ["curl (>= 7.88)"]\nselections = "ref.sel"\nwith_dependencies = true\n'
        f'[[files]]\nname = "netinst.iso"\nsha256 = "{SHA.upper()}"\nsize = 10\n'
        'url = "http://seeder:9090/files/x/netinst.iso"\n'
    )
    spec = col.check_spec(col.load_spec(tmp_path / "lab.toml"))
    assert spec.packages == ("curl (>= 7.88)", "openssh-server", "libc6:amd64", "held")
    assert spec.zones == ("lab-a",) and spec.with_dependencies
    assert spec.files == (
        col.PlainFile("netinst.iso", SHA, 10, ("http://seeder:9090/files/x/netinst.iso",)),
    )
    assert spec.source_lines() == [
        col.SourceLine("http://deb.example.org/debian", "bookworm", ("main", "contrib"))
    ]
    assert col.spec_from_proto(col.spec_to_proto(spec)) == spec
    assert spec.targets("lab-a") and not spec.targets("office")
    assert col.CollectionSpec("everywhere").targets("office")


def test_apt_mark_showmanual_output() -> None:
    assert col.parse_selections("bash\ncoreutils\n\n# comment\n") == ["bash", "coreutils"]
    with pytest.raises(col.SpecError, match="line 1: unknown state"):
        col.parse_selections("bash weird\n")


@pytest.mark.parametrize(
    ("spec", "text"),
    [
        (col.CollectionSpec("Bad Name"), "name 'Bad Name'"),
        (col.CollectionSpec("x", packages=("curl",)), "need at least one source"),
        (col.CollectionSpec("x", sources=("ftp://h/debian stable main",)), "http:// or https://"),
        (col.CollectionSpec("x", sources=("http://h/debian stable",)), "needs components"),
        (col.CollectionSpec("x", files=(col.PlainFile("a", "12", 1, ("http://h/a",)),)), "sha256"),
        (col.CollectionSpec("x", files=(col.PlainFile("a", SHA, 0, ("http://h/a",)),)), "size"),
        (
            col.CollectionSpec("x", files=(col.PlainFile("../a", SHA, 1, ("http://h/a",)),)),
            "file name",
        ),
        (col.CollectionSpec("x", files=(col.PlainFile("a", SHA, 1, ()),)), "at least one URL"),
    ],
)
def test_the_rules_say_what_is_wrong(spec: col.CollectionSpec, text: str) -> None:
    with pytest.raises(col.SpecError, match=text.replace("(", r"\(")):
        col.check_spec(spec)


def test_the_cli_refuses_bad_input_without_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "bad.toml").write_text('name = "x"\nunknown = 1\n')
    assert cli.main(["define", str(tmp_path / "bad.toml")]) == 2
    assert capsys.readouterr().err == "aptmesh collection: unknown keys: unknown\n"
    assert cli.main(["define", "--name", "x", "--file", "nonsense"]) == 2
    assert "not NAME=SHA256:SIZE:URL" in capsys.readouterr().err
    assert cli.main(["define", "--name", "x", "--package", "curl"]) == 2
    assert "need at least one source" in capsys.readouterr().err
    tracker = f"127.0.0.1:{free_port()}"  # nothing listens there
    out = io.StringIO()
    code = cli.main(["--tracker", tracker, "--timeout", "1", "list"], out=out)
    assert code == 1 and capsys.readouterr().err.startswith("aptmesh collection: listing")
