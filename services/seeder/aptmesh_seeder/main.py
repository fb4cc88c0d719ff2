"""`aptmesh seeder`: read the configuration, set up logging, seed until SIGTERM.

`aptmesh seeder --once` syncs every repository once (fetch, verify, hash,
publish, record) and exits 0 when all of them worked, 1 otherwise; it runs no
BitTorrent session, so it suits cron or pre-filling a data directory: a
seeder started later on the same data directory seeds those files at once,
without fetching or hashing them again. `--once` is a command-line flag, not
an option (it says what to do now, not how the service is configured), so it
has no environment variable. On a terminal it draws a progress bar on stderr;
otherwise it writes plain log lines.

Exit codes: 0 ok, 1 a sync failed (`--once`) or the service could not start,
2 a configuration error (one line on stderr naming the option).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Mapping, Sequence
from typing import TextIO

from aptmesh import lifecycle, logs
from aptmesh.config import ConfigError, add_arguments, build, render
from aptmesh_seeder import app
from aptmesh_seeder.config import SERVICE, SeederConfig
from aptmesh_seeder.progress import LogProgress, Progress, TerminalProgress
from aptmesh_seeder.state import StateError

DESCRIPTION = (
    "The aptmesh seeder: watches Debian repositories, verifies them, and seeds their "
    "large packages with BitTorrent."
)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=f"aptmesh {SERVICE}", description=DESCRIPTION)
    add_arguments(parser, SeederConfig, SERVICE)
    parser.add_argument(
        "--print-config", action="store_true", help="print the effective configuration and exit"
    )
    parser.add_argument(
        "--once",
        action="store_true",
        help="sync every repository once and exit: 0 if all worked, 1 if not (no seeding)",
    )
    return parser


def main(
    argv: Sequence[str],
    *,
    environ: Mapping[str, str] | None = None,
    stderr: TextIO | None = None,
) -> int:
    err = stderr or sys.stderr
    args = _parser().parse_args(list(argv))
    given = {k: v for k, v in vars(args).items() if k not in ("print_config", "once")}
    try:
        config = build(SeederConfig, SERVICE, given, os.environ if environ is None else environ)
        if args.print_config:
            sys.stdout.write(render(config, SERVICE))
            return 0
        app.check_runnable(config)
    except ConfigError as exc:
        print(f"aptmesh {SERVICE}: {exc}", file=err)
        return 2
    logs.configure(SERVICE, config.log_level, config.log_format)
    log = logs.get("aptmesh_seeder")
    if args.once:
        progress: Progress = TerminalProgress(err) if err.isatty() else LogProgress()
        try:
            results = asyncio.run(app.once(config, progress=progress))
        except (OSError, StateError) as exc:
            log.error("seeder_failed", error=str(exc))
            return 1
        failed = [r.repository for r in results if not r.ok]
        log.info("once_finished", ok=not failed, failed=failed)
        return 1 if failed else 0

    async def run(stop: asyncio.Event) -> None:
        running = await app.start(config)
        await stop.wait()
        log.info("seeder_stopping")
        await running.stop()

    try:
        return lifecycle.run(run)
    except (OSError, StateError) as exc:
        log.error("seeder_start_failed", error=str(exc))
        return 1
