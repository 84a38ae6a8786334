"""The own format's lexer: text → one :class:`~.values.Value` per key, each with its line numbers.

One ``[detector]`` section whose keys are named like :class:`~.model.DetectorConfig`'s fields::

    [detector]
    modes     = stcp, sudp          # inline comments start with whitespace then '#' or ';'
    tcp_ports = 1, 11, 15, 79,
                111, 119, 1-1024    # an indented line continues the value above
    window    = 1m

It is read line by line (configparser forgets line numbers), so every error is a :class:`~.model.ConfigError`
naming ``file:line: key: reason``. Which keys exist is the grammar's business (``own_grammar.py``): the lexer
is given them. No I/O.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Collection

from portsentinel.detector.config.model import ConfigError
from portsentinel.detector.config.values import SECTION, Value

_SECTION_LINE = re.compile(r"\[([^\]]*)\]\s*(?:[#;].*)?")
_QUOTED = re.compile(r'"(.*)"\s*(?:[#;].*)?')
#: Where an unquoted value's inline comment starts (the renderer quotes a value that contains one).
INLINE_COMMENT = re.compile(r"(?:^|\s)[#;]")


def _unquote(raw: str, path: str, line: int, key: str) -> str:
    """A value's text: a double-quoted value runs to the last quote on the line and keeps everything in it;
    an unquoted one ends at an inline comment (whitespace, then ``#`` or ``;``)."""
    text = raw.strip()
    if text.startswith('"'):
        match = _QUOTED.fullmatch(text)
        if match is None:
            raise ConfigError(path, line, key, "unterminated quote")
        return match[1]
    return INLINE_COMMENT.split(text, maxsplit=1)[0].strip()


def _unknown_key(path: str, line: int, key: str, keys: Collection[str]) -> ConfigError:
    close = difflib.get_close_matches(key.lower(), list(keys), n=1)
    hint = f" (did you mean {close[0]}?)" if close else ""
    return ConfigError(path, line, key, f"unknown key in [{SECTION}]{hint}")


def read_entries(text: str, path: str, keys: Collection[str], warnings: list[str]) -> dict[str, Value]:
    """The settings of ``text`` by key; a key not in ``keys`` is an error (with the closest key as a hint)."""
    entries: dict[str, Value] = {}
    section_line = 0
    current: Value | None = None
    for number, raw in enumerate(text.split("\n"), 1):
        line = raw.rstrip()
        stripped = line.strip()
        if not stripped:
            current = None
            continue
        if stripped[0] in "#;":
            continue
        if line[0].isspace() and current is not None:
            current.parts.append((number, _unquote(stripped, path, number, current.key)))
            continue
        current = None
        if stripped.startswith("["):
            match = _SECTION_LINE.fullmatch(stripped)
            if match is None:
                raise ConfigError(path, number, stripped[:40], f"malformed section header, expected [{SECTION}]")
            name = match[1].strip()
            if name != SECTION:
                raise ConfigError(path, number, f"[{name}]", f"unknown section (the only one is [{SECTION}])")
            if section_line:
                reason = f"duplicate section (first on line {section_line})"
                raise ConfigError(path, number, f"[{name}]", reason)
            section_line = number
            continue
        key, equals, rest = stripped.partition("=")
        key = key.strip()
        if not equals or not key:
            word = stripped.split()[0][:40]
            raise ConfigError(path, number, word, "expected 'key = value'")
        if not section_line:
            raise ConfigError(path, number, key, f"setting outside a section: put it under [{SECTION}]")
        if key not in keys:
            raise _unknown_key(path, number, key, keys)
        if key in entries:
            raise ConfigError(path, number, key, f"duplicate key (first set on line {entries[key].line})")
        current = Value(path, key, [(number, _unquote(rest, path, number, key))], warnings)
        entries[key] = current
    if not section_line:
        warnings.append(f"{path}: no [{SECTION}] section: every option keeps its default")
    return entries
