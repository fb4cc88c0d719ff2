#!/usr/bin/env bash
# Builds the aptmesh images (aptmesh-tracker, aptmesh-seeder, aptmesh-edge)
# on a Debian machine without pulling any image:
#
#   1. installs docker.io and debootstrap if missing (apt-get; needs root);
#   2. starts dockerd if it is not running (log: build/docker/dockerd.log);
#   3. builds the base image aptmesh-base:local from a debootstrap minbase
#      bookworm root file system with python3, from the Debian mirror this
#      machine's apt sources already use (skipped if the image exists;
#      APTMESH_REBUILD_BASE=1 forces it);
#   4. builds the project's wheel and downloads its locked runtime
#      dependencies as cp311 manylinux wheels (PyPI) into dist/wheels/;
#   5. builds the three images from deploy/docker/Dockerfile with
#      --build-arg BASE_IMAGE=aptmesh-base:local and --pull=false.
#
# Usage: deploy/docker/build.sh            (as root; `make images` runs it)
#        deploy/docker/build.sh wheels     (step 4 only, any user: the wheels the
#                                           aptmesh-peer Debian package installs)
#        deploy/docker/build.sh base       (steps 1-3 only: the base image the
#                                           package tests install the .debs in)
# Environment: PYTHON (default .venv/bin/python), APTMESH_REBUILD_BASE=1,
#              APTMESH_WHEELS_DIR (default
#              dist/wheels), APTMESH_BUILD_DIR (default build/docker),
#              DOCKERD_TIMEOUT (seconds, default 60).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"

SUITE=bookworm
BASE_IMAGE=aptmesh-base:local
SERVICES=(tracker seeder edge)
PYTHON=${PYTHON:-$ROOT/.venv/bin/python}
UV=${UV:-$ROOT/.venv/bin/uv}
WORK=${APTMESH_BUILD_DIR:-$ROOT/build/docker}
WHEELS=${APTMESH_WHEELS_DIR:-$ROOT/dist/wheels}
VERSION=$(sed -n 's/^__version__ = "\(.*\)"$/\1/p' aptmesh/__init__.py)

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die() { printf 'build.sh: %s\n' "$*" >&2; exit 1; }

MODE=${1:-images}
case $MODE in images | wheels | base) ;; *) die "unknown mode $MODE (images, wheels or base)" ;; esac
[ "$MODE" = wheels ] || [ "$(id -u)" -eq 0 ] || die "run as root (it installs packages and starts dockerd)"
[ -n "$VERSION" ] || die "cannot read __version__ from aptmesh/__init__.py"
[ -x "$PYTHON" ] || die "$PYTHON not found: run 'make venv' first"
mkdir -p "$WORK"

install_missing() {
    local missing=()
    for pkg in "$@"; do
        dpkg-query -W -f='${Status}\n' "$pkg" 2>/dev/null | grep -q 'install ok installed' ||
            missing+=("$pkg")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        say "installing ${missing[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            "${missing[@]}" >/dev/null
    fi
}

start_dockerd() {
    if docker info >/dev/null 2>&1; then
        return
    fi
    say "starting dockerd (log: $WORK/dockerd.log)"
    # setsid: dockerd outlives this script (the tests use it afterwards).
    setsid dockerd >"$WORK/dockerd.log" 2>&1 </dev/null &
    echo $! >"$WORK/dockerd.pid"
    local deadline=$((SECONDS + ${DOCKERD_TIMEOUT:-60}))
    until docker info >/dev/null 2>&1; do
        if [ $SECONDS -ge $deadline ]; then
            tail -n 30 "$WORK/dockerd.log" >&2 || true
            die "dockerd did not answer within ${DOCKERD_TIMEOUT:-60} s"
        fi
        kill -0 "$(cat "$WORK/dockerd.pid")" 2>/dev/null || {
            tail -n 30 "$WORK/dockerd.log" >&2
            die "dockerd exited"
        }
        sleep 1
    done
}

