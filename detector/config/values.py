"""The detector's configuration values: one function per kind of value, each turning the text of a key (with
where it was written) into a typed value or a ``file:line: key: reason`` error, and the checks of combinations
of options. Shared by both file formats (``own_grammar.py``'s own format, ``portsentry_conf.py``'s classic
one); the grammar itself is :mod:`portsentinel.common.values`. No I/O.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from portsentinel.common import values
from portsentinel.detector.config.model import ConfigError, DetectorConfig, IPNetwork

FORMAT_OWN = "portsentinel"
FORMAT_PORTSENTRY = "portsentry"
SECTION = "detector"
MODES = ("tcp", "udp", "stcp", "sudp", "ssctp", "atcp", "audp", "asctp", "aproto")
OUTPUTS = ("journal", "jsonl", "auto")
_INTEGER = re.compile(r"[0-9]{1,12}", re.ASCII)
_SPLIT = re.compile(r"[,\s]+")
_INTERFACE = re.compile(r"[^\s/]{1,15}")


@dataclass
class Value:
    """One setting as read: its key as written and its text, one ``(line, text)`` part per physical line."""

    path: str
    key: str
    parts: list[tuple[int, str]]
    warnings: list[str]

    @property
    def line(self) -> int:
        return self.parts[0][0]

    @property
    def text(self) -> str:
        return "\n".join(text for _, text in self.parts)

    def error(self, reason: str, line: int = 0) -> ConfigError:
        return ConfigError(self.path, line or self.line, self.key, reason)

    def warn(self, message: str, line: int = 0) -> None:
        self.warnings.append(f"{self.path}:{line or self.line}: {self.key}: {message}")

    def tokens(self) -> Iterable[tuple[int, str]]:
        """The comma- and/or whitespace-separated items of a list value, each with its line."""
        for line, text in self.parts:
            for token in _SPLIT.split(text):
                if token:
                    yield line, token


@dataclass
class Parsed:
    """A parser's result: the config, its warnings, and where each field was set (field -> (line, key))."""

    config: DetectorConfig
    warnings: list[str]
    where: dict[str, tuple[int, str]] = field(default_factory=dict)


# --- value parsers, shared with portsentry_conf.py -------------------------------------------------------


def parse_ports(value: Value) -> tuple[int, ...]:
    """A port list: numbers and ranges (``1-1024``), comma and/or whitespace separated; order kept,
    duplicates dropped with a warning."""
    ports: dict[int, None] = {}
    duplicates: list[int] = []
    first_line = 0
    for line, token in value.tokens():
        try:
            span = values.port_span(token)
        except ValueError as err:
            raise value.error(str(err), line) from None
        for port in span:
            if port in ports:
                duplicates.append(port)
                first_line = first_line or line
            ports[port] = None
    if duplicates:
        shown = ", ".join(str(p) for p in duplicates[:5]) + (", ..." if len(duplicates) > 5 else "")
        value.warn(f"port listed more than once: {shown}", first_line)
    return tuple(ports)


def parse_port_bound(value: Value) -> int:
    """An advanced-mode upper bound: the sentry watches ports 1..N."""
    token = value.text.strip()
    if not _INTEGER.fullmatch(token):
        raise value.error(f"bad port bound {token!r}: expected a number 1..65535")
    bound = int(token)
    if not 1 <= bound <= 65535:
        raise value.error(f"bad port bound {bound}: must be 1..65535")
    return bound


def parse_protocols(value: Value) -> tuple[int, ...]:
    """IP protocol numbers 0..255 and ranges (``50-51``), comma and/or whitespace separated."""
    out: dict[int, None] = {}
    for line, token in value.tokens():
        low, dash, high = token.partition("-")
        if not (_INTEGER.fullmatch(low) and (not dash or _INTEGER.fullmatch(high))):
            raise value.error(f"bad protocol number {token!r}: IP protocols are 0..255", line)
        first, last = int(low), int(high) if dash else int(low)
        if not first <= last <= 255:
            raise value.error(f"bad protocol number {token!r}: IP protocols are 0..255", line)
        out.update(dict.fromkeys(range(first, last + 1)))
    return tuple(out)


