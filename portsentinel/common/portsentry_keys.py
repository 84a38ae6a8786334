"""PortSentry's ``KEY="value"`` lines, read one way for both stages (the detector's classic portsentry.conf and
the responder's ``import-portsentry``). Pure: text in, entries out.

Lines are ``KEY="value"`` (Debian's stock file also has ``RESOLVE_HOST = "0"``), ``#`` comments and blank lines.
A value may be written without quotes: it then runs to the end of the line or to a ``#`` comment
(whitespace, then ``#``). Where PortSentry was loose
we are explicit: text after the closing quote is an error (PortSentry silently cut the value at the next quote),
and an unterminated quote is an error. Duplicates are the caller's to judge (PortSentry kept the first).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_LINE = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\s*=(.*)")
_COMMENT = re.compile(r"(?:^|\s)#")


class KeyLineError(ValueError):
    """A malformed line: ``str()`` is ``file:line: key: reason``."""

    def __init__(self, path: str, line: int, key: str, reason: str) -> None:
        super().__init__(f"{path}:{line}: {key}: {reason}")
        self.path = path
        self.line = line
        self.key = key
        self.reason = reason


@dataclass(frozen=True)
class Entry:
    line: int
    key: str
    value: str


def _value_text(rest: str, path: str, line: int, key: str) -> str:
    text = rest.strip()
    if not text.startswith('"'):
        return _COMMENT.split(text, maxsplit=1)[0].strip()
    end = text.find('"', 1)
    if end < 0:
        raise KeyLineError(path, line, key, "unterminated quote")
    after = text[end + 1:].strip()
    if after and not after.startswith("#"):
        raise KeyLineError(path, line, key, f"text after the closing quote: {after[:40]!r}")
    return text[1:end]


def read_entries(text: str, path: str) -> list[Entry]:
    """Every ``KEY="value"`` line in order, duplicates included."""
    entries: list[Entry] = []
    for number, raw in enumerate(text.split("\n"), 1):
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        match = _LINE.fullmatch(stripped)
        if match is None:
            raise KeyLineError(path, number, stripped.split()[0][:40], 'expected KEY="value"')
        entries.append(Entry(number, match[1], _value_text(match[2], path, number, match[1])))
    return entries


def first_values(entries: list[Entry]) -> dict[str, Entry]:
    """KEY → its first entry, as PortSentry's lookup does."""
    out: dict[str, Entry] = {}
    for entry in entries:
        out.setdefault(entry.key, entry)
    return out
