"""The upload ledger on disk: STATE_DIR/uploads.json, written to a temporary name, fsynced
and renamed, so a killed peer keeps its count (and a budget cannot be reset by a crash).
A missing file is an empty ledger; an unreadable one is an error that names the file."""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path

from aptmesh_peer.policy import UploadLedger

NAME = "uploads.json"


class LedgerError(Exception):
    """The ledger file exists but cannot be read as one."""


def load(state_dir: Path) -> UploadLedger:
    path = state_dir / NAME
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return UploadLedger(
            day=str(data["day"]),
            month=str(data["month"]),
            day_bytes=int(data["day_bytes"]),
            month_bytes=int(data["month_bytes"]),
            total_bytes=int(data["total_bytes"]),
        )
    except FileNotFoundError:
        return UploadLedger()
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise LedgerError(f"reading the upload ledger {path}: {exc}") from None


def save(state_dir: Path, ledger: UploadLedger) -> None:
    path = state_dir / NAME
    tmp = path.with_name(f".{NAME}.tmp")
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump(asdict(ledger), handle, sort_keys=True)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    directory = os.open(state_dir, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
