"""The aptmesh apt method (`mesh+http`, `mesh+https`): standard library only.

Modules use relative imports only, so the package also runs when copied
under another name (install.py puts it in /usr/lib/aptmesh/).
"""
