"""Shared fixtures: each lives in tests/fixtures/ and is registered here.

Hypothesis runs under one of two profiles: `default` (bounded, for `make test`)
and `fuzz` (deep, for `make fuzz`: `HYPOTHESIS_PROFILE=fuzz`). Fuzz targets are
tests marked `fuzz`; `make test` runs them with the bounded count too.
"""

import os

from hypothesis import HealthCheck, settings

settings.register_profile("default", max_examples=100, deadline=None)
settings.register_profile(
    "fuzz",
    max_examples=int(os.environ.get("APTMESH_FUZZ_EXAMPLES", "20000")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

pytest_plugins = [
    "tests.fixtures.debrepo",
    "tests.fixtures.tracker",
    "tests.fixtures.disks",
    "tests.fixtures.datastores",
    "tests.fixtures.faulty",
]
