"""Fixtures for the apt method's tests: the method installed into a scratch root."""

from __future__ import annotations

from pathlib import Path

import pytest

from aptmesh_apt_method.install import SYSTEM_PYTHON, install


@pytest.fixture(scope="session")
def method_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A root with the method installed as a client machine would have it."""
    root = tmp_path_factory.mktemp("method-root")
    install(root, SYSTEM_PYTHON)
    return root


@pytest.fixture(scope="session")
def method_path(method_root: Path) -> Path:
    return method_root / "usr/lib/apt/methods/mesh+http"
