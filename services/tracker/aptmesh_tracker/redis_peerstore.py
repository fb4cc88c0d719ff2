"""Swarms on Redis, shared by every replica: the peer store's contract, bounds and TTLs in Redis.

Theory of operation. Any replica answers any announce with the same swarm,
because the swarm lives in Redis and each announce is one Lua script that
Redis runs atomically (one round trip). Per swarm (infohash `H`):

- `sw:{H}:s`, `sw:{H}:l`: sorted sets of seeders and leechers; the member is
  the peer's key (peer id + compact address, which is all a peer is), the
  score the time its announce ends (now + ttl);
- `sw:{H}:r`: the registered peers among them (offered first);
- `sw:{H}:a:IP`: the anonymous peers of one address in this swarm;
- `sw:{H}:d`: the completed count (BEP 48), which outlives the swarm (for
  `count_ttl` after its last completion, or for ever on a tracker limited to
  the index, which bounds the infohashes it counts).

and across swarms `ad:IP` (an address's anonymous peers everywhere), `all`
(every peer), `seeders` (every seeder) and `swarms` (each swarm's last end),
members scored the same way; and `epoch`, the peer-store epoch
(aptmesh_tracker.peerstore) that the first replica sets and every replica
reads (at start and at each sweep): it lives as long as Redis's data, so a
tracker restart keeps it and a Redis that lost its data gets a new one.
While Redis cannot answer, the store's epoch is its fallback's: the clients
then announce again to fill that fallback. Time-outs happen inside Redis: the script first
removes members past their time from the sets it touches, and it gives every
key of a swarm (and of an address) a TTL of the peer ttl, renewed by each
announce, so a swarm that everyone left silently disappears from Redis by
itself. `expire()` prunes the global sets and reads the gauges' figures.

Bounds: as in the in-memory store, a *new* anonymous peer is answered but not
stored when its address has `per_address_swarm` peers in the swarm or
`per_address` in all, when the swarm has `per_swarm`, or when Redis holds
`total`; stored peers are always renewed, registered peers never refused.

Selection: every live registered peer first (bounded by the registry), then
a random draw (ZRANDMEMBER: O(numwant), never O(swarm)) of the others; a
seeder gets only leechers.

Threads: the peer store contract is synchronous, and each call waits for one
round trip to Redis (bounded by `TIMEOUT`), so the app runs announces against
this store in a few threads (`app.PEER_THREADS`) that overlap those waits;
Redis's script is the atomic step, and the in-process fallback is used under
a lock. `expire()` runs on the event loop (one call a sweep). When Redis fails,
the store says so in its health, answers from an in-process fallback swarm
(peers that announced to this replica meanwhile) and does not try Redis again
for `RETRY_AFTER` seconds (or until the next sweep reaches it), so a dead
Redis costs one time-out every `RETRY_AFTER`, not one per announce. Peers
re-announce every interval, so the shared swarms fill again by themselves
once Redis is back.

Time is the wall clock (replicas compare ends written by one another);
tests inject one. Redis Cluster is not supported (the script's keys span
slots); one primary behind one address is (failover to a replica behind that
address, e.g. a Kubernetes Service, loses at most the swarms of one interval).
"""

from __future__ import annotations

import random
import secrets
import threading
import time
from collections.abc import Callable
from typing import Any

import redis
import redis.exceptions

from aptmesh import logs
from aptmesh_tracker.peerstore import AnnounceResult, Limit, PeerLimits, PeerStore
from aptmesh_tracker.stores import Component, StoreHealth
from aptmesh_tracker.wire import Event, Peer, ScrapeStats

log = logs.get(__name__)

Clock = Callable[[], float]
TIMEOUT = 0.5  # seconds a Redis call may take before the store falls back
RETRY_AFTER = 5.0  # seconds the store answers from its fallback after a failure
PEER_ID = 20
EPOCH = "epoch"  # the key of the shared peer-store epoch

# Refusal codes returned by the script, in the order the bounds are checked.
# The script's refusal codes, 0 for none.
REFUSALS = (None, Limit.ADDRESS_SWARM, Limit.ADDRESS, Limit.SWARM, Limit.TOTAL)

