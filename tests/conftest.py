"""Shared fixtures: each lives in tests/fixtures/ and is registered here."""

pytest_plugins = ["tests.fixtures.debrepo", "tests.fixtures.tracker", "tests.fixtures.disks"]
