"""Dropping root like apt's own methods, and a cache directory the method can write.

apt starts methods as root and, unless it found a file the sandbox user
cannot reach (then it sends `APT::Sandbox::User` empty), expects them to
drop to that user (`_apt`) once they have read their configuration: its
methods call DropPrivileges (fileutl.cc): PR_SET_NO_NEW_PRIVS, then
setgroups, setresgid, setresuid. This does the same, before any download
thread starts.

The edge-choice cache must stay writable after the drop. Running as root,
the method prepares `Dir::State/aptmesh/` owned by the sandbox user (apt's
`Dir::State` itself is root's) and caches there. Run by a plain user (apt
as a user, `apt-helper download-file`), it caches in `Dir::State` when
that user may write it, else in `$XDG_CACHE_HOME/aptmesh` (`~/.cache`), and
in memory only when neither works.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

CACHE_NAME = "mesh-edges.json"
PR_SET_NO_NEW_PRIVS = 38


class PrivilegeError(OSError):
    """Dropping to the sandbox user failed; the method must not go on as root."""


def sandbox_user(items: dict[str, str]) -> str | None:
    """The user apt wants methods to run as, or None when it wants no sandbox."""
    user = items.get("apt::sandbox::user", "_apt").strip()
    return None if user in ("", "root") else user


def _no_new_privs() -> None:
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)


def drop_to(user: str, state_dir: str | None) -> str | None:
    """Drops root for `user`; returns the cache file to use (None: memory only).

    Raises PrivilegeError if the user exists but the drop failed; returns
    without dropping when `user` does not exist (apt's behaviour is to
    fail, but a missing `_apt` must not stop apt: DESIGN's fail-open).
    """
    import pwd

    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        return cache_file_for_root(state_dir)
    cache: str | None = None
    if state_dir:
        directory = Path(state_dir) / "aptmesh"
        try:
            directory.mkdir(mode=0o755, exist_ok=True)
            os.chown(directory, entry.pw_uid, entry.pw_gid)
            cache = str(directory / CACHE_NAME)
        except OSError:
            cache = None
    _no_new_privs()
    try:
        os.setgroups([entry.pw_gid])
        os.setresgid(entry.pw_gid, entry.pw_gid, entry.pw_gid)
        os.setresuid(entry.pw_uid, entry.pw_uid, entry.pw_uid)
    except OSError as exc:
        raise PrivilegeError(f"dropping privileges to {user}: {exc}") from None
    if os.getuid() != entry.pw_uid or os.geteuid() != entry.pw_uid:
        raise PrivilegeError(f"dropping privileges to {user}: still uid {os.geteuid()}")
    return cache


def cache_file_for_root(state_dir: str | None) -> str | None:
    return str(Path(state_dir) / CACHE_NAME) if state_dir else None


def cache_file_for_user(state_dir: str | None, environ: dict[str, str]) -> str | None:
    """Where a method run by a plain user caches its edge choice."""
    if state_dir and os.access(state_dir, os.W_OK | os.X_OK):
        return str(Path(state_dir) / CACHE_NAME)
    base = environ.get("XDG_CACHE_HOME") or (
        str(Path(environ["HOME"]) / ".cache") if environ.get("HOME") else ""
    )
    if not base:
        return None
    directory = Path(base) / "aptmesh"
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError:
        return None
    return str(directory / CACHE_NAME) if os.access(directory, os.W_OK) else None


def settle(items: dict[str, str], state_dir: str | None) -> str | None:
    """The process as apt wants it for a method (root dropped); returns the cache file to use."""
    if os.geteuid() == 0:
        user = sandbox_user(items)
        if user is None:
            return cache_file_for_root(state_dir)
        return drop_to(user, state_dir)
    return cache_file_for_user(state_dir, dict(os.environ))
