"""`aptmesh collection`: define, update, list, show, status and delete collections on the tracker.

A spec comes from a TOML file (`aptmesh.collection.load_spec`: name, sources,
architectures, packages, selections, with_dependencies, sections, priorities,
[[files]], zones) and/or flags; flags add to the file's lists. Writing needs the
tracker's admin token (`--token-file`, or `APTMESH_ADMIN_TOKEN`).

`status` prints one line per targeted edge (files and bytes present of the
total, the errors it reports); with `--wait` it polls until every targeted edge
holds the current version whole, and exits 1 if that did not happen within
`--deadline` seconds (an edge's error lines are printed then). On a terminal it
draws one progress bar that it rewrites; otherwise it prints a plain line
whenever the totals change.

Exit codes: 0 done, 1 the tracker refused or failed (or `--wait` ran out),
2 bad usage or a bad spec.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from aptmesh import collection as col
from aptmesh_tracker.client import NotFound, TrackerClient, TrackerClientError

DEFAULT_TRACKER = "127.0.0.1:50051"
POLL_EVERY = 1.0
BAR_WIDTH = 30


class UsageError(Exception):
    """The command line or the spec is wrong; the text says how."""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="aptmesh collection", description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--tracker",
        default=os.environ.get("APTMESH_TRACKER_GRPC", DEFAULT_TRACKER),
        help="host:port of the tracker's gRPC server (APTMESH_TRACKER_GRPC)",
    )
    p.add_argument(
        "--token-file",
        type=Path,
        help="file holding the tracker's admin token (else APTMESH_ADMIN_TOKEN)",
    )
    p.add_argument(
        "--data-dir",
        type=Path,
        help="a mesh of `aptmesh up`: its tracker and admin token, from DIR/endpoints.json",
    )
    p.add_argument("--timeout", type=float, default=10.0, help="seconds per call to the tracker")
    sub = p.add_subparsers(dest="command", required=True)
    for name, help_ in (("define", "define a new collection"), ("update", "change a collection")):
        s = sub.add_parser(name, help=help_)
        s.add_argument("spec", nargs="?", type=Path, help="a TOML spec file")
        s.add_argument("--name")
        s.add_argument("--source", action="append", default=[], help="'URL SUITE COMPONENT...'")
        s.add_argument("--arch", action="append", default=[], help="architecture (amd64)")
        s.add_argument("--package", action="append", default=[], help="'name[:arch] [(op v)]'")
        s.add_argument(
            "--selections",
            action="append",
            default=[],
            type=Path,
            help="dpkg --get-selections or apt-mark showmanual output of a reference machine",
        )
        s.add_argument("--with-dependencies", action="store_true", default=None)
        s.add_argument("--section", action="append", default=[])
        s.add_argument("--priority", action="append", default=[])
        s.add_argument(
            "--file",
            action="append",
            default=[],
            metavar="NAME=SHA256:SIZE:URL",
            help="a plain file (repeatable)",
        )
        s.add_argument("--zone", action="append", default=[], help="a targeted zone (none: all)")
        if name == "update":
            s.add_argument(
                "--force", action="store_true", help="overwrite even if it changed meanwhile"
            )
    sub.add_parser("list", help="list collections")
    for name, help_ in (("show", "print a collection's spec as JSON"), ("delete", "delete one")):
        sub.add_parser(name, help=help_).add_argument("name")
    s = sub.add_parser("status", help="what each targeted edge holds")
    s.add_argument("name")
    s.add_argument("--wait", action="store_true", help="until every targeted edge holds it all")
    s.add_argument("--deadline", type=float, default=600.0, help="seconds --wait waits")
    s.add_argument("--json", action="store_true", help="print the status as JSON")
    return p


def _plain(text: str) -> col.PlainFile:
    name, eq, rest = text.partition("=")
    sha256, _, rest = rest.partition(":")
    size, _, url = rest.partition(":")
    if not eq or not size.isdigit() or not url:
        raise UsageError(f"--file {text!r}: not NAME=SHA256:SIZE:URL")
    return col.PlainFile(name, sha256, int(size), (url,))


def spec_of(args: argparse.Namespace) -> col.CollectionSpec:
    """The spec the file and the flags give together (checked)."""
    try:
        base = col.load_spec(args.spec) if args.spec else None
        name = args.name or (base.name if base else None)
        if not name:
            raise UsageError("a collection needs a name (--name or the spec file's name)")
        packages = list(base.packages if base else ())
        packages += args.package
        for path in args.selections:
            try:
                packages += col.parse_selections(path.read_text())
            except OSError as exc:
                raise UsageError(f"reading {path}: {exc.strerror}") from None
        spec = col.CollectionSpec(
            name=name,
            sources=(*(base.sources if base else ()), *args.source),
            architectures=tuple(args.arch)
            or (base.architectures if base else col.DEFAULT_ARCHITECTURES),
            packages=tuple(packages),
            with_dependencies=bool(
                args.with_dependencies or (base.with_dependencies if base else False)
            ),
            sections=(*(base.sections if base else ()), *args.section),
            priorities=(*(base.priorities if base else ()), *args.priority),
            files=(*(base.files if base else ()), *(_plain(f) for f in args.file)),
            zones=(*(base.zones if base else ()), *args.zone),
        )
        return col.check_spec(spec)
    except col.SpecError as exc:
        raise UsageError(str(exc)) from None


def _from_data_dir(args: argparse.Namespace) -> None:
    """`--data-dir`: the tracker and the token file of `aptmesh up`'s endpoints.json."""
    data: Path | None = args.data_dir
    if data is None:
        return
    try:
        endpoints = json.loads((data / "endpoints.json").read_text())
        args.tracker = str(endpoints["tracker_grpc"])
        if args.token_file is None and endpoints.get("admin_token_file"):
            args.token_file = Path(endpoints["admin_token_file"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UsageError(f"reading {data / 'endpoints.json'}: {exc}") from None


def _token(args: argparse.Namespace) -> str:
    path: Path | None = args.token_file
    if path is not None:
        try:
            return path.read_text().strip()
        except OSError as exc:
            raise UsageError(f"reading {path}: {exc.strerror}") from None
    return os.environ.get("APTMESH_ADMIN_TOKEN", "")


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


def status_line(s: col.EdgeStatus, version: int) -> str:
    state = "complete" if s.complete and s.version == version else "incomplete"
    if s.version and s.version != version:
        state = f"at version {s.version}"
    line = (
        f"{s.edge_id} ({s.zone or 'no zone'}): {s.files_present}/{s.files_wanted} files, "
        f"{_size(s.bytes_present)}/{_size(s.bytes_wanted)}, {state}"
    )
    return line + "".join(f"\n    error: {e}" for e in s.errors)


def done(collection: col.Collection, statuses: Sequence[col.EdgeStatus]) -> bool:
    return bool(statuses) and all(s.complete and s.version == collection.version for s in statuses)


def _bar(collection: col.Collection, statuses: Sequence[col.EdgeStatus]) -> str:
    wanted = sum(s.bytes_wanted for s in statuses) or 1
    have = sum(s.bytes_present for s in statuses)
    full = int(BAR_WIDTH * have / wanted)
    ready = sum(1 for s in statuses if s.complete and s.version == collection.version)
    return (
        f"\r[{'#' * full}{'.' * (BAR_WIDTH - full)}] {100 * have // wanted:3d}% "
        f"{ready}/{len(statuses)} edges complete"
    )


async def _status(client: TrackerClient, args: argparse.Namespace, out: TextIO) -> int:
    deadline = time.monotonic() + args.deadline
    last = ""
    tty = out.isatty()
    while True:
        collection, statuses = await client.collection_status(args.name)
        if not args.wait or done(collection, statuses) or time.monotonic() >= deadline:
            break
        if tty:
            out.write(_bar(collection, statuses))
        else:
            line = _bar(collection, statuses).lstrip("\r")
            if line != last:
                out.write(line + "\n")
                last = line
        out.flush()
        await asyncio.sleep(POLL_EVERY)
    if args.wait:
        final = _bar(collection, statuses)
        if tty:
            out.write(final + "\n")
        elif final.lstrip("\r") != last:
            out.write(final.lstrip("\r") + "\n")
    if args.json:
        payload = {
            "collection": collection.name,
            "version": collection.version,
            "complete": done(collection, statuses),
            "edges": [col.status_to_json(s) for s in statuses],
        }
        out.write(json.dumps(payload, indent=2) + "\n")
    else:
        out.write(f"{collection.name} version {collection.version}: {len(statuses)} edges\n")
        for s in statuses:
            out.write(status_line(s, collection.version) + "\n")
    if args.wait and not done(collection, statuses):
        sys.stderr.write(
            f"aptmesh collection: {collection.name} did not reach every targeted edge "
            f"within {args.deadline:g} s\n"
        )
        return 1
    return 0


async def _run(args: argparse.Namespace, out: TextIO) -> int:
    _from_data_dir(args)
    token = _token(args) if args.command in ("define", "update", "delete") else ""
    async with TrackerClient(args.tracker, token=token, timeout=args.timeout) as client:
        if args.command == "define":
            stored = await client.put_collection(spec_of(args), expected_version=0)
            out.write(f"defined {stored.name} version {stored.version}\n")
        elif args.command == "update":
            spec = spec_of(args)
            expected = None
            if not args.force:
                try:
                    expected = (await client.get_collection(spec.name)).version
                except NotFound:
                    raise UsageError(
                        f"no collection named {spec.name!r}: define it first"
                    ) from None
            stored = await client.put_collection(spec, expected_version=expected)
            out.write(f"updated {stored.name} to version {stored.version}\n")
        elif args.command == "list":
            for c in await client.list_collections():
                zones = ",".join(c.spec.zones) or "all zones"
                out.write(
                    f"{c.name}\tversion {c.version}\t{zones}\t{len(c.spec.packages)} packages, "
                    f"{len(c.spec.files)} files\n"
                )
        elif args.command == "show":
            c = await client.get_collection(args.name)
            out.write(json.dumps(_spec_json(c), indent=2) + "\n")
        elif args.command == "delete":
            await client.delete_collection(args.name)
            out.write(f"deleted {args.name}\n")
        else:
            return await _status(client, args, out)
    return 0


def _spec_json(c: col.Collection) -> dict[str, object]:
    spec = c.spec
    return {
        "name": spec.name,
        "version": c.version,
        "updated_at": c.updated_at,
        "sources": list(spec.sources),
        "architectures": list(spec.architectures),
        "packages": list(spec.packages),
        "with_dependencies": spec.with_dependencies,
        "sections": list(spec.sections),
        "priorities": list(spec.priorities),
        "files": [
            {"name": f.name, "sha256": f.sha256, "size": f.size, "urls": list(f.urls)}
            for f in spec.files
        ],
        "zones": list(spec.zones),
    }


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return asyncio.run(_run(args, out or sys.stdout))
    except UsageError as exc:
        sys.stderr.write(f"aptmesh collection: {exc}\n")
        return 2
    except TrackerClientError as exc:
        sys.stderr.write(f"aptmesh collection: {exc}\n")
        return 1
