"""portsentinel.common.portsentry_keys: one reader of PortSentry's KEY="value" lines for both stages."""

from __future__ import annotations

import pytest

from portsentinel.common.portsentry_keys import Entry, KeyLineError, first_values, read_entries


def test_quoted_unquoted_comments_and_duplicates() -> None:
    text = ('# comment\n\nTCP_PORTS="1,11,15"\nRESOLVE_HOST = "0"  # trailing\nSCAN_TRIGGER=2 # unquoted\n'
            'KILL_ROUTE=/sbin/route add -host $TARGET$ reject\nTCP_PORTS="2"\n')
    entries = read_entries(text, "ps.conf")
    assert entries == [Entry(3, "TCP_PORTS", "1,11,15"), Entry(4, "RESOLVE_HOST", "0"),
                       Entry(5, "SCAN_TRIGGER", "2"), Entry(6, "KILL_ROUTE", "/sbin/route add -host $TARGET$ reject"),
                       Entry(7, "TCP_PORTS", "2")]
    assert first_values(entries)["TCP_PORTS"].line == 3


@pytest.mark.parametrize(("text", "where", "reason"), [
    ('A="x" junk\n', "ps.conf:1: A", "text after the closing quote"),
    ('\nA="x\n', "ps.conf:2: A", "unterminated quote"),
    ("no equals here\n", "ps.conf:1: no", 'expected KEY="value"'),
])
def test_errors_name_file_line_and_key(text: str, where: str, reason: str) -> None:
    with pytest.raises(KeyLineError) as info:
        read_entries(text, "ps.conf")
    assert str(info.value).startswith(where)
    assert reason in info.value.reason


def test_both_stages_accept_the_same_files() -> None:
    """The detector's classic-config reader and import-portsentry agree on what a line holds."""
    from portsentinel.detector.config.portsentry_conf import parse_portsentry_text
    from portsentinel.responder.config.portsentry import read_keys

    text = 'TCP_PORTS=1, 11, 15 # unquoted, with spaces\nKILL_HOSTS_DENY="ALL: $TARGET$ : DENY"\n'
    config, _ = parse_portsentry_text(text, "ps.conf")
    assert config.tcp_ports == (1, 11, 15)
    keys = read_keys(text, "ps.conf")
    assert keys["TCP_PORTS"] == ("1, 11, 15", 1)
    assert config.responder_keys["KILL_HOSTS_DENY"] == keys["KILL_HOSTS_DENY"][0]
