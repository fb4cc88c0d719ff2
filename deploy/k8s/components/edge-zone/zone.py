"""Writes the node's zone where the edge reads it (APTMESH_EDGE_ZONE_FILE).

The init container of every edge pod runs this with the image's Python
(standard library only). The downward API cannot read node labels, so it asks
the API server for its own node (NODE_NAME, from the downward API) with a
short-lived token that only this container mounts, and writes the label
topology.kubernetes.io/zone to ZONE_FILE (temporary name, then rename).

The zone only steers clients to a near edge, so failing to learn it must not
stop the edge: after a few tries it writes an empty file (the edge then keeps
APTMESH_EDGE_ZONE) and logs why. Exit status 0 either way; 2 only for a pod
spec without the variables this needs.
"""

from __future__ import annotations

import json
import os
import ssl
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

ZONE_LABEL = "topology.kubernetes.io/zone"
# ZONE_ATTEMPTS only for the tests; the pod spec does not set it.
ATTEMPTS = int(os.environ.get("ZONE_ATTEMPTS", "5"))
TIMEOUT_SECONDS = 5.0


def log(event: str, **fields: object) -> None:
    print(json.dumps({"event": event, "service": "edge-zone", **fields}), file=sys.stderr)


def node_zone(api: str, node: str, token: str, context: ssl.SSLContext) -> str:
    url = f"{api}/api/v1/nodes/{urllib.parse.quote(node, safe='')}"
    # api is always https://HOST:PORT (main), never a caller's scheme.
    request = urllib.request.Request(  # noqa: S310
        url, headers={"Authorization": f"Bearer {token}", "Accept": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS, context=context) as response:  # noqa: S310
        labels = json.load(response).get("metadata", {}).get("labels") or {}
    zone = labels.get(ZONE_LABEL, "")
    return zone if isinstance(zone, str) else ""


def write_atomically(path: str, text: str) -> None:
    temporary = f"{path}.tmp"
    with open(temporary, "w", encoding="utf-8") as out:
        out.write(text)
        out.flush()
        os.fsync(out.fileno())
    os.replace(temporary, path)


def main() -> int:
    try:
        node = os.environ["NODE_NAME"]
        zone_file = os.environ["ZONE_FILE"]
        host = os.environ["KUBERNETES_SERVICE_HOST"]
    except KeyError as exc:
        log("zone_lookup_misconfigured", missing=exc.args[0])
        return 2
    port = os.environ.get("KUBERNETES_SERVICE_PORT", "443")
    credentials = os.environ.get("TOKEN_DIR", "/var/run/secrets/aptmesh-zone")
    api = f"https://[{host}]:{port}" if ":" in host else f"https://{host}:{port}"
    zone = ""
    for attempt in range(1, ATTEMPTS + 1):
        try:
            with open(os.path.join(credentials, "token"), encoding="utf-8") as file:
                token = file.read().strip()
            context = ssl.create_default_context(cafile=os.path.join(credentials, "ca.crt"))
            zone = node_zone(api, node, token, context)
            log("zone_found", node=node, zone=zone, label=ZONE_LABEL)
            break
        except (OSError, ValueError, urllib.error.URLError) as exc:
            log("zone_lookup_failed", node=node, attempt=attempt, error=str(exc))
            if attempt < ATTEMPTS:
                time.sleep(attempt)  # 1 + 2 + 3 + 4 s: an API server restarting

    write_atomically(zone_file, zone + "\n" if zone else "")
    return 0


if __name__ == "__main__":
    sys.exit(main())
