# The verbs everyone runs: make run, make test, make check, make bench.
# Every target installs what it needs on a fresh machine (as root).
SHELL := /bin/bash
PY_BOOT ?= python3
VENV := .venv
PY := $(VENV)/bin/python
UV := $(VENV)/bin/uv
UV_VERSION := 0.13.8
# Debian packages the tests drive for real (aria2c: a BitTorrent client nobody here wrote;
# promtool; PostgreSQL and Redis for the tracker's shared stores; lintian and debconf for the
# Debian packages' tests; auto-apt-proxy, which must find an edge; apt-ftparchive is not used: the fixture writes indexes itself).
SYS_PACKAGES := aria2 rtorrent prometheus gnupg apt dpkg-dev iproute2 nginx-light wrk postgresql redis-server lintian debconf systemd auto-apt-proxy chromium
PYTEST_ARGS ?=

.PHONY: all venv sysdeps proto proto-check test check run deb bench bench-swarm fuzz lock images deploy-generate clean drills

all: test

$(VENV)/.stamp: requirements.lock pyproject.toml
	test -x $(PY) || $(PY_BOOT) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check uv==$(UV_VERSION)
	$(UV) pip install -q --python $(PY) --require-hashes -r requirements.lock
	$(UV) pip install -q --python $(PY) --no-deps -e .
	touch $@

venv: $(VENV)/.stamp

# Installs the Debian packages the suite uses, only those missing.
sysdeps:
	@missing=$$(for p in $(SYS_PACKAGES); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages: $$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

# Container images (deploy/docker/build.sh): installs docker.io and debootstrap, starts
# dockerd, builds a local base image and the images from wheels; never pulls an image.
images: venv
	deploy/docker/build.sh

# Dashboards and the PrometheusRule are generated and committed; tests check they are current.
deploy-generate: venv
	$(PY) deploy/dashboards/generate.py
	$(PY) deploy/alerts/generate.py

# Generated gRPC code is committed; this regenerates it (and proto-check proves it is current).
proto: venv
	$(PY) proto/generate.py

proto-check: venv
	$(PY) proto/generate.py --check

# A whole mesh on this machine and real apt through it (OFFLINE=1: a local signed repository).
OFFLINE ?=
run: venv sysdeps
	OFFLINE=$(OFFLINE) $(PY) demo/run.py

test: venv sysdeps proto-check images
	$(PY) -m pytest -n 2 --dist loadgroup $(PYTEST_ARGS)

BUF_VERSION := 1.75.0
check: venv
	$(PY) tools/imports.py
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	npx --yes @bufbuild/buf@$(BUF_VERSION) lint proto

lock:
	$(UV) pip compile -q pyproject.toml --group dev --generate-hashes --python-version 3.11 --universal -o requirements.lock

clean:
	rm -rf $(VENV) build dist

# The Debian packages (packaging/): aptmesh-apt-method (the method, its links, its apt.conf.d
# snippet) and aptmesh-peer (the peer service in a private environment built from the wheels
# build.sh downloads, its debconf question, its systemd unit), into dist/.
deb: venv
	deploy/docker/build.sh wheels
	$(PY) packaging/build.py --out dist

# Benchmarks: they measure and print figures; they never gate CI.
bench: venv sysdeps
	$(PY) bench/tracker_announce.py
	$(PY) bench/tracker_scale.py
	$(PY) bench/apt_clients.py
	$(PY) bench/seeder_hash.py
	$(PY) bench/edge_vs_nginx.py
	$(PY) bench/apt_method.py

# The fault drills (tests/drills) at full size: kill -9 of each service under concurrent apt
# runs, tracker restart, tampering, a malicious peer; prints the table the README's
# Reliability section shows. Exit 1 when a drill broke a promise. `make test` runs them small.
DRILLS ?=
drills: venv sysdeps
	$(PY) -m tests.drills $(DRILLS)

# Every fuzz target (tests marked `fuzz`) with many more examples than make test runs;
# prints, per target, how many inputs it tried and whether any failed.
FUZZ_EXAMPLES ?= 20000
fuzz: venv
	HYPOTHESIS_PROFILE=fuzz APTMESH_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(PY) -m pytest -n 2 -m fuzz \
	  -p no:randomly --hypothesis-show-statistics -q tests

# The swarm benchmark (issue 7), full configuration, as root.
# Exit 3 means measured but some run was invalid (e.g. CPU-bound on a shared machine).
BENCH_SWARM_ARGS ?=
bench-swarm: venv
	$(PY) -m bench.swarm --cleanup
	$(PY) -m bench.swarm --edges 6 --size-mib 64 --scenario seed-bound --scenario peer-bound \
	  --system http --system libtorrent-default --system aptmesh $(BENCH_SWARM_ARGS) || test $$? -eq 3
	$(PY) -m bench.swarm --edges 6 --size-mib 64 --pulse --scenario seed-bound --scenario peer-bound \
	  --system http --system libtorrent-default --system aptmesh $(BENCH_SWARM_ARGS) || test $$? -eq 3
	# N = 12 beside N = 6: half the rates (40 Mbit/s seed-bound), so the edges move about the
	# bytes per second N = 6 does and the run stays link-bound on 2 quiet cores.
	$(PY) -m bench.swarm --edges 12 --size-mib 32 --rate 40 --scenario seed-bound \
	  --scenario peer-bound --system http --system libtorrent-default --system aptmesh \
	  $(BENCH_SWARM_ARGS) || test $$? -eq 3
