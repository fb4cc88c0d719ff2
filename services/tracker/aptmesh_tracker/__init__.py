"""The tracker: package index (gRPC), BitTorrent HTTP tracker and edge registry.

Layout, frontend -> logic -> storage as in chihaya:

- `wire`: the announce/scrape protocol, pure (no I/O);
- `http`: the aiohttp frontend (`/announce`, `/scrape`, `/metrics`, `/healthz`);
- `tracker`: announce and scrape logic over a `peerstore.PeerStore`;
- `store`: the index and edge registry storage (SQLite, plus an in-memory fake);
- `index_service`, `registry_service`: the gRPC servicers;
- `client`: the async client other services use;
- `app`: the composition root; `main`: the `aptmesh tracker` entry point.
"""
