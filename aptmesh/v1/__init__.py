"""Generated gRPC code for package aptmesh.v1 (see proto/generate.py)."""
