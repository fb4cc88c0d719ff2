#!/opt/aptmesh/bin/python
"""Container health check: GET /healthz on the service's HTTP port (standard library only).

    aptmesh-healthcheck tracker|seeder|edge

The port is the one the service is configured with (APTMESH_<SERVICE>_HTTP_PORT,
else the default), so the check follows the configuration.
"""

from __future__ import annotations

import os
import sys
import urllib.request

DEFAULT_PORTS = {"tracker": 6969, "seeder": 9090, "edge": 3142}


def main(argv: list[str]) -> int:
    if len(argv) != 1 or argv[0] not in DEFAULT_PORTS:
        print(f"usage: aptmesh-healthcheck {'|'.join(DEFAULT_PORTS)}", file=sys.stderr)
        return 2
    service = argv[0]
    port = os.environ.get(f"APTMESH_{service.upper()}_HTTP_PORT", str(DEFAULT_PORTS[service]))
    url = f"http://127.0.0.1:{port}/healthz"
    try:
        with urllib.request.urlopen(url, timeout=4) as response:  # noqa: S310 - fixed http URL
            ok = 200 <= response.status < 300
    except OSError as exc:
        print(f"{url}: {exc}", file=sys.stderr)
        return 1
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
