"""Entry point: `aptmesh-apt-method`, installed as /usr/lib/apt/methods/mesh.

The I/O driver around `Method`: `100 Capabilities` goes out first, before
anything slow is imported; then lines from stdin, messages to stdout. stdout
carries nothing but protocol (written with os.write, one message at a time,
unbuffered). End of input, SIGINT (apt's way of stopping a method) and a
closed stdout all end the process quietly.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from typing import TYPE_CHECKING

from aptmesh_apt_method.capabilities import CAPABILITIES

if TYPE_CHECKING:
    from aptmesh_apt_method.message import Message

_SEND_LOCK = threading.Lock()  # the fetch workers send too: one whole message at a time


def _send(message: Message | bytes) -> None:
    data = message if isinstance(message, bytes) else message.encode()
    with _SEND_LOCK:
        while data:
            written = os.write(1, data)
            data = data[written:]


def _send_from_worker(message: Message) -> None:
    with contextlib.suppress(OSError):  # apt went away: nobody is left to tell
        _send(message)


def _method_name(argv0: str) -> str:
    """The name apt started us under (`mesh+http`, ...): config is looked up by it."""
    name = os.path.basename(argv0)
    if not name or name.endswith(".py") or name in ("aptmesh-apt-method", "__main__"):
        return "mesh"
    return name


def main(argv: list[str] | None = None) -> int:
    args = sys.argv if argv is None else argv
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        _send(CAPABILITIES)
        stdin = sys.stdin.buffer
        line = stdin.readline()
        if not line:
            return 0  # a capabilities probe: nothing else was imported
        from aptmesh_apt_method.message import MessageError, Parser
        from aptmesh_apt_method.method import Method
        from aptmesh_apt_method.privileges import settle

        method = Method(
            name=_method_name(args[0] if args else ""), emit=_send_from_worker, settle=settle
        )
        parser = Parser()
        while True:
            if not line:
                method.close()  # apt closed stdin: finish what it asked for
                return 0
            try:
                message = parser.feed(line)
            except MessageError as exc:
                sys.stderr.write(f"mesh: ignoring a malformed message from apt: {exc}\n")
                sys.stderr.flush()
                message = None
            if message is not None:
                for reply in method.handle(message):
                    _send(reply)
            line = stdin.readline()
    except KeyboardInterrupt:
        return 0
    except BrokenPipeError:
        return 0
    except Exception as exc:  # last resort: one line for apt's log, never a traceback
        from aptmesh_apt_method.message import Message, clean_line

        with contextlib.suppress(OSError):
            _send(Message(401, "General Failure", (("Message", clean_line(repr(exc))),)))
        return 100
    finally:
        # apt closes stdin and then sends SIGINT: one arriving while the interpreter
        # shuts down would print a KeyboardInterrupt traceback into the user's terminal.
        signal.signal(signal.SIGINT, signal.SIG_IGN)


if __name__ == "__main__":
    sys.exit(main())
