"""What the edge believes about files: the interface between fetching and Debian's signatures.

A `Verifier` is told about every index file that passes through (`check_index`)
and answers what a package file must be (`expected`). `release_for` names the
InRelease that must be checked before an index can be believed, so the caller
fetches it first. `NullVerifier` believes nothing (verify_mode off);
`aptmesh_edge.trust.ReleaseVerifier` checks signatures and hashes (aptmesh.debian).
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from aptmesh.debian import FileHash
from aptmesh_edge.urls import Resource


class VerificationFailed(Exception):
    """An index does not verify; `kind` labels the metric, the text is safe for clients."""

    def __init__(self, kind: str, text: str) -> None:
        super().__init__(text)
        self.kind = kind
        self.text = text


class Verifier(Protocol):
    def release_for(self, resource: Resource) -> Resource | None:
        """The InRelease that vouches for `resource` (an index), or None if none is needed."""
        ...

    async def check_index(self, resource: Resource, path: Path, sha256: str, size: int) -> bool:
        """Checks a freshly fetched index; True if verified (and learned), False if accepted
        unverified; raises VerificationFailed if it must be refused."""
        ...

    def expected(self, resource: Resource) -> FileHash | None:
        """A package file's SHA-256 and size from a verified index, if known."""
        ...

    def locate(self, sha256: str) -> Resource | None:
        """A package file the verified indexes list with this SHA-256."""
        ...

    def keeps_unverified(self) -> bool:
        """Whether files no verified index vouches for may be cached (only with verify off)."""
        ...


class NullVerifier:
    """verify_mode off: every file is accepted, cached by the hash of its bytes."""

    def release_for(self, resource: Resource) -> Resource | None:
        return None

    async def check_index(self, resource: Resource, path: Path, sha256: str, size: int) -> bool:
        return False

    def expected(self, resource: Resource) -> FileHash | None:
        return None

    def locate(self, sha256: str) -> Resource | None:
        return None

    def keeps_unverified(self) -> bool:
        return True
