"""The method's `100 Capabilities`, as bytes: main.py sends it before importing anything.

apt starts a method, waits for this message, and may close a probe
instance right after it; a start that costs only the interpreter's keeps
that cheap (importing the rest takes 100-150 ms on a busy machine).
"""

VERSION = "aptmesh 0.1"
CAPABILITIES = (
    "100 Capabilities\n"
    f"Version: {VERSION}\n"
    "Single-Instance: true\n"
    "Pipeline: true\n"
    "Send-Config: true\n"
    "Send-URI-Encoded: true\n"
    "\n"
).encode()
