"""A classic PortSentry 1.2 portsentry.conf, including Debian's stock file."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from portsentinel.detector.config.files import load_config
from portsentinel.detector.config.model import DEFAULT_TCP_PORTS, DEFAULT_UDP_PORTS, ConfigError, DetectorConfig
from portsentinel.detector.config.own_grammar import KEYS, parse_config_text
from portsentinel.detector.config.own_render import format_config
from portsentinel.detector.config.portsentry_conf import parse_portsentry_text
from portsentinel.detector.config.values import FORMAT_PORTSENTRY
from tests.conftest import stock_file


def parse(text: str) -> tuple[DetectorConfig, list[str]]:
    return parse_portsentry_text(text, "ps.conf")


def error(text: str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse(text)
    return info.value


def test_debian_stock_file_loads() -> None:
    path = str(stock_file("portsentry", "etc/portsentry/portsentry.conf"))
    config, warnings = load_config(path)
    assert config.source == path and config.source_format == FORMAT_PORTSENTRY
    assert config.tcp_ports == DEFAULT_TCP_PORTS and config.udp_ports == DEFAULT_UDP_PORTS
    assert (config.advanced_tcp, config.advanced_udp) == (1024, 1024)
    assert config.advanced_exclude_tcp == (113, 139) and config.advanced_exclude_udp == (520, 138, 137, 67)
    assert config.scan_trigger == 0 and config.resolve_host is False
    assert (config.block_tcp, config.block_udp) == (0, 0)
    assert config.history_file == "/var/lib/portsentry/portsentry.history"
    assert config.ignore_file == "/etc/portsentry/portsentry.ignore"
    assert config.responder_keys == {
        "BLOCKED_FILE": "/var/lib/portsentry/portsentry.blocked",
        "KILL_ROUTE": "/sbin/route add -host $TARGET$ reject",
        "KILL_HOSTS_DENY": "ALL: $TARGET$ : DENY",
    }
    for key in ("KILL_ROUTE", "KILL_HOSTS_DENY", "BLOCKED_FILE"):
        assert any(w.startswith(f"{path}:") and w.endswith(f": {key}: read by the responder, not the detector")
                   for w in warnings), key
    assert f"{path}:170: KILL_ROUTE: read by the responder, not the detector" in warnings
    assert f"{path}:99: RESOLVE_HOST" not in "\n".join(warnings)  # `KEY = "value"` is fine


def test_debian_stock_ignore_file_reads() -> None:
    from portsentinel.detector.config.files import read_ignore_file

    path = str(stock_file("portsentry", "etc/portsentry/portsentry.ignore.static"))
    networks, warnings = read_ignore_file(path)
    assert [str(n) for n in networks] == ["127.0.0.1/32", "0.0.0.0/32"] and warnings == []


def test_every_key() -> None:
    config, warnings = parse(
        '# comment\n'
        '\n'
        'TCP_PORTS="1,11,15"\n'
        'UDP_PORTS = "7, 9 69"\n'
        'ADVANCED_PORTS_TCP="2048"\n'
        'ADVANCED_PORTS_UDP=4096\n'
        'ADVANCED_EXCLUDE_TCP="113"\n'
        'ADVANCED_EXCLUDE_UDP=""\n'
        'IGNORE_FILE="/etc/ps.ignore"\n'
        'HISTORY_FILE="/var/lib/h"\n'
        'RESOLVE_HOST = "1"\n'
        'PORT_BANNER="** GO AWAY **"   # trailing comment\n'
        'SCAN_TRIGGER="2"\n'
        'BLOCK_TCP="2"\n'
        'BLOCK_UDP="1"\n'
        '  KILL_RUN_CMD="/usr/local/bin/alert $TARGET$ $PORT$ $MODE$"\n'
        'KILL_RUN_CMD_FIRST = "0"\n'
    )
    assert config.tcp_ports == (1, 11, 15) and config.udp_ports == (7, 9, 69)
    assert (config.advanced_tcp, config.advanced_udp) == (2048, 4096)
    assert config.advanced_exclude_tcp == (113,) and config.advanced_exclude_udp == ()
    assert config.ignore_file == "/etc/ps.ignore" and config.history_file == "/var/lib/h"
    assert config.resolve_host is True and config.port_banner == "** GO AWAY **"
    assert config.scan_trigger == 2 and (config.block_tcp, config.block_udp) == (2, 1)
    assert config.responder_keys == {"KILL_RUN_CMD": "/usr/local/bin/alert $TARGET$ $PORT$ $MODE$",
                                     "KILL_RUN_CMD_FIRST": "0"}
    assert warnings == ["ps.conf:16: KILL_RUN_CMD: read by the responder, not the detector",
                        "ps.conf:17: KILL_RUN_CMD_FIRST: read by the responder, not the detector"]
    assert config.modes == DetectorConfig().modes  # modes came from PortSentry's command line


def test_duplicate_key_keeps_the_first_value_with_a_warning() -> None:
    config, warnings = parse('SCAN_TRIGGER="1"\nSCAN_TRIGGER="5"\n')
    assert config.scan_trigger == 1
    assert warnings == ["ps.conf:2: SCAN_TRIGGER: set again; PortSentry uses the first value (line 1), "
                        "so does portsentinel"]


ERRORS = [
    ('WHATEVER="1"\n', 1, "WHATEVER", "unknown PortSentry key"),
    ('\n\ntcp_ports="1"\n', 3, "tcp_ports", "unknown PortSentry key"),
    ('[detector]\n', 1, "[detector]", 'expected KEY="value"'),
    ('TCP_PORTS "1"\n', 1, "TCP_PORTS", 'expected KEY="value"'),
    ('TCP_PORTS="1,2\n', 1, "TCP_PORTS", "unterminated quote"),
    ('TCP_PORTS="1,2" 3\n', 1, "TCP_PORTS", "text after the closing quote"),
    ('TCP_PORTS="1,0"\n', 1, "TCP_PORTS", "bad port 0"),
    ('# c\nUDP_PORTS="70000"\n', 2, "UDP_PORTS", "bad port 70000"),
    ('TCP_PORTS="1,x"\n', 1, "TCP_PORTS", "not a number"),
    ('TCP_PORTS="9-1"\n', 1, "TCP_PORTS", "bad port range '9-1'"),
    ('ADVANCED_PORTS_TCP="0"\n', 1, "ADVANCED_PORTS_TCP", "must be 1..65535"),
    ('ADVANCED_PORTS_UDP="65536"\n', 1, "ADVANCED_PORTS_UDP", "must be 1..65535"),
    ('ADVANCED_EXCLUDE_TCP="113,0"\n', 1, "ADVANCED_EXCLUDE_TCP", "bad port 0"),
    ('SCAN_TRIGGER="-1"\n', 1, "SCAN_TRIGGER", "negative"),
    ('SCAN_TRIGGER="a"\n', 1, "SCAN_TRIGGER", "not a whole number"),
    ('RESOLVE_HOST="2"\n', 1, "RESOLVE_HOST", "not a boolean"),
    ('BLOCK_TCP="3"\n', 1, "BLOCK_TCP", "not 0, 1 or 2"),
    ('BLOCK_UDP=""\n', 1, "BLOCK_UDP", "not 0, 1 or 2"),
]


@pytest.mark.parametrize("text, line, key, reason", ERRORS)
def test_errors_name_file_line_and_key(text: str, line: int, key: str, reason: str) -> None:
    err = error(text)
    assert (err.path, err.line, err.key) == ("ps.conf", line, key)
    assert reason in err.reason
    assert str(err).startswith(f"ps.conf:{line}: {key}: ")


def test_unknown_key_message() -> None:
    assert str(error('\nSYSLOG_LEVEL="1"\n')) == "ps.conf:2: SYSLOG_LEVEL: unknown PortSentry key"


def test_stock_file_converts_to_the_own_format_and_back() -> None:
    config, _ = load_config(str(stock_file("portsentry", "etc/portsentry/portsentry.conf")))
    again, _ = parse_config_text(format_config(config), "converted.conf")
    assert {k: getattr(again, k) for k in KEYS} == {k: getattr(config, k) for k in KEYS}


def test_defaults_when_empty() -> None:
    config, warnings = parse("# only comments\n\n")
    expected = dataclasses.replace(DetectorConfig(), source="ps.conf", source_format=FORMAT_PORTSENTRY)
    assert config == expected and warnings == []


def test_relative_ignore_file_is_next_to_the_config(tmp_path: Path) -> None:
    conf = tmp_path / "portsentry.conf"
    (tmp_path / "portsentry.ignore").write_text("192.0.2.1\n")
    conf.write_text('IGNORE_FILE="portsentry.ignore"\nTCP_PORTS="1"\n')
    config, warnings = load_config(str(conf))
    assert config.ignore[-1].compressed == "192.0.2.1/32" and warnings == []


fragments = st.sampled_from([
    "TCP_PORTS", "KILL_ROUTE", "BLOCK_TCP", "SCAN_TRIGGER", "ADVANCED_PORTS_TCP", "=", '"', " ", "\n", "#",
    "1", "0", "-", ",", "65536", "99" * 3000, "\r", "\x00", "é", "٣", "[detector]",
])


#: Settings that parse, each key at most once, so that a good share of the fuzzed texts reach the round trip.
good_lines = st.sampled_from([
    'TCP_PORTS="1,11,15,79,111"', 'UDP_PORTS="1,7,9,69"', 'ADVANCED_PORTS_TCP="1024"', "# comment", "",
    'ADVANCED_EXCLUDE_UDP="520,138"', 'SCAN_TRIGGER="2"', 'RESOLVE_HOST = "1"', 'BLOCK_TCP="1"',
    'PORT_BANNER="** UNAUTHORIZED; ACCESS # PROHIBITED **"', 'KILL_HOSTS_DENY="ALL: $TARGET$ : DENY"',
    'HISTORY_FILE="/var/lib/portsentry/portsentry.history"', 'IGNORE_FILE="/etc/portsentry/portsentry.ignore"',
])


@settings(max_examples=400)
@given(st.one_of(st.text(), st.lists(fragments, max_size=40).map("".join),
                 st.lists(good_lines, max_size=12, unique=True).map("\n".join),
                 st.lists(st.one_of(good_lines, fragments), max_size=12).map("\n".join)))
def test_random_text_raises_only_config_error_and_what_parses_round_trips(text: str) -> None:
    """A parsed portsentry.conf's normal form is the own format (what format_config writes, which has no
    KILL_* or BLOCK_* keys): parsed again it gives the same settings, rendered again the same text."""
    try:
        config, _ = parse_portsentry_text(text, "fuzz.conf")
    except ConfigError:
        event("refused")
        return
    event("parsed: round trip checked")
    normal = format_config(config)
    again, _ = parse_config_text(normal, "normal.conf")  # (warnings too: an empty port list warns in any form)
    assert {k: getattr(again, k) for k in KEYS} == {k: getattr(config, k) for k in KEYS}
    assert format_config(again) == normal
