"""A classic portsentry.conf's blocking keys become equivalent jails that load and validate."""

from __future__ import annotations

from pathlib import Path

import pytest

from portsentinel.responder.actions.action import load_action
from portsentinel.responder.config.jailconf import load
from portsentinel.responder.config.portsentry import PortsentryImportError, convert
from tests.conftest import ROOT, stock_file

CLASSIC = '''# a PortSentry 1.2 set-up
TCP_PORTS="1,11,15"
BLOCK_UDP="2"
BLOCK_TCP="1"
KILL_ROUTE="/sbin/route add -host $TARGET$ reject"
KILL_HOSTS_DENY="ALL: $TARGET$ : DENY"
KILL_RUN_CMD="/usr/local/bin/alert.sh $TARGET$ $PORT$"
KILL_RUN_CMD_FIRST = "1"
SCAN_TRIGGER="0"
'''


def _jails(tmp_path: Path, text: str) -> dict[str, list[tuple[str, dict[str, str]]]]:
    (tmp_path / "jail.conf").write_text(convert(text, "/etc/portsentry/portsentry.conf"))
    cfg = load(tmp_path)
    assert cfg.errors == []
    out = {}
    for j in cfg.jails:
        out[j.name] = [(a.name, a.args) for a in j.actions]
        assert j.bantime == -1 and j.filter == f"portsentinel-{j.name.split('-')[1]}"
        for a in j.actions:  # every generated action loads against the shipped actions.d
            load_action(ROOT / "actions.d", (a.name, a.args), j.name)
    return out


def test_block_modes_and_kill_keys(tmp_path: Path) -> None:
    jails = _jails(tmp_path, CLASSIC)
    assert jails["portsentry-tcp"] == [
        ("route", {"blocktype": "prohibit"}),
        ("hosts-deny", {"daemon": "ALL"}),
        ("script", {"command": "/usr/local/bin/alert.sh $TARGET$ $PORT$", "first": "yes"}),
    ]
    assert jails["portsentry-udp"] == [
        ("script", {"command": "/usr/local/bin/alert.sh $TARGET$ $PORT$", "first": "yes"})]


def test_gateway_route_and_log_only(tmp_path: Path) -> None:
    text = 'BLOCK_TCP="1"\nBLOCK_UDP="0"\nKILL_ROUTE="/sbin/route add $TARGET$ 192.0.2.254"\n'
    jails = _jails(tmp_path, text)
    assert jails == {"portsentry-tcp": [("route", {"gateway": "192.0.2.254"})], "portsentry-udp": []}


def test_debian_stock_conf(tmp_path: Path) -> None:
    stock = stock_file("portsentry", "etc/portsentry/portsentry.conf").read_text()
    assert _jails(tmp_path, stock) == {"portsentry-tcp": [], "portsentry-udp": []}  # BLOCK_*="0": log only
    enabled = stock.replace('BLOCK_TCP="0"', 'BLOCK_TCP="1"')
    assert [a for a, _ in _jails(tmp_path, enabled)["portsentry-tcp"]] == ["route", "hosts-deny"]


@pytest.mark.parametrize("text,where", [
    ('BLOCK_TCP="3"\n', "portsentry.conf:1: BLOCK_TCP"),
    ('KILL_ROUTE="/sbin/route add -host 1.2.3.4"\n', "portsentry.conf:1: KILL_ROUTE"),
    ('\nKILL_RUN_CMD="relative.sh $TARGET$"\n', "portsentry.conf:2: KILL_RUN_CMD"),
    ('KILL_HOSTS_DENY="$(reboot): $TARGET$"\n', "portsentry.conf:1: KILL_HOSTS_DENY"),
    ("garbage line\n", "portsentry.conf:1:"),
])
def test_errors_name_file_line_key(text: str, where: str) -> None:
    with pytest.raises(PortsentryImportError, match=where.replace(".", r"\.")):
        convert(text, "/etc/portsentry/portsentry.conf")
