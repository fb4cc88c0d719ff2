"""The edge: the apt-facing cache that fetches large packages from the swarm."""
