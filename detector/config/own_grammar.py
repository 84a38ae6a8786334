"""The own format's grammar: its keys (named like :class:`~.model.DetectorConfig`'s fields, in the order
detector.conf documents them) and the value parser that reads each, then the checks across options.

The lines are read by ``own_lexer.py``; the values by ``values.py``. No I/O.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from portsentinel.common import values as grammar
from portsentinel.detector.config.model import DetectorConfig
from portsentinel.detector.config.own_lexer import read_entries
from portsentinel.detector.config.values import (
    FORMAT_OWN,
    Parsed,
    Value,
    check_config,
    parse_bool,
    parse_duration,
    parse_int,
    parse_interface,
    parse_modes,
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


def parse_listen(value: Value) -> str:
    """The metrics endpoint: HOST:PORT, [V6]:PORT or PORT (127.0.0.1); empty means off (docs/metrics.md)."""
    text = value.text.strip()
    if text:
        try:
            grammar.listen(text)
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


def parse_own(text: str, path: str) -> Parsed:
    """The own format, with where each field was set."""
    warnings: list[str] = []
    entries = read_entries(text, path, _PARSERS, warnings)
    fields = {key: _PARSERS[key](value) for key, value in entries.items()}
    config = DetectorConfig(**fields, source=path, source_format=FORMAT_OWN)
    check_config(config, path, warnings)
    return Parsed(config, warnings, {key: (value.line, key) for key, value in entries.items()})


def parse_config_text(text: str, path: str) -> tuple[DetectorConfig, list[str]]:
    """Parse the own format (no I/O). ``path`` only names the text in errors and warnings."""
    parsed = parse_own(text, path)
    return parsed.config, parsed.warnings
