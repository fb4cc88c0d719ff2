"""The `aptmesh` command: the composition of every service (subcommands, `aptmesh up`)."""
