"""The peer of one machine (`aptmesh peer`): a small edge for apt on loopback, sharing what
apt downloaded within the user's limits (home), or on the LAN only (lab)."""
