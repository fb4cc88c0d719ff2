"""The small fault drills (`make drills` runs them full size and prints the table).

Each drill is one test over its own mesh of real processes (tracker, seeder,
two edges on 127.0.0.2-5) and the signed repository; every one ends with the
hashing checker over the edges' caches and the seeder's files. A drill passes
when its row shows no apt failure, no hung run, no corrupt byte served, no
corrupt entry, and every recovery it measures within its goal (`notes` says
what did not hold). One xdist group: the drills share the loopback addresses.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from aptmesh.debrepo import DebRepo
from tests.drills.drills import DRILLS
from tests.drills.harness import SMALL

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group(name="drills")]

# Drills whose class of fault is fixed only once the edge's refactoring lands (issue 15):
# the edge must count bad pieces in aptmesh_verification_failures_total (aptmesh.swarm
# reports them through on_hash_failed; the edge does not pass one yet).
EDGE_PENDING = {"malicious_peer": "the edge does not count piece-hash failures yet"}


@pytest.mark.parametrize("name", list(DRILLS))
def test_drill(
    name: str, debrepo_session: DebRepo, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    if name in EDGE_PENDING:
        request.applymarker(pytest.mark.xfail(reason=EDGE_PENDING[name], strict=True))
    row = DRILLS[name](debrepo_session, tmp_path, SMALL)
    assert row.runs > 0
    assert (row.apt_failures, row.hung, row.corrupt_bytes, row.corrupt_entries) == (0, 0, 0, 0), row
    assert not row.notes, row.notes