_ANNOUNCE = """
local s, l, r, asw, aad, all, seeders, swarms, d, anon = KEYS[1], KEYS[2], KEYS[3], KEYS[4],
  KEYS[5], KEYS[6], KEYS[7], KEYS[8], KEYS[9], KEYS[10]
local key, now, expires, ttl = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local seeder, event, numwant = ARGV[5] == '1', ARGV[6], tonumber(ARGV[7])
local registered, ih, count_ttl = ARGV[8] == '1', ARGV[9], tonumber(ARGV[14])
local max_asw, max_aad, max_swarm, max_total = tonumber(ARGV[10]), tonumber(ARGV[11]),
  tonumber(ARGV[12]), tonumber(ARGV[13])
local global = ih .. key
for _, k in ipairs({s, l, r, asw, aad}) do redis.call('ZREMRANGEBYSCORE', k, '-inf', now) end
if event == 'stopped' then
  for _, k in ipairs({s, l, r, asw}) do redis.call('ZREM', k, key) end
  for _, k in ipairs({aad, all, seeders, anon}) do redis.call('ZREM', k, global) end
  local left_s, left_l = redis.call('ZCARD', s), redis.call('ZCARD', l)
  if left_s + left_l == 0 then redis.call('ZREM', swarms, ih) end
  return {left_s, left_l, 0, {}, {}}
end
local known = redis.call('ZSCORE', s, key) or redis.call('ZSCORE', l, key)
local refused = 0
if not known and not registered then
  if redis.call('ZCARD', asw) >= max_asw then refused = 1
  elseif redis.call('ZCARD', aad) >= max_aad then refused = 2
  elseif redis.call('ZCARD', s) + redis.call('ZCARD', l) >= max_swarm then refused = 3
  elseif redis.call('ZCOUNT', anon, now, '+inf') >= max_total then refused = 4
  end
end
if refused == 0 then
  local into, other = l, s
  if seeder then into, other = s, l end
  redis.call('ZADD', into, expires, key)
  redis.call('ZREM', other, key)
  redis.call('ZADD', all, expires, global)
  if seeder then redis.call('ZADD', seeders, expires, global)
  else redis.call('ZREM', seeders, global) end
  redis.call('ZADD', swarms, 'GT', expires, ih)
  if registered then
    redis.call('ZADD', r, expires, key)
  elseif not redis.call('ZSCORE', r, key) then
    redis.call('ZADD', asw, expires, key)
    redis.call('ZADD', aad, expires, global)
    redis.call('ZADD', anon, expires, global)
    redis.call('EXPIRE', asw, ttl)
    redis.call('EXPIRE', aad, ttl)
  end
  for _, k in ipairs({s, l, r}) do redis.call('EXPIRE', k, ttl) end
end
if event == 'completed' then
  redis.call('INCR', d)
  if count_ttl > 0 then redis.call('EXPIRE', d, count_ttl) end
end
local first, others = {}, {}
if numwant > 0 then
  for _, p in ipairs(redis.call('ZRANGE', r, 0, numwant)) do
    if p ~= key and (not seeder or redis.call('ZSCORE', l, p)) then first[#first + 1] = p end
  end
  local want = numwant + #first + 1  -- room for the requester and the registered, dropped later
  others = redis.call('ZRANDMEMBER', l, want)
  if not seeder then
    for _, p in ipairs(redis.call('ZRANDMEMBER', s, want)) do others[#others + 1] = p end
  end
end
return {redis.call('ZCARD', s), redis.call('ZCARD', l), refused, first, others}
"""


def _keys(info_hash: bytes, ip: bytes) -> list[bytes]:
    swarm = b"sw:{" + info_hash.hex().encode() + b"}:"
    return [
        swarm + b"s",
        swarm + b"l",
        swarm + b"r",
        swarm + b"a:" + ip.hex().encode(),
        b"ad:" + ip.hex().encode(),
        b"all",
        b"seeders",
        b"swarms",
        swarm + b"d",
        b"anonymous",  # the anonymous peers of all swarms: what the total bound counts
    ]


def _peer(key: bytes) -> Peer:
    return Peer(key[:PEER_ID], key[PEER_ID:])


