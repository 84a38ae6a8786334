"""Reading the detector's configuration: the project's own INI format (its lexing and its rendering), the
dispatch to a classic portsentry.conf (``portsentry_conf.py``) by the file's content, and the file I/O. The
values themselves are read by ``config_values.py``.

The own format is one ``[detector]`` section whose keys are named like :class:`DetectorConfig`'s fields::

    [detector]
    modes     = stcp, sudp          # inline comments start with whitespace then '#' or ';'
    tcp_ports = 1, 11, 15, 79,
                111, 119, 1-1024    # an indented line continues the value above
    window    = 1m

It is parsed line by line (configparser forgets line numbers), so every error is a :class:`ConfigError`
naming ``file:line: key: reason``, and every warning is a string of the same shape. Only
:func:`load_config` and :func:`read_ignore_file` touch the file system.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Callable
from typing import Any

from portsentinel.common import values
from portsentinel.detector.config_values import (
    FORMAT_OWN,
    FORMAT_PORTSENTRY,
    SECTION,
    Parsed,
    Value,
    check_config,
    parse_bool,
    parse_duration,
    parse_int,
    parse_interface,
    parse_modes,
    parse_network,
    parse_networks,
    parse_output,
    parse_path,
    parse_port_bound,
    parse_ports,
    parse_prefix,
    parse_protocols,
    parse_required_path,
    parse_text,
)
from portsentinel.detector.settings import ConfigError, DetectorConfig, IPNetwork


# --- the own format ------------------------------------------------------------------------------------
def parse_listen(value: Value) -> str:
    """The metrics endpoint: HOST:PORT, [V6]:PORT or PORT (127.0.0.1); empty means off (docs/metrics.md)."""
    text = value.text.strip()
    if text:
        try:
            values.listen(text)
        except ValueError as err:
            raise value.error(str(err)) from None
    return text


_PARSERS: dict[str, Callable[[Value], Any]] = {
    "modes": parse_modes,
    "interface": parse_interface,
    "output": parse_output,
    "jsonl_path": parse_required_path,
    "wake_socket": parse_path,
    "rearm_socket": parse_path,
    "tcp_ports": parse_ports,
    "udp_ports": parse_ports,
    "advanced_tcp": parse_port_bound,
    "advanced_udp": parse_port_bound,
    "advanced_exclude_tcp": parse_ports,
    "advanced_exclude_udp": parse_ports,
    "sctp_ports": parse_ports,
    "advanced_sctp": parse_port_bound,
    "advanced_exclude_sctp": parse_ports,
    "scan_trigger": parse_int,
    "proto_trigger": parse_int,
    "proto_exclude": parse_protocols,
    "window": parse_duration,
    "summary_interval": parse_duration,
    "max_sources": lambda value: parse_int(value, minimum=1),
    "max_records_per_second": lambda value: parse_int(value, minimum=1),
    "ipv4_prefix": lambda value: parse_prefix(value, 32),
    "ipv6_prefix": lambda value: parse_prefix(value, 128),
    "ignore": parse_networks,
    "ignore_file": parse_path,
    "ignore_self": parse_bool,
    "history_file": parse_path,
    "resolve_host": parse_bool,
    "port_banner": parse_text,
    "metrics_listen": parse_listen,
    "metrics_textfile": parse_path,
    "metrics_interval": parse_duration,
}
#: The own format's keys, in the order detector.conf documents them.
KEYS = tuple(_PARSERS)

_SECTION_LINE = re.compile(r"\[([^\]]*)\]\s*(?:[#;].*)?")
_QUOTED = re.compile(r'"(.*)"\s*(?:[#;].*)?')
_INLINE_COMMENT = re.compile(r"(?:^|\s)[#;]")


def _unquote(raw: str, path: str, line: int, key: str) -> str:
    """A value's text: a double-quoted value runs to the last quote on the line and keeps everything in it;
    an unquoted one ends at an inline comment (whitespace, then ``#`` or ``;``)."""
    text = raw.strip()
    if text.startswith('"'):
        match = _QUOTED.fullmatch(text)
        if match is None:
            raise ConfigError(path, line, key, "unterminated quote")
        return match[1]
    return _INLINE_COMMENT.split(text, maxsplit=1)[0].strip()


def _unknown_key(path: str, line: int, key: str) -> ConfigError:
    close = difflib.get_close_matches(key.lower(), KEYS, n=1)
    hint = f" (did you mean {close[0]}?)" if close else ""
    return ConfigError(path, line, key, f"unknown key in [{SECTION}]{hint}")


def _read_entries(text: str, path: str, warnings: list[str]) -> dict[str, Value]:
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
        if key not in _PARSERS:
            raise _unknown_key(path, number, key)
        if key in entries:
            raise ConfigError(path, number, key, f"duplicate key (first set on line {entries[key].line})")
        current = Value(path, key, [(number, _unquote(rest, path, number, key))], warnings)
        entries[key] = current
    if not section_line:
        warnings.append(f"{path}: no [{SECTION}] section: every option keeps its default")
    return entries


def parse_own(text: str, path: str) -> Parsed:
    """The own format, with where each field was set."""
    warnings: list[str] = []
    entries = _read_entries(text, path, warnings)
    values = {key: _PARSERS[key](value) for key, value in entries.items()}
    config = DetectorConfig(**values, source=path, source_format=FORMAT_OWN)
    check_config(config, path, warnings)
    return Parsed(config, warnings, {key: (value.line, key) for key, value in entries.items()})


def parse_config_text(text: str, path: str) -> tuple[DetectorConfig, list[str]]:
    """Parse the own format (no I/O). ``path`` only names the text in errors and warnings."""
    parsed = parse_own(text, path)
    return parsed.config, parsed.warnings


# --- rendering (the inverse of parse_config_text) --------------------------------------------------------


def _port_list(ports: tuple[int, ...]) -> str:
    """Ports, ascending runs of three or more as ranges; order is kept, so it parses back equal."""
    items: list[str] = []
    i = 0
    while i < len(ports):
        j = i
        while j + 1 < len(ports) and ports[j + 1] == ports[j] + 1:
            j += 1
        if j - i >= 2:
            items.append(f"{ports[i]}-{ports[j]}")
        else:
            items.extend(str(p) for p in ports[i:j + 1])
        i = j + 1
    return ", ".join(items)


def _quote(text: str) -> str:
    if "\n" in text or "\r" in text:
        raise ValueError("a value spanning lines cannot be written")
    if text != text.strip() or text[:1] in ('"', "#", ";") or _INLINE_COMMENT.search(text):
        return f'"{text}"'
    return text


def _seconds(value: float) -> str:
    return str(int(value)) if value == int(value) else repr(value)


def format_config(config: DetectorConfig) -> str:
    """The own format's text for ``config`` (every own key; block_* and responder keys have no key here)."""
    lines = [f"[{SECTION}]"]
    for key in KEYS:
        value = getattr(config, key)
        if key in ("tcp_ports", "udp_ports", "advanced_exclude_tcp", "advanced_exclude_udp", "sctp_ports",
                   "advanced_exclude_sctp", "proto_exclude"):
            text = _port_list(value)
        elif key == "modes":
            text = ", ".join(value)
        elif key == "ignore":
            text = ", ".join(str(net) for net in value)
        elif isinstance(value, bool):
            text = "yes" if value else "no"
        elif isinstance(value, float):
            text = _seconds(value)
        elif isinstance(value, int):
            text = str(value)
        else:
            text = _quote(value)
        lines.append(f"{key} = {text}".rstrip())
    return "\n".join(lines) + "\n"


# --- format detection and files --------------------------------------------------------------------------

_PORTSENTRY_LINE = re.compile(r"[A-Z][A-Z0-9_]*\s*=")


def detect_format(text: str) -> str:
    """FORMAT_PORTSENTRY when the first setting is a classic ``KEY="value"`` line (no ``[section]`` before
    it), else FORMAT_OWN (also for an empty file)."""
    for raw in text.split("\n"):
        stripped = raw.strip()
        if not stripped or stripped[0] in "#;":
            continue
        return FORMAT_PORTSENTRY if _PORTSENTRY_LINE.match(stripped) else FORMAT_OWN
    return FORMAT_OWN


def parse_any(text: str, path: str) -> Parsed:
    """Detect the format and parse (no I/O)."""
    if detect_format(text) == FORMAT_PORTSENTRY:
        from portsentinel.detector.portsentry_conf import parse_portsentry  # late: that module imports this one

        return parse_portsentry(text, path)
    return parse_own(text, path)


def _read_text(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except UnicodeDecodeError as err:
        raise ConfigError(path, 0, "", f"not UTF-8 text ({err.reason} at byte {err.start})") from None
    except OSError as err:
        raise ConfigError(path, 0, "", f"cannot read: {err.strerror or err}") from None


def read_ignore_file(path: str) -> tuple[tuple[IPNetwork, ...], list[str]]:
    """PortSentry's ignore file: one address or network per line, ``#`` comments, blank lines.

    As PortSentry does, ``a.b.c.d/nn`` with host bits set is masked to its network (with a warning).
    A missing file is a warning; an unreadable file or a bad line is a ConfigError.
    """
    if not os.path.exists(path):
        return (), [f"{path}: ignore file not found; no addresses loaded from it"]
    networks: dict[IPNetwork, None] = {}
    warnings: list[str] = []
    for number, raw in enumerate(_read_text(path).split("\n"), 1):
        entry = raw.split("#", 1)[0].strip()
        if not entry:
            continue
        if len(entry.split()) > 1:
            raise ConfigError(path, number, entry.split()[0], "one address or network per line")
        try:
            network = parse_network(entry)
        except ValueError:
            try:
                network = parse_network(entry, strict=False)
            except ValueError as err:
                raise ConfigError(path, number, entry[:60], str(err)) from None
            warnings.append(f"{path}:{number}: {entry}: host bits set; ignoring the network {network}")
        networks[network] = None
    return tuple(networks), warnings


def load_config(path: str) -> tuple[DetectorConfig, list[str]]:
    """Read a configuration file in either format (detected by content), then its ignore file.

    The ignore file's networks are added to ``ignore``; a relative ``ignore_file`` is taken relative to the
    configuration file's directory and stored resolved. Raises ConfigError; returns the warnings.
    """
    parsed = parse_any(_read_text(path), path)
    config, warnings = parsed.config, parsed.warnings
    config.source = path
    if config.ignore_file:
        line, key = parsed.where.get("ignore_file", (0, "ignore_file"))
        ignore_path = os.path.join(os.path.dirname(path), config.ignore_file)
        config.ignore_file = ignore_path
        if not os.path.exists(ignore_path):
            where = f"{path}:{line}" if line else path
            warnings.append(f"{where}: {key}: {ignore_path} not found; no addresses loaded from it")
        else:
            networks, more = read_ignore_file(ignore_path)
            warnings.extend(more)
            config.ignore = tuple(dict.fromkeys(config.ignore + networks))
    return config, warnings