# The archive URL this machine's apt already uses for $SUITE (aptmesh.aptsources
# reads its deb822 and one-line sources); never a built-in host.
debian_mirror() {
    "$PYTHON" - "$SUITE" <<'PY'
import sys

from aptmesh.aptsources import read_sources

suite = sys.argv[1]
urls = [s.uri for s in read_sources() if suite in s.suites and s.uri.startswith("http")]
if not urls:
    sys.exit(f"no apt source for {suite} in /etc/apt/sources.list(.d)")
print(urls[0])
PY
}

build_base() {
    if [ "${APTMESH_REBUILD_BASE:-0}" != 1 ] && docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
        say "$BASE_IMAGE exists (APTMESH_REBUILD_BASE=1 rebuilds it)"
        return
    fi
    local mirror rootfs
    mirror=$(debian_mirror)
    rootfs=$WORK/rootfs
    rm -rf "$rootfs"
    say "debootstrap --variant=minbase $SUITE with python3 (from this machine's apt source)"
    debootstrap --variant=minbase --include=python3 "$SUITE" "$rootfs" "$mirror" \
        >"$WORK/debootstrap.log" 2>&1 || {
        tail -n 30 "$WORK/debootstrap.log" >&2
        die "debootstrap failed (log: $WORK/debootstrap.log)"
    }
    # No package lists or caches in the image; apt inside it is never used.
    rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin \
        "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/log/*.log
    say "importing $BASE_IMAGE"
    tar -C "$rootfs" --numeric-owner -c . | docker import \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'ENV LANG=C.UTF-8' \
        --change 'CMD ["python3"]' \
        - "$BASE_IMAGE" >/dev/null
    rm -rf "$rootfs"
}

# The project's wheel, and its runtime dependencies at the versions in
# requirements.lock as cp311 manylinux wheels, plus pip's own wheel.
build_wheels() {
    say "building wheels into dist/wheels/"
    rm -rf "$WHEELS"
    mkdir -p "$WHEELS"
    "$UV" build --quiet --wheel --out-dir "$WHEELS" "$ROOT"
    # requirements.lock also pins the dev tools: resolve the runtime
    # dependencies alone, constrained to the locked versions.
    sed -e '/^ *--hash=/d' -e 's/ \\$//' -e '/^ *#/d' requirements.lock >"$WORK/constraints.txt"
    "$UV" pip compile --quiet pyproject.toml --constraint "$WORK/constraints.txt" \
        --python-version 3.11 --python-platform x86_64-manylinux_2_28 \
        --no-header --no-annotate -o "$WORK/runtime.txt"
    "$PYTHON" -m pip download --quiet --disable-pip-version-check --no-deps \
        --only-binary=:all: --implementation cp --python-version 3.11 --abi cp311 --abi abi3 --abi none \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 --platform manylinux_2_5_x86_64 \
        --platform manylinux1_x86_64 --platform any \
        -r "$WORK/runtime.txt" "pip==$("$PYTHON" -m pip --version | cut -d' ' -f2)" \
        -d "$WHEELS"
    ls "$WHEELS" | sed 's/^/    /' >&2
}

# A context with only what the Dockerfile copies (the repository has no
# .dockerignore, and a venv does not belong in a build context).
build_images() {
    local context=$WORK/context
    rm -rf "$context"
    mkdir -p "$context/dist" "$context/deploy/docker"
    cp -r "$WHEELS" "$context/dist/wheels"
    cp deploy/docker/healthcheck.py "$context/deploy/docker/"
    for service in "${SERVICES[@]}"; do
        say "building aptmesh-$service:$VERSION"
        # The legacy builder: no BuildKit frontend image to fetch.
        DOCKER_BUILDKIT=0 docker build --quiet --pull=false \
            --build-arg BASE_IMAGE="$BASE_IMAGE" \
            --target "$service" \
            -t "aptmesh-$service:$VERSION" \
            -f deploy/docker/Dockerfile "$context" >/dev/null
    done
    docker image ls --filter 'reference=aptmesh-*' >&2
}

if [ "$MODE" = wheels ]; then
    build_wheels
    exit 0
fi
install_missing docker.io debootstrap
start_dockerd
build_base
if [ "$MODE" = base ]; then
    exit 0
fi
build_wheels
build_images
say "done: ${SERVICES[*]/#/aptmesh-} tagged $VERSION"
