"""The swarm benchmark: distribution time against the physical limit, in network namespaces.

    python -m bench.swarm [--edges 6] [--size-mib 64] [--pulse] [--system S ...]
    python -m bench.swarm --cleanup            # leftovers of runs whose process is gone

Modules: `netns` (topology, HTB caps, cleanup), `node` (the per-host worker
run with `ip netns exec`), `harness` (calibration, one distribution per
system, the verdict), `bounds` (Kumar-Ross, Mundinger, client-server),
`payload` and `repo` (deterministic files and their signed Debian indexes),
`cpu` (the /proc/stat sampler that marks CPU-bound runs invalid), `report`
(the human table). Results and the settings behind them: RESULTS.md.
"""