class RedisPeerStore:
    def __init__(
        self,
        url: str,
        ttl: float,
        health: StoreHealth,
        fallback: PeerStore,
        clock: Clock = time.time,
        rng: random.Random | None = None,
        *,
        limits: PeerLimits | None = None,
        count_ttl: int = 0,
    ) -> None:
        """`fallback` answers while Redis cannot (this replica's peers only). `count_ttl`
        forgets a completed count that long after its last completion (0: never; an open
        tracker, which counts any infohash, needs it to bound Redis's memory)."""
        self._redis = redis.Redis.from_url(
            url, socket_timeout=TIMEOUT, socket_connect_timeout=TIMEOUT, health_check_interval=0
        )
        self._script = self._redis.register_script(_ANNOUNCE)
        self._ttl = ttl
        self._health = health
        self._fallback = fallback
        self._fallback_lock = threading.Lock()  # the fallback has one writer at a time
        self._clock = clock
        self._rng = rng or random.Random()  # noqa: S311 - load spreading, not secrecy
        limits = limits or PeerLimits()
        self._bounds = (
            limits.per_address_swarm,
            limits.per_address,
            limits.per_swarm,
            limits.total,
            count_ttl,
        )
        self._down_until = 0.0
        self._gauges = (0, 0, 0)  # swarms, seeders, peers, as of the last expire()
        self._swarm_hashes: list[bytes] = []  # as of the last expire()
        self._epoch = ""  # Redis's, as last read (`_read_epoch`); "" until read
        self._read_epoch()

    def _usable(self) -> bool:
        return time.monotonic() >= self._down_until

    def _failed(self, exc: Exception) -> None:
        self._down_until = time.monotonic() + RETRY_AFTER
        self._health.failed(Component.PEERS, f"Redis is unreachable: {exc}")

    def announce(
        self,
        info_hash: bytes,
        peer: Peer,
        *,
        seeder: bool,
        event: Event,
        numwant: int,
        registered: bool = False,
    ) -> AnnounceResult:
        if self._usable():
            try:
                return self._announce(info_hash, peer, seeder, event, numwant, registered)
            except redis.exceptions.RedisError as exc:
                self._failed(exc)
        with self._fallback_lock:
            return self._fallback.announce(
                info_hash, peer, seeder=seeder, event=event, numwant=numwant
            )

    def _announce(
        self,
        info_hash: bytes,
        peer: Peer,
        seeder: bool,
        event: Event,
        numwant: int,
        registered: bool,
    ) -> AnnounceResult:
        now = self._clock()
        key = peer.peer_id + peer.address
        args: list[Any] = [
            key,
            repr(now),
            repr(now + self._ttl),
            max(1, int(self._ttl)),
            int(seeder),
            event,
            numwant,
            int(registered),
            info_hash,
            *self._bounds,
        ]
        complete, incomplete, refused, first, others = self._script(
            keys=_keys(info_hash, peer.address[:-2]), args=args
        )
        self._health.ok(Component.PEERS)
        chosen = [_peer(p) for p in first[:numwant]]
        taken = {key, *first}
        rest = [p for p in dict.fromkeys(others) if p not in taken]
        self._rng.shuffle(rest)
        chosen += (_peer(p) for p in rest[: numwant - len(chosen)])
        return AnnounceResult(complete, incomplete, tuple(chosen), REFUSALS[refused])

    def scrape(self, info_hash: bytes) -> ScrapeStats:
        if self._usable():
            try:
                keys = _keys(info_hash, b"")
                now = repr(self._clock())
                pipe = self._redis.pipeline(transaction=False)
                pipe.zcount(keys[0], now, "+inf")
                pipe.zcount(keys[1], now, "+inf")
                pipe.get(keys[8])
                complete, incomplete, downloaded = pipe.execute()
                self._health.ok(Component.PEERS)
                return ScrapeStats(complete, incomplete, int(downloaded or 0))
            except redis.exceptions.RedisError as exc:
                self._failed(exc)
        with self._fallback_lock:
            return self._fallback.scrape(info_hash)

    def expire(self) -> int:
        """Prunes the global sets (swarm keys expire by their TTL); returns peers gone.
        Also the moment Redis is tried again after a failure, and the gauges are read."""
        with self._fallback_lock:
            dropped = self._fallback.expire()
        try:
            now = repr(self._clock())
            pipe = self._redis.pipeline(transaction=False)
            pipe.zremrangebyscore("all", "-inf", now)
            pipe.zremrangebyscore("seeders", "-inf", now)
            pipe.zremrangebyscore("swarms", "-inf", now)
            pipe.zremrangebyscore("anonymous", "-inf", now)
            pipe.zcard("swarms")
            pipe.zcard("seeders")
            pipe.zcard("all")
            pipe.zrangebyscore("swarms", now, "+inf")
            gone, _, _, _, swarms, seeders, peers, hashes = pipe.execute()
        except redis.exceptions.RedisError as exc:
            self._failed(exc)
            return dropped
        self._down_until = 0.0
        self._health.ok(Component.PEERS)
        self._gauges = (swarms, seeders, peers)
        self._swarm_hashes = [bytes(h) for h in hashes]
        self._read_epoch()
        return dropped + int(gone)

    def _read_epoch(self) -> None:
        """Reads Redis's epoch, setting it first if no replica has (SET NX)."""
        try:
            self._redis.set(EPOCH, secrets.token_hex(8), nx=True)
            value = self._redis.get(EPOCH)
        except redis.exceptions.RedisError as exc:
            self._failed(exc)
            return
        self._epoch = value.decode() if isinstance(value, bytes) else ""

    @property
    def epoch(self) -> str:
        if self._epoch and self._usable():
            return self._epoch
        return self._fallback.epoch

    def swarm_count(self) -> int:
        return self._gauges[0]

    def peer_counts(self) -> tuple[int, int]:
        _, seeders, peers = self._gauges
        return seeders, peers - seeders

    def swarm_hashes(self) -> list[bytes]:
        return self._swarm_hashes

    def close(self) -> None:
        self._redis.close()