def parse_int(value: Value, minimum: int = 0) -> int:
    """A whole number, at least ``minimum``."""
    token = value.text.strip()
    if token.startswith("-") and _INTEGER.fullmatch(token[1:]):
        raise value.error(f"{token} is negative: must be at least {minimum}")
    if not _INTEGER.fullmatch(token):
        raise value.error(f"{token!r} is not a whole number")
    number = int(token)
    if number < minimum:
        raise value.error(f"{number} is too small: must be at least {minimum}")
    return number


def parse_prefix(value: Value, bits: int) -> int:
    """A prefix length from 1 to ``bits`` (32 for IPv4, 128 for IPv6); a leading '/' is allowed."""
    token = value.text.strip().lstrip("/")
    if not _INTEGER.fullmatch(token) or not 1 <= int(token) <= bits:
        raise value.error(f"{value.text.strip()!r} is not a prefix length from 1 to {bits}")
    return int(token)


def parse_duration(value: Value) -> float:
    """Seconds, as a number with an optional unit s, m, h, d or w (``60``, ``1m``, ``1.5h``); above zero."""
    try:
        return values.duration(value.text)
    except ValueError as err:
        raise value.error(str(err)) from None


def parse_bool(value: Value) -> bool:
    try:
        return values.boolean(value.text)
    except ValueError as err:
        raise value.error(str(err)) from None


def parse_modes(value: Value) -> tuple[str, ...]:
    modes: list[str] = []
    for line, token in value.tokens():
        if token not in MODES:
            raise value.error(f"unknown mode {token!r}: modes are {', '.join(MODES)}", line)
        if token in modes:
            raise value.error(f"mode {token!r} listed twice", line)
        modes.append(token)
    if not modes:
        raise value.error(f"no mode given: name at least one of {', '.join(MODES)}")
    return tuple(modes)


def parse_output(value: Value) -> str:
    token = value.text.strip()
    if token not in OUTPUTS:
        raise value.error(f"unknown output {token!r}: use journal, jsonl or auto")
    return token


def parse_interface(value: Value) -> str:
    token = value.text.strip()
    if not _INTERFACE.fullmatch(token) or token in (".", ".."):
        raise value.error(f"bad interface name {token!r}: one name of at most 15 characters, or 'any'")
    return token


def parse_path(value: Value) -> str:
    """A file name; empty means unset."""
    return value.text.strip()


def parse_required_path(value: Value) -> str:
    path = value.text.strip()
    if not path:
        raise value.error("must not be empty")
    return path


def parse_text(value: Value) -> str:
    """Free text, kept as written (a quoted value keeps its spaces)."""
    return value.text


def parse_network(token: str, strict: bool = True) -> IPNetwork:
    """An IPv4 or IPv6 address or network (the shared grammar); raises ValueError with a reason."""
    return values.network(token, strict=strict)


def parse_networks(value: Value) -> tuple[IPNetwork, ...]:
    """Addresses and networks, comma and/or whitespace separated; a network with host bits set is refused."""
    networks: dict[IPNetwork, None] = {}
    for line, token in value.tokens():
        try:
            networks[parse_network(token)] = None
        except ValueError as err:
            raise value.error(str(err), line) from None
    return tuple(networks)


def check_config(config: DetectorConfig, path: str, warnings: list[str]) -> None:
    """Warnings about combinations of options, for both formats."""
    uses = {"tcp_ports": ("tcp", "stcp"), "udp_ports": ("udp", "sudp"), "sctp_ports": ("ssctp",)}
    for name, modes in uses.items():
        running = [m for m in config.modes if m in modes]
        if running and not getattr(config, name):
            warnings.append(f"{path}: {name}: empty, so the {'/'.join(running)} sentry watches nothing")
