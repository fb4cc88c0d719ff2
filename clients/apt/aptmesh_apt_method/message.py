"""The apt acquire-method message codec: text in, `Message` out, and back.

Theory of operation. A message is a header line `NNN Text`, then `Name: value`
lines, then one empty line. A value may span lines: every line after the first
starts with a space (apt's `SendMessage` writes multi-line values that way, and
`LookupTag` reads them back joined by newlines). In a `Message` a multi-line
value holds its lines joined by "\\n"; `Alternate-URIs` is the one we send.

Security contract (CVE-2019-3462): whatever a value holds, `encode` writes no
control character except the "\\n " of a continuation line, so no untrusted
text can end a field or start a new one. `normalize` is exactly what a value
becomes on the wire; `parse(encode(m)) == normalize(m)` for every message.

Pure: no I/O here. Standard library only, Python >= 3.9 (the method runs on
every client machine with the system's python3).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

_FIELD_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]*")
# C0 controls, DEL, C1 controls, and lone surrogates (which cannot be UTF-8);
# "\n" is handled as the line separator before this applies.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


class MessageError(ValueError):
    """apt (or whoever wrote to our stdin) sent text that is not a message."""


def clean_line(text: str) -> str:
    """`text` as one line: control characters (newlines too) removed, ends stripped."""
    return _CONTROL.sub("", text).strip(" ")


def normalize_value(value: str) -> str:
    """A field value as it survives the wire: clean lines, empty lines dropped."""
    lines = (clean_line(line) for line in value.split("\n"))
    return "\n".join(line for line in lines if line)


@dataclass(frozen=True)
class Message:
    code: int
    text: str
    fields: tuple[tuple[str, str], ...] = ()

    def get(self, name: str, default: str | None = None) -> str | None:
        """The first value of field `name` (case-insensitive, as apt's LookupTag)."""
        wanted = name.lower()
        for key, value in self.fields:
            if key.lower() == wanted:
                return value
        return default

    def get_all(self, name: str) -> list[str]:
        wanted = name.lower()
        return [value for key, value in self.fields if key.lower() == wanted]

    def normalize(self) -> Message:
        return Message(
            self.code,
            clean_line(self.text),
            tuple((name, normalize_value(value)) for name, value in self.fields),
        )

    def encode(self) -> bytes:
        """The message as apt reads it, ending with the empty line.

        Raises ValueError for a code or field name we should never produce
        (a local bug, not bad data): values are sanitized, names are not.
        """
        if not 100 <= self.code <= 999:
            raise ValueError(f"encoding an apt message: bad code {self.code!r}")
        text = clean_line(self.text)
        out = [f"{self.code} {text}" if text else str(self.code)]
        for name, value in self.fields:
            if not _FIELD_NAME.fullmatch(name):
                raise ValueError(f"encoding an apt message: bad field name {name!r}")
            out.append(f"{name}: " + "\n ".join(normalize_value(value).split("\n")))
        return ("\n".join(out) + "\n\n").encode("utf-8")


def make(code: int, text: str, *fields: tuple[str, str | None]) -> Message:
    """A message with the fields whose value is not None, in order."""
    return Message(code, text, tuple((k, v) for k, v in fields if v is not None))


def parse_block(lines: list[str]) -> Message:
    """One message from its lines (no trailing empty line, no line ends)."""
    if not lines:
        raise MessageError("reading an apt message: it is empty")
    head, _, text = lines[0].partition(" ")
    if len(head) != 3 or not (head.isascii() and head.isdigit()) or head.startswith("0"):
        raise MessageError(f"reading an apt message: bad header line {clean_line(lines[0])!r}")
    fields: list[tuple[str, list[str]]] = []
    for line in lines[1:]:
        if line[:1] in (" ", "\t"):
            if not fields:
                raise MessageError("reading an apt message: continuation line before any field")
            fields[-1][1].append(line)
            continue
        name, colon, value = line.partition(":")
        name = name.strip(" \t")
        if not colon or not _FIELD_NAME.fullmatch(name):
            raise MessageError(f"reading an apt message: bad field line {clean_line(line)!r}")
        fields.append((name, [value]))
    return Message(
        int(head),
        clean_line(text),
        tuple((name, normalize_value("\n".join(parts))) for name, parts in fields),
    )


class Parser:
    """Incremental parser: feed it lines as they arrive, get messages out.

    After a malformed message `feed` raises MessageError once and goes on
    with the next message, so one bad message costs only itself.
    """

    def __init__(self) -> None:
        self._lines: list[str] = []

    def feed(self, line: str | bytes) -> Message | None:
        if isinstance(line, bytes):
            line = line.decode("utf-8", errors="replace")
        line = line.rstrip("\r\n")
        if line:
            self._lines.append(line)
            return None
        if not self._lines:
            return None  # blank lines between messages
        lines, self._lines = self._lines, []
        return parse_block(lines)

    @property
    def pending(self) -> bool:
        """True while part of a message has arrived but not its end."""
        return bool(self._lines)


def iter_lines(data: str | bytes) -> Iterator[str]:
    if isinstance(data, bytes):
        data = data.decode("utf-8", errors="replace")
    yield from data.split("\n")


def parse(data: str | bytes | Iterable[str]) -> list[Message]:
    """Every complete, well-formed message in `data`; raises on a malformed one."""
    parser = Parser()
    lines = iter_lines(data) if isinstance(data, (str, bytes)) else data
    out = []
    for line in lines:
        message = parser.feed(line)
        if message is not None:
            out.append(message)
    return out
