"""The tracker: package index (gRPC), BitTorrent HTTP tracker and edge registry.

Layout, frontend -> logic -> storage as in chihaya:

- `wire`: the announce/scrape protocol, pure (no I/O);
- `http`: the aiohttp frontend (`/announce`, `/scrape`, `/metrics`, `/healthz`);
- `tracker`: announce and scrape logic over a `peerstore.PeerStore` (in memory, or
  `redis_peerstore` for several replicas);
- `index_store`, `registry_store`: the index's and the edge registry's store protocols,
  the rules they share, and in-memory fakes; `sqlite_store` (embedded default) and
  `postgres_store` (shared by replicas) implement both; `stores` picks one by URL and
  holds their health;
- `index_service`, `registry_service`: the gRPC servicers;
- `client`: the async client other services use;
- `app`: the composition root; `main`: the `aptmesh tracker` entry point.
"""
