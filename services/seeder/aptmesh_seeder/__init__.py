"""The seeder: seed boxes that watch Debian repositories and seed their large packages.

Layout (one thing per module):

- `config`: `SeederConfig` and the repository spec syntax;
- `select`: which packages are worth swarming (pure policy, a logged plan);
- `state`: the seeder's durable state (SQLite): syncs, validators, held files, resume data;
- `sources`: reading a repository, over HTTP(S) or from a local mirror directory;
- `seeding`: the files being seeded (libtorrent through `aptmesh.swarm`, or nothing);
- `seedbox`: restores held files at start, polls, retires what left the index;
- `publish`: publishing records to the tracker's index, reading and joining its edge
  registry (and an in-memory fake);
- `sync`: one repository sync (verify, select, fetch, hash, publish, seed);
- `progress`: a terminal progress bar or plain log lines;
- `metrics`, `service` (gRPC), `http` (`/metrics`, `/healthz`, `/readyz`);
- `app`: the composition root; `main`: the `aptmesh seeder` entry point.
"""
