"""The aptmesh apt method (`mesh+http`, `mesh+https`): standard library only.

The package keeps its name wherever it runs: installed by install.py (or the
`aptmesh-apt-method` package) it is /usr/lib/aptmesh/aptmesh_apt_method/, and the
method script puts /usr/lib/aptmesh on sys.path. `make check` (tools/imports.py)
holds it to the standard library of the oldest Python its clients run (3.9).
"""
