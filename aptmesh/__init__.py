"""aptmesh: peer-to-peer distribution of Debian and Ubuntu packages (the core package)."""

__version__ = "0.1.0"
