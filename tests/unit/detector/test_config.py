"""The own configuration format, format detection, the ignore file and load_config."""

from __future__ import annotations

import dataclasses
import ipaddress
from pathlib import Path

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from portsentinel.detector.config.detect import detect_format, parse_any
from portsentinel.detector.config.files import load_config, read_ignore_file
from portsentinel.detector.config.model import ConfigError, DetectorConfig
from portsentinel.detector.config.own_grammar import KEYS, parse_config_text
from portsentinel.detector.config.own_render import format_config
from portsentinel.detector.config.values import FORMAT_OWN, FORMAT_PORTSENTRY, MODES
from tests.conftest import ROOT

NET = ipaddress.ip_network


def parse(body: str, path: str = "d.conf") -> tuple[DetectorConfig, list[str]]:
    return parse_config_text("[detector]\n" + body, path)


def error(body: str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse(body)
    return info.value


def own_fields(config: DetectorConfig) -> dict[str, object]:
    return {key: getattr(config, key) for key in KEYS}


# --- the shipped default file ---------------------------------------------------------------------------


def test_shipped_detector_conf_equals_the_defaults() -> None:
    config, warnings = load_config(str(ROOT / "detector.conf"))
    assert warnings == []
    expected = dataclasses.replace(DetectorConfig(), source=str(ROOT / "detector.conf"), source_format=FORMAT_OWN)
    assert config == expected


def test_shipped_detector_conf_documents_every_key() -> None:
    text = (ROOT / "detector.conf").read_text()
    for key in KEYS:
        assert f"\n{key} =" in text, key
    own = {f.name for f in dataclasses.fields(DetectorConfig)} - {
        "block_tcp", "block_udp", "responder_keys", "source", "source_format"}
    assert set(KEYS) == own


# --- values ---------------------------------------------------------------------------------------------


def test_every_key_parses() -> None:
    config, warnings = parse(
        "modes = tcp udp, atcp\n"
        "interface = eth0\n"
        "output = jsonl\n"
        "jsonl_path = /tmp/a.jsonl\n"
        "tcp_ports = 1-3, 80 443\n"
        "udp_ports = 53\n"
        "advanced_tcp = 2048\n"
        "advanced_udp = 65535\n"
        "advanced_exclude_tcp = 113\n"
        "advanced_exclude_udp =\n"
        "scan_trigger = 2\n"
        "window = 2m\n"
        "summary_interval = 1.5h\n"
        "max_sources = 1\n"
        "max_records_per_second = 10\n"
        "ignore = 10.0.0.0/8, 192.0.2.7 2001:db8::/32\n"
        "ignore_file = /etc/portsentry/portsentry.ignore\n"
        "ignore_self = off\n"
        "history_file = /var/lib/h\n"
        "resolve_host = TRUE\n"
        'port_banner = "  go away; #1 "  ; a comment\n'
    )
    assert warnings == []
    assert config.modes == ("tcp", "udp", "atcp")
    assert config.interface == "eth0" and config.output == "jsonl" and config.jsonl_path == "/tmp/a.jsonl"
    assert config.tcp_ports == (1, 2, 3, 80, 443) and config.udp_ports == (53,)
    assert (config.advanced_tcp, config.advanced_udp) == (2048, 65535)
    assert config.advanced_exclude_tcp == (113,) and config.advanced_exclude_udp == ()
    assert config.scan_trigger == 2 and config.window == 120.0 and config.summary_interval == 5400.0
    assert config.max_sources == 1 and config.max_records_per_second == 10
    assert config.ignore == (NET("10.0.0.0/8"), NET("192.0.2.7/32"), NET("2001:db8::/32"))
    assert config.ignore_file == "/etc/portsentry/portsentry.ignore"
    assert config.ignore_self is False and config.resolve_host is True
    assert config.history_file == "/var/lib/h"
    assert config.port_banner == "  go away; #1 "
    assert config.source == "d.conf" and config.source_format == FORMAT_OWN


def test_unset_keys_keep_their_defaults() -> None:
    config, _ = parse("window = 10s\n")
    assert own_fields(config) == own_fields(dataclasses.replace(DetectorConfig(), window=10.0))


def test_comments_continuations_and_inline_comments() -> None:
    config, _ = parse(
        "# a comment\n"
        "; another\n"
        "tcp_ports = 1, 2,   # first line\n"
        "    # a comment inside the value\n"
        "    3 4 ; more\n"
        "\n"
        "port_banner=no#comment;here  # but this is one\n"
    )
    assert config.tcp_ports == (1, 2, 3, 4)
    assert config.port_banner == "no#comment;here"


@pytest.mark.parametrize("word, expected", [
    ("yes", True), ("no", False), ("true", True), ("false", False), ("on", True), ("off", False),
    ("1", True), ("0", False), ("Yes", True), ("OFF", False),
])
def test_booleans(word: str, expected: bool) -> None:
    assert parse(f"resolve_host = {word}\n")[0].resolve_host is expected


@pytest.mark.parametrize("text, seconds", [("60", 60.0), ("1m", 60.0), ("90s", 90.0), ("2h", 7200.0),
                                           ("0.5", 0.5), ("1.5m", 90.0)])
def test_durations(text: str, seconds: float) -> None:
    assert parse(f"window = {text}\n")[0].window == seconds


def test_duplicate_ports_are_dropped_with_a_warning() -> None:
    config, warnings = parse("udp_ports = 1, 2,\n  2 1-3\n")
    assert config.udp_ports == (1, 2, 3)
    assert warnings == ["d.conf:3: udp_ports: port listed more than once: 2, 1, 2"]


def test_empty_port_list_for_a_running_sentry_warns() -> None:
    config, warnings = parse("modes = stcp\ntcp_ports =\n")
    assert config.tcp_ports == ()
    assert warnings == ["d.conf: tcp_ports: empty, so the stcp sentry watches nothing"]


def test_empty_file_is_the_defaults_with_a_warning() -> None:
    config, warnings = parse_config_text("# nothing\n", "e.conf")
    assert own_fields(config) == own_fields(DetectorConfig())
    assert warnings == ["e.conf: no [detector] section: every option keeps its default"]


# --- errors: each names file, line and key --------------------------------------------------------------

ERRORS = [
    # (body after "[detector]\n" on line 1, line, key, reason fragment)
    ("[other]\n", 2, "[other]", "unknown section"),
    ("[detector]\n", 2, "[detector]", "duplicate section (first on line 1)"),
    ("[detector\n", 2, "[detector", "malformed section header"),
    ("colour = red\n", 2, "colour", "unknown key"),
    ("TCP_PORTS = 1\n", 2, "TCP_PORTS", "did you mean tcp_ports?"),
    ("tcp_ports\n", 2, "tcp_ports", "expected 'key = value'"),
    ("= 5\n", 2, "=", "expected 'key = value'"),
    ("window = 1\nwindow = 2\n", 3, "window", "duplicate key (first set on line 2)"),
    ("tcp_ports = 0\n", 2, "tcp_ports", "bad port 0"),
    ("tcp_ports = 1, 65536\n", 2, "tcp_ports", "bad port 65536"),
    ("udp_ports = 1, http\n", 2, "udp_ports", "bad port 'http': not a number"),
    ("udp_ports = -1\n", 2, "udp_ports", "bad port range '-1'"),
    ("tcp_ports = 1,\n  20-10\n", 3, "tcp_ports", "bad port range '20-10': 20 is above 10"),
    ("tcp_ports = 1-2-3\n", 2, "tcp_ports", "bad port range '1-2-3'"),
    ("tcp_ports = 1-70000\n", 2, "tcp_ports", "bad port 70000"),
    ("advanced_exclude_udp = 99999\n", 2, "advanced_exclude_udp", "bad port 99999"),
    ("advanced_tcp = 0\n", 2, "advanced_tcp", "bad port bound 0: must be 1..65535"),
    ("advanced_udp = 65536\n", 2, "advanced_udp", "bad port bound 65536"),
    ("advanced_udp = lots\n", 2, "advanced_udp", "bad port bound 'lots'"),
    ("modes = stcp, ftp\n", 2, "modes", "unknown mode 'ftp'"),
    ("modes = stcp, stcp\n", 2, "modes", "mode 'stcp' listed twice"),
    ("modes =\n", 2, "modes", "no mode given"),
    ("output = syslog\n", 2, "output", "unknown output 'syslog'"),
    ("ignore = 10.0.0.1,\n  300.1.1.1\n", 3, "ignore", "'300.1.1.1' is not an IPv4 or IPv6 address"),
    ("ignore = 192.168.1.5/24\n", 2, "ignore", "has host bits set: write 192.168.1.0/24"),
    ("ignore = 2001:db8::1/32\n", 2, "ignore", "write 2001:db8::/32"),
    ("ignore = fe80::1%eth0\n", 2, "ignore", "scoped IPv6"),
    ("ignore = 10.0.0.0/33\n", 2, "ignore", "not an IPv4 or IPv6"),
    ("ignore_self = maybe\n", 2, "ignore_self", "not a boolean"),
    ("resolve_host = 2\n", 2, "resolve_host", "not a boolean"),
    ("window = soon\n", 2, "window", "not a duration"),
    ("window = 1y\n", 2, "window", "not a duration"),
    ("window = -5\n", 2, "window", "negative"),
    ("window = 0\n", 2, "window", "must be above zero"),
    ("summary_interval = 0m\n", 2, "summary_interval", "must be above zero"),
    ("scan_trigger = -1\n", 2, "scan_trigger", "negative"),
    ("scan_trigger = 1.5\n", 2, "scan_trigger", "not a whole number"),
    ("max_sources = 0\n", 2, "max_sources", "must be at least 1"),
    ("max_sources = -3\n", 2, "max_sources", "negative"),
    ("max_records_per_second = 0\n", 2, "max_records_per_second", "must be at least 1"),
    ("interface = eth0 eth1\n", 2, "interface", "bad interface name"),
    ("interface =\n", 2, "interface", "bad interface name"),
    ("interface = averyveryverylongname\n", 2, "interface", "bad interface name"),
    ("jsonl_path =\n", 2, "jsonl_path", "must not be empty"),
    ('port_banner = "unterminated\n', 2, "port_banner", "unterminated quote"),
]


@pytest.mark.parametrize("body, line, key, reason", ERRORS)
def test_errors_name_file_line_and_key(body: str, line: int, key: str, reason: str) -> None:
    err = error(body)
    assert (err.path, err.line, err.key) == ("d.conf", line, key)
    assert reason in err.reason
    assert str(err).startswith(f"d.conf:{line}: {key}: ")


def test_setting_before_the_section_is_an_error() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config_text("window = 5\n[detector]\n", "x.conf")
    assert str(info.value) == "x.conf:1: window: setting outside a section: put it under [detector]"


def test_error_message_shape() -> None:
    assert str(error("tcp_ports = 1, 0\n")) == "d.conf:2: tcp_ports: bad port 0: ports are 1..65535"


# --- round trips ----------------------------------------------------------------------------------------


def test_defaults_round_trip() -> None:
    config, warnings = parse_config_text(format_config(DetectorConfig()), "r.conf")
    assert own_fields(config) == own_fields(DetectorConfig()) and warnings == []


def test_full_range_round_trips_compactly() -> None:
    text = format_config(dataclasses.replace(DetectorConfig(), tcp_ports=tuple(range(1, 65536))))
    assert "tcp_ports = 1-65535\n" in text
    assert parse_config_text(text, "r")[0].tcp_ports == tuple(range(1, 65536))


ports = st.lists(st.integers(1, 65535), unique=True, max_size=30).map(tuple)
networks = st.one_of(st.ip_addresses(v=4).map(lambda a: NET(f"{a}/32").supernet(new_prefix=24)),
                     st.ip_addresses(v=6).map(lambda a: NET(f"{a}/128")))
banner = st.text(st.characters(blacklist_categories=("Cs", "Cc", "Zl", "Zp")), max_size=40)
configs = st.builds(
    DetectorConfig,
    modes=st.lists(st.sampled_from(MODES), unique=True, min_size=1).map(tuple),
    interface=st.sampled_from(["any", "eth0", "ens3", "wlp2s0"]),
    output=st.sampled_from(["journal", "jsonl", "auto"]),
    tcp_ports=ports, udp_ports=ports, advanced_exclude_tcp=ports, advanced_exclude_udp=ports,
    advanced_tcp=st.integers(1, 65535), advanced_udp=st.integers(1, 65535),
    scan_trigger=st.integers(0, 10**6),
    window=st.integers(1, 10**6).map(float) | st.sampled_from([0.5, 1.25, 90.5]),
    summary_interval=st.integers(1, 10**6).map(float),
    max_sources=st.integers(1, 10**7), max_records_per_second=st.integers(1, 10**4),
    ignore=st.lists(networks, unique=True, max_size=5).map(tuple),
    ignore_self=st.booleans(), resolve_host=st.booleans(),
    port_banner=banner.filter(lambda s: s.isprintable() or s == ""),
)


@settings(max_examples=200)
@given(configs)
def test_any_config_round_trips(config: DetectorConfig) -> None:
    parsed, _ = parse_config_text(format_config(config), "r")
    assert own_fields(parsed) == own_fields(config)


# --- robustness -----------------------------------------------------------------------------------------

fragments = st.sampled_from([
    "[detector]", "[x]", "[", "tcp_ports = ", "window=", "ignore = ", "modes = ", "KEY=", 'TCP_PORTS="',
    "1-", "65536", "-", ",", " ", "\t", "\n", "#", ";", '"', "=", "1m", "10.0.0.0/8", "::1", "%", "\r",
    "\x00", "é", "٣", "9" * 5000, "1e400", "yes",
])
#: Settings that parse (own format, and a classic portsentry.conf for parse_any), each key at most once, so that
#: a good share of the fuzzed texts reach the round trip; comments and blank lines between them.
own_lines = st.sampled_from([
    "tcp_ports = 1-1024, 8080", "udp_ports = 53,\t67-69", "window = 90s", "window = 0.5s", "summary_interval = 2.25h",
    "ignore = 10.0.0.0/8 2001:db8::/32", "modes = stcp sudp", "scan_trigger = 2", "ignore_self = no",
    'port_banner = "hello # there"', "port_banner = plain text", 'port_banner = "a \\"quoted\\" word"',
    "max_sources = 7", "advanced_tcp = 2048", "resolve_host = yes", "# comment", "; comment", "",
])
classic_lines = st.sampled_from([
    'TCP_PORTS="1,2,3"', 'SCAN_TRIGGER="1"', 'KILL_ROUTE="/sbin/route add $TARGET$ 333.444.555.666"',
    'ADVANCED_PORTS_UDP="1024"', 'PORT_BANNER="** UNAUTHORIZED; ACCESS # PROHIBITED **"', "# comment", "",
])


def _key(line: str) -> str:
    return line.split("=")[0].strip() if "=" in line else line + str(id(line))


texts = st.one_of(
    st.text(), st.lists(fragments, max_size=40).map("".join),
    st.lists(own_lines, max_size=10, unique_by=_key).map(lambda ls: "[detector]\n" + "\n".join(ls) + "\n"),
    st.lists(classic_lines, max_size=6, unique_by=_key).map(lambda ls: "\n".join(ls) + "\n"),
    st.lists(st.one_of(own_lines, classic_lines, fragments), max_size=12).map("\n".join),
)


def normal_form_round_trips(config: DetectorConfig) -> None:
    """The own format as format_config writes it is the normal form of any parsed config (a classic
    portsentry.conf's included): parsed again it gives the same settings, and rendered again the same text."""
    text = format_config(config)
    again, _ = parse_config_text(text, "normal.conf")  # (warnings too: an empty port list warns in any form)
    assert own_fields(again) == own_fields(config)
    assert format_config(again) == text


@settings(max_examples=400)
@given(texts)
def test_random_text_raises_only_config_error_and_what_parses_round_trips(text: str) -> None:
    for detect in (False, True):
        try:
            config = parse_any(text, "fuzz.conf").config if detect else parse_config_text(text, "fuzz.conf")[0]
        except ConfigError:
            event("refused")
            continue
        event("parsed: round trip checked")
        normal_form_round_trips(config)


# --- format detection and load_config -------------------------------------------------------------------


@pytest.mark.parametrize("text, expected", [
    ("[detector]\nwindow = 5\n", FORMAT_OWN),
    ("# c\n; c\n\n  [detector]\n", FORMAT_OWN),
    ('# PortSentry\nTCP_PORTS="1,2"\n', FORMAT_PORTSENTRY),
    ('RESOLVE_HOST = "0"\n', FORMAT_PORTSENTRY),
    ("", FORMAT_OWN),
    ("window = 5\n", FORMAT_OWN),
])
def test_detect_format(text: str, expected: str) -> None:
    assert detect_format(text) == expected


def test_load_config_dispatches_by_content(tmp_path: Path) -> None:
    classic = tmp_path / "any.name"
    classic.write_text('TCP_PORTS="1,2"\nSCAN_TRIGGER="1"\n')
    config, _ = load_config(str(classic))
    assert (config.source, config.source_format) == (str(classic), FORMAT_PORTSENTRY)
    assert config.tcp_ports == (1, 2) and config.scan_trigger == 1
    own = tmp_path / "portsentry.conf"
    own.write_text("[detector]\nscan_trigger = 3\n")
    config, _ = load_config(str(own))
    assert (config.source, config.source_format, config.scan_trigger) == (str(own), FORMAT_OWN, 3)


def test_load_config_unreadable(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"missing\.conf: cannot read"):
        load_config(str(tmp_path / "missing.conf"))
    bad = tmp_path / "bin.conf"
    bad.write_bytes(b"[detector]\n\xff\n")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config(str(bad))


def test_load_config_adds_the_ignore_file(tmp_path: Path) -> None:
    (tmp_path / "ignore").write_text("# hosts\n\n192.0.2.0/24\n127.0.0.1/8\n2001:db8::1  # inline\n")
    conf = tmp_path / "d.conf"
    conf.write_text("[detector]\nignore = 10.0.0.0/8\nignore_file = ignore\n")
    config, warnings = load_config(str(conf))
    assert config.ignore == (NET("10.0.0.0/8"), NET("192.0.2.0/24"), NET("127.0.0.0/8"), NET("2001:db8::1"))
    assert config.ignore_file == str(tmp_path / "ignore")
    assert warnings == [f"{tmp_path}/ignore:4: 127.0.0.1/8: host bits set; ignoring the network 127.0.0.0/8"]


def test_missing_ignore_file_is_a_warning(tmp_path: Path) -> None:
    conf = tmp_path / "d.conf"
    conf.write_text("[detector]\n\nignore_file = /nonexistent/portsentry.ignore\n")
    config, warnings = load_config(str(conf))
    assert config.ignore == DetectorConfig().ignore
    assert warnings == [f"{conf}:3: ignore_file: /nonexistent/portsentry.ignore not found; "
                        "no addresses loaded from it"]


def test_bad_ignore_file_names_its_line(tmp_path: Path) -> None:
    conf = tmp_path / "d.conf"
    conf.write_text("[detector]\nignore_file = ign\n")
    (tmp_path / "ign").write_text("10.0.0.1\n# c\nnot-an-address\n")
    with pytest.raises(ConfigError) as info:
        load_config(str(conf))
    assert (info.value.path, info.value.line, info.value.key) == (str(tmp_path / "ign"), 3, "not-an-address")


def test_read_ignore_file(tmp_path: Path) -> None:
    path = tmp_path / "i"
    path.write_text("0.0.0.0\n127.0.0.1/32\n::1\n10.1.2.3/255.255.0.0\n")
    networks, warnings = read_ignore_file(str(path))
    assert networks == (NET("0.0.0.0/32"), NET("127.0.0.1/32"), NET("::1/128"), NET("10.1.0.0/16"))
    assert warnings == [f"{path}:4: 10.1.2.3/255.255.0.0: host bits set; ignoring the network 10.1.0.0/16"]
    path.write_text("10.0.0.1 10.0.0.2\n")
    with pytest.raises(ConfigError, match=r":1: 10\.0\.0\.1: one address or network per line"):
        read_ignore_file(str(path))
    assert read_ignore_file(str(tmp_path / "none")) == ((), [f"{tmp_path}/none: ignore file not found; "
                                                            "no addresses loaded from it"])
