"""Real apt-get through the method: a repository of 30 packages, edges that die.

The mirror is the signed test repository on 127.0.0.1; the live edge is a
plain file server on 127.0.0.3 holding the same archive under the path-prefix
form (`/127.0.0.1:PORT/debian/...`); the dead edge is a closed port on
127.0.0.9. apt keeps its default `Acquire::Retries` (3, with delays): that
is what made apt hang (issue 15) while the method redirected to a dead edge.
"""

from __future__ import annotations

import hashlib
import os
import pwd
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from aptmesh.debrepo import AptEnv, DebRepo, PackageSpec, SigningKey, apt_env, build_repo
from aptmesh.testing import free_port
from aptmesh_apt_method.config import MeshConfig
from aptmesh_apt_method.edges import CacheEntry, Edge, read_cache, write_cache
from tests.aptmethod.servers import Running, Site, serve

NAMES = [f"aptmesh-many{n:02d}" for n in range(30)]
# Generous for two shared cores; apt's hang never ended, so any bound shows it.
APT_DEADLINE = 60.0


@pytest.fixture(scope="module")
def many(
    tmp_path_factory: pytest.TempPathFactory, debrepo_signing_key: SigningKey
) -> Iterator[DebRepo]:
    specs = [PackageSpec(name, "1.0-1", 2000) for name in NAMES]
    repo = build_repo(tmp_path_factory.mktemp("many") / "debian", debrepo_signing_key, specs)
    repo.server.start()
    yield repo
    repo.close()


@pytest.fixture
def live_edge(many: DebRepo) -> Iterator[Running]:
    files = {
        f"/{many.host}/debian/{path.relative_to(many.root)}": path.read_bytes()
        for path in many.root.rglob("*")
        if path.is_file()
    }
    with serve(Site(files=files), "127.0.0.3") as running:
        yield running


def mesh_env(tmp: Path, repo: DebRepo, method: Path, edges: list[str]) -> AptEnv:
    source = repo.sources_line(repo.base_url.replace("http://", "mesh+http://"))
    return apt_env(
        tmp,
        source,
        {
            "Dir::Bin::Methods::mesh+http": str(method),
            "Acquire::mesh::Edges": " ".join(edges),
            "Acquire::Retries": "3",  # apt's default since 2.3.2
        },
    )


def remember(env: AptEnv, edges: list[str]) -> Path:
    """Writes the method's cache as a run a moment ago would have left it."""
    path = env.root / "var/lib/apt/mesh-edges.json"
    key = MeshConfig(edges=tuple(edges)).cache_key()
    write_cache(str(path), CacheEntry(key, time.time(), tuple(Edge(url) for url in edges)))
    return path


def download(env: AptEnv) -> subprocess.CompletedProcess[str]:
    try:
        return env.run("apt-get", "download", *NAMES, timeout=APT_DEADLINE, check=False)
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode(errors="replace") if isinstance(exc.stdout, bytes) else ""
        raise AssertionError(f"apt-get download hung for {APT_DEADLINE} s:\n{out}") from None


def assert_downloaded(env: AptEnv, repo: DebRepo) -> None:
    for name in NAMES:
        package = repo.package(name)
        [deb] = env.root.glob(f"{name}_*.deb")
        assert hashlib.sha256(deb.read_bytes()).hexdigest() == package.sha256


def test_remembered_edge_killed_apt_get_completes_through_the_other(
    method_path: Path, many: DebRepo, live_edge: Running, tmp_path: Path
) -> None:
    """Regression (issue 15): this hung 7 times of 7 when the method redirected apt."""
    dead = f"http://127.0.0.9:{free_port('127.0.0.9')}"
    edges = [dead, live_edge.url]
    env = mesh_env(tmp_path, many, method_path, edges)
    remember(env, edges)
    env.run("apt-get", "update")
    remember(env, edges)  # the update found the edge dead and forgot it: remember it again
    many_before = len(many.server.log)

    result = download(env)

    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stderr == ""
    assert "Ign:" not in result.stdout
    assert_downloaded(env, many)
    served = [p for p in live_edge.site.file_requests() if p.endswith(".deb")]
    assert len(served) == len(NAMES)
    assert len(many.server.log) == many_before  # nothing from the mirror
    entry = read_cache(str(env.root / "var/lib/apt/mesh-edges.json"))
    assert entry is not None and [e.url for e in entry.edges] == [live_edge.url]


def test_only_edge_killed_apt_get_completes_from_the_mirror(
    method_path: Path, many: DebRepo, tmp_path: Path
) -> None:
    dead = f"http://127.0.0.9:{free_port('127.0.0.9')}"
    env = mesh_env(tmp_path, many, method_path, [dead])
    env.run("apt-get", "update")
    remember(env, [dead])

    result = download(env)

    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stderr == ""
    assert "Ign:" not in result.stdout
    assert_downloaded(env, many)


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A scratch directory the sandbox user can reach (pytest's own are root's, mode 700)."""
    import shutil
    import tempfile

    path = Path(tempfile.mkdtemp(prefix="aptmesh-sandbox-", dir="/tmp"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to start apt's sandbox")
def test_the_method_drops_to_apt_sandbox_user_and_caches_as_it(
    method_path: Path, many: DebRepo, live_edge: Running, open_dir: Path
) -> None:
    """Issue 18: like apt's own methods the method runs as _apt; its cache is _apt's."""
    apt_user = pwd.getpwnam("_apt")
    env = mesh_env(open_dir, many, method_path, [live_edge.url])
    env.settings["APT::Sandbox::User"] = "_apt"
    Path(env.env["APT_CONFIG"]).write_text(
        "".join(f'{k} "{v}";\n' for k, v in env.settings.items())
    )
    env.options[env.options.index("APT::Sandbox::User=root")] = "APT::Sandbox::User=_apt"
    keyring = open_dir / "archive-keyring.gpg"  # gpgv runs as _apt too
    keyring.write_bytes(many.keyring.read_bytes())
    keyring.chmod(0o644)
    sources = env.root / "etc/apt/sources.list"
    sources.write_text(sources.read_text().replace(str(many.keyring), str(keyring)))
    for path in [env.root, *env.root.rglob("*")]:
        if path.is_dir():
            path.chmod(0o755)
    update = env.run("apt-get", "update")
    assert update.stderr == "", update.stderr  # no "unsandboxed" notice: _apt could reach it all
    os.chown(env.root, apt_user.pw_uid, apt_user.pw_gid)  # apt-get download writes here

    result = download(env)

    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stderr == ""
    assert_downloaded(env, many)
    cache = env.root / "var/lib/apt/aptmesh/mesh-edges.json"
    assert cache.stat().st_uid == apt_user.pw_uid  # written after the drop
    assert (cache.parent.stat().st_uid, cache.parent.stat().st_mode & 0o777) == (
        apt_user.pw_uid,
        0o755,
    )
    assert not (env.root / "var/lib/apt/mesh-edges.json").exists()
    entry = read_cache(str(cache))
    assert entry is not None and [e.url for e in entry.edges] == [live_edge.url]
