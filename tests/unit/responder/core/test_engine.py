"""Scenario tests for the responder's engine: timed entries in, decisions out (no I/O)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from portsentinel import record as R
from portsentinel.responder.config.jailconf import JailConfig
from portsentinel.responder.core.bans import BanBook
from portsentinel.responder.core.engine import Engine, JailRuntime
from portsentinel.responder.core.guard import NeverBan, PerMinuteCap
from portsentinel.responder.core.jail import Jail
from portsentinel.responder.core.sources import Entry


@dataclass
class _Hit:
    host: str


class _FieldMatcher:
    """Matches detector scan records by PS_SRC (what filter.d/portsentinel.conf does)."""

    def match_record(self, fields: Mapping[str, str]) -> _Hit | None:
        if fields.get(R.F_EVENT) == "scan" and R.F_SRC in fields:
            return _Hit(fields[R.F_SRC])
        return None

    def match_line(self, line: str) -> _Hit | None:
        return None


class _Offences:
    def __init__(self) -> None:
        self.counts: dict[tuple[str, str], int] = {}

    def offences(self, jail: str, ip: str) -> int:
        return self.counts.get((jail, ip), 0)


def _engine(**kw: object) -> tuple[Engine, JailRuntime]:
    cfg = JailConfig(name="scan", where="x", enabled=True, filter="portsentinel", maxretry=1, bantime=60)
    for k, v in kw.items():
        setattr(cfg, k, v)
    rt = JailRuntime(cfg, _FieldMatcher(), Jail(cfg), PerMinuteCap(cfg.maxbans_per_minute), "journal", True)
    return Engine([rt], NeverBan(own=["192.0.2.1"], gateways=["192.0.2.254"]), BanBook(), _Offences()), rt


def _scan(src: str, uid: str = "0", **extra: str) -> Entry:
    return Entry({R.F_EVENT: "scan", R.F_SRC: src, R.F_MESSAGE: "attackalert", "_UID": uid, **extra}, "", "c1")


def test_scan_record_bans_once() -> None:
    eng, _ = _engine()
    (d,) = eng.entry("journal", _scan("203.0.113.5", PS_PORT="22", PS_PROTO="tcp", PS_SCAN="syn"), 100.0)
    assert d.kind == "ban" and d.ban is not None and d.ban.expires == 160.0
    assert d.ban.info == {"port": "22", "proto": "tcp", "scan": "syn"}  # no PS_MODE in this record
    assert eng.entry("journal", _scan("203.0.113.5"), 101.0) == []  # already banned: nothing runs again


def test_ban_keeps_the_sentry_mode_and_the_matched_text() -> None:
    eng, _ = _engine()
    (d,) = eng.entry("journal", _scan("203.0.113.6", PS_PORT="23", PS_MODE="stcp"), 100.0)
    assert d.ban is not None and d.ban.info["mode"] == "stcp" and d.ban.matches == "attackalert"


def test_forged_record_from_another_uid() -> None:
    eng, _ = _engine()
    (d,) = eng.entry("journal", _scan("203.0.113.5", uid="1000"), 100.0)
    assert d.kind == "forged" and eng.book.get("scan", "203.0.113.5") is None


def test_never_ban_gateway_own_and_ignoreip() -> None:
    import ipaddress

    eng, _ = _engine(ignoreip=(ipaddress.ip_network("198.51.100.0/24"),))
    for ip in ("192.0.2.254", "192.0.2.1", "198.51.100.9", "127.0.0.1"):
        (d,) = eng.entry("journal", _scan(ip), 100.0)
        assert d.kind == "ignored", (ip, d)
    assert len(eng.book) == 0


def test_per_minute_cap() -> None:
    eng, rt = _engine(maxbans_per_minute=3)
    rt.cap = PerMinuteCap(3)
    kinds = [eng.entry("journal", _scan(f"203.0.113.{i}"), 100.0 + i)[0].kind for i in range(5)]
    assert kinds == ["ban", "ban", "ban", "ignored", "ignored"]


def test_hostile_host_values_never_ban() -> None:
    eng, _ = _engine()
    for host in ("1.2.3.4; rm -rf /", "$(reboot)", "evil.example.com", "1.2.3.4 -j ACCEPT"):
        out = eng.entry("journal", _scan(host), 100.0)
        assert [d.kind for d in out] == ["invalid"]
    assert len(eng.book) == 0


def test_entries_for_other_sources_are_not_seen() -> None:
    eng, _ = _engine()
    assert eng.entry("file:/x", _scan("203.0.113.5"), 100.0) == []


def test_unban_and_manual_ban() -> None:
    eng, _ = _engine()
    d = eng.manual_ban("scan", "2001:db8::0:7", 100.0)
    assert d.kind == "ban" and d.ip == "2001:db8::7"
    assert eng.manual_ban("scan", "2001:db8::7", 101.0).kind == "ignored"
    assert [b.ip for b in eng.unban("2001:db8::7")] == ["2001:db8::7"]
    assert eng.unban(None) == []
