"""A classic PortSentry 1.2 ``portsentry.conf`` read into the detector's :class:`DetectorConfig`.

The lines are read by :mod:`portsentinel.common.portsentry_keys` (the same reader as the responder's
``import-portsentry``: quoting, comments and errors alike). Where PortSentry was loose we are explicit:

- a duplicated key keeps the first value, as PortSentry's lookup does, with a warning;
- port lists take the own format's syntax, a superset of PortSentry's (spaces and ranges ``1-1024`` allowed).

The responder's keys (KILL_*, BLOCKED_FILE) are kept verbatim in ``responder_keys`` with a warning. The
sentry modes are not in portsentry.conf (PortSentry took them from its command line), so ``modes`` keeps
its default. No I/O here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from portsentinel.common.portsentry_keys import KeyLineError, read_entries
from portsentinel.detector.config.model import ConfigError, DetectorConfig
from portsentinel.detector.config.values import (
    FORMAT_PORTSENTRY,
    Parsed,
    Value,
    check_config,
    parse_bool,
    parse_int,
    parse_path,
    parse_port_bound,
    parse_ports,
    parse_prefix,
    parse_text,
)


def parse_block(value: Value) -> int:
    """BLOCK_TCP / BLOCK_UDP: 0 alert only, 1 block and run KILL_RUN_CMD, 2 run KILL_RUN_CMD only."""
    token = value.text.strip()
    if token not in ("0", "1", "2"):
        raise value.error(f"{token!r} is not 0, 1 or 2 (0 alert only, 1 block, 2 run KILL_RUN_CMD only)")
    return int(token)


#: Detector keys: PortSentry key -> (DetectorConfig field, parser).
DETECTOR_KEYS: dict[str, tuple[str, Callable[[Value], Any]]] = {
    "TCP_PORTS": ("tcp_ports", parse_ports),
    "UDP_PORTS": ("udp_ports", parse_ports),
    "ADVANCED_PORTS_TCP": ("advanced_tcp", parse_port_bound),
    "ADVANCED_PORTS_UDP": ("advanced_udp", parse_port_bound),
    "ADVANCED_EXCLUDE_TCP": ("advanced_exclude_tcp", parse_ports),
    "ADVANCED_EXCLUDE_UDP": ("advanced_exclude_udp", parse_ports),
    "IGNORE_FILE": ("ignore_file", parse_path),
    "HISTORY_FILE": ("history_file", parse_path),
    "RESOLVE_HOST": ("resolve_host", parse_bool),
    "PORT_BANNER": ("port_banner", parse_text),
    "SCAN_TRIGGER": ("scan_trigger", parse_int),
    "IPV4_PREFIX": ("ipv4_prefix", lambda value: parse_prefix(value, 32)),
    "IPV6_PREFIX": ("ipv6_prefix", lambda value: parse_prefix(value, 128)),
    "BLOCK_TCP": ("block_tcp", parse_block),
    "BLOCK_UDP": ("block_udp", parse_block),
}
#: Keys the responder reads; the detector keeps them verbatim in ``responder_keys``.
RESPONDER_KEYS = ("KILL_ROUTE", "KILL_HOSTS_DENY", "KILL_RUN_CMD", "KILL_RUN_CMD_FIRST", "BLOCKED_FILE")


def parse_portsentry(text: str, path: str) -> Parsed:
    """A classic portsentry.conf, with where each field was set."""
    warnings: list[str] = []
    values: dict[str, Any] = {}
    where: dict[str, tuple[int, str]] = {}
    seen: dict[str, int] = {}
    responder: dict[str, str] = {}
    try:
        entries = read_entries(text, path)
    except KeyLineError as err:
        raise ConfigError(err.path, err.line, err.key, err.reason) from None
    for entry in entries:
        number, key, text_value = entry.line, entry.key, entry.value
        if key not in DETECTOR_KEYS and key not in RESPONDER_KEYS:
            raise ConfigError(path, number, key, "unknown PortSentry key")
        if key in seen:
            warnings.append(f"{path}:{number}: {key}: set again; PortSentry uses the first value "
                            f"(line {seen[key]}), so does portsentinel")
            continue
        seen[key] = number
        if key in RESPONDER_KEYS:
            responder[key] = text_value
            warnings.append(f"{path}:{number}: {key}: read by the responder, not the detector")
            continue
        name, parser = DETECTOR_KEYS[key]
        values[name] = parser(Value(path, key, [(number, text_value)], warnings))
        where[name] = (number, key)
    config = DetectorConfig(**values, responder_keys=responder, source=path, source_format=FORMAT_PORTSENTRY)
    check_config(config, path, warnings)
    return Parsed(config, warnings, where)


def parse_portsentry_text(text: str, path: str) -> tuple[DetectorConfig, list[str]]:
    """Parse a classic portsentry.conf (no I/O). ``path`` only names the text in errors and warnings."""
    parsed = parse_portsentry(text, path)
    return parsed.config, parsed.warnings
