"""Reading this machine's apt sources (deb822 `.sources` and one-line `.list` files).

`aptmesh up` without `--upstream` uses the Debian mirror and keyring the
machine's apt already trusts; the mirror's address is read here at run time
and never written into the project.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

DEFAULT_KEYRING = Path("/usr/share/keyrings/debian-archive-keyring.gpg")


@dataclass(frozen=True)
class AptSource:
    uri: str
    suites: tuple[str, ...]
    components: tuple[str, ...]
    signed_by: Path | None = None
    architectures: tuple[str, ...] = ()


def parse_deb822(text: str) -> list[AptSource]:
    """Sources from a deb822 `.sources` file; disabled and deb-src stanzas are skipped."""
    sources = []
    for stanza in re.split(r"\n\s*\n", text):
        fields: dict[str, str] = {}
        key = ""
        for line in stanza.splitlines():
            if line.startswith("#") or not line.strip():
                continue
            if line[0].isspace() and key:
                fields[key] += " " + line.strip()
                continue
            key, _, value = line.partition(":")
            key = key.strip().lower()
            fields[key] = value.strip()
        if "deb" not in fields.get("types", "").split():
            continue
        if fields.get("enabled", "yes").lower() in {"no", "false", "0"}:
            continue
        signed = fields.get("signed-by", "")
        for uri in fields.get("uris", "").split():
            sources.append(
                AptSource(
                    uri=uri.rstrip("/"),
                    suites=tuple(fields.get("suites", "").split()),
                    components=tuple(fields.get("components", "").split()),
                    signed_by=Path(signed) if signed.startswith("/") else None,
                    architectures=tuple(fields.get("architectures", "").split()),
                )
            )
    return sources


_LINE = re.compile(
    r"^deb\s+(?:\[(?P<opts>[^\]]*)\]\s+)?(?P<uri>\S+)\s+(?P<suite>\S+)\s*(?P<comps>.*)$"
)


def parse_one_line(text: str) -> list[AptSource]:
    """Sources from a one-line-style `.list` file."""
    sources = []
    for raw in text.splitlines():
        match = _LINE.match(raw.split("#", 1)[0].strip())
        if not match:
            continue
        options = dict(
            opt.split("=", 1) for opt in (match.group("opts") or "").split() if "=" in opt
        )
        signed = options.get("signed-by", "")
        sources.append(
            AptSource(
                uri=match.group("uri").rstrip("/"),
                suites=(match.group("suite"),),
                components=tuple(match.group("comps").split()),
                signed_by=Path(signed) if signed.startswith("/") else None,
                architectures=tuple(a for a in options.get("arch", "").split(",") if a),
            )
        )
    return sources


def read_sources(etc_apt: Path = Path("/etc/apt")) -> list[AptSource]:
    """All enabled binary sources, in the order apt reads them."""
    found: list[AptSource] = []
    main_list = etc_apt / "sources.list"
    if main_list.is_file():
        found += parse_one_line(main_list.read_text(errors="replace"))
    parts = etc_apt / "sources.list.d"
    if parts.is_dir():
        for path in sorted(parts.iterdir()):
            if path.suffix == ".list":
                found += parse_one_line(path.read_text(errors="replace"))
            elif path.suffix == ".sources":
                found += parse_deb822(path.read_text(errors="replace"))
    return found


def debian_mirror(sources: list[AptSource]) -> AptSource | None:
    """The main Debian archive among the sources (not the security or updates archive)."""
    for source in sources:
        path = source.uri.split("://", 1)[-1].partition("/")[2]
        if path.rstrip("/").endswith("debian") and "security" not in path:
            return source
    return None
