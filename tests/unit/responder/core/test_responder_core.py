"""The responder's pure core: jail settings, failures → bans, ban book, never-ban guard, trust."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from portsentinel.responder.config.jailconf import JailConfig, load, parse_duration, split_actions
from portsentinel.responder.core.bans import FOREVER, Ban, BanBook, bantime_for
from portsentinel.responder.core.guard import NeverBan, PerMinuteCap
from portsentinel.responder.core.jail import Failure, Jail
from portsentinel.responder.core.trust import journal_trusted


def _conf(tmp_path: Path, text: str, local: str = "") -> Path:
    (tmp_path / "jail.conf").write_text(text)
    if local:
        (tmp_path / "jail.local").write_text(local)
    return tmp_path


@pytest.mark.parametrize("text,seconds", [("600", 600), ("10m", 600), ("1h", 3600), ("1d", 86400),
                                          ("1w", 604800), ("-1", -1), ("1.5m", 90)])
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "ten", "-5", "1y", "5 mins"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


def test_layered_jail_settings(tmp_path: Path) -> None:
    d = _conf(tmp_path, "[DEFAULT]\nbantime = 10m\nmaxretry = 1\n\n[scan]\nenabled = true\nfilter = portsentinel\n"
                        "action = nftables[name=scan, port=\"22,80\"]\n         route\n\n[off]\nfilter = sshd\n",
              "[scan]\nbantime = 1h\nignoreip = 192.0.2.0/24 2001:db8::/32\n")
    cfg = load(d)
    assert cfg.errors == [] and cfg.disabled == ["off"]
    (j,) = cfg.jails
    assert (j.name, j.filter, j.bantime, j.maxretry) == ("scan", "portsentinel", 3600, 1)
    assert [(a.name, a.args) for a in j.actions] == [("nftables", {"name": "scan", "port": "22,80"}), ("route", {})]
    assert ipaddress.ip_network("2001:db8::/32") in j.ignoreip


def test_a_broken_jail_does_not_take_the_others_down(tmp_path: Path) -> None:
    d = _conf(tmp_path, "[good]\nenabled = true\nfilter = sshd\n\n[bad]\nenabled = true\nfilter = sshd\n"
                        "maxretry = many\n\n[bad2]\nenabled = yes\nfilter = x\nignoreip = 10.0.0.300\n")
    cfg = load(d)
    assert [j.name for j in cfg.jails] == ["good"]
    assert any(e.startswith(f"{d}/jail.conf:8: [bad] maxretry: not an integer") for e in cfg.errors), cfg.errors
    assert any(f"{d}/jail.conf:13: [bad2] ignoreip:" in e for e in cfg.errors), cfg.errors


def test_split_actions_keeps_brackets_together() -> None:
    assert split_actions("a[x=1,\n  y=2]\nb\n\nc[z='q']") == ["a[x=1,\n  y=2]", "b", "c[z='q']"]


def _jail(**kw: object) -> Jail:
    cfg = JailConfig(name="t", where="x", enabled=True, filter="f")
    for k, v in kw.items():
        setattr(cfg, k, v)
    return Jail(cfg)


def test_maxretry_within_findtime() -> None:
    j = _jail(maxretry=3, findtime=10.0)
    assert j.add(Failure("192.0.2.7", 0.0)) is None
    assert j.add(Failure("192.0.2.7", 5.0)) is None
    assert j.add(Failure("192.0.2.7", 11.0)) is None  # the first one fell out of the window
    d = j.add(Failure("192.0.2.7", 12.0))
    assert d is not None and d.failures == 3 and d.host == "192.0.2.7"
    assert j.add(Failure("192.0.2.7", 13.0)) is None  # counting starts again


def test_verified_only() -> None:
    j = _jail(verified_only=True)
    assert j.add(Failure("192.0.2.7", 0.0, verified=False)) is None
    assert j.rejected_unverified == 1
    assert j.add(Failure("192.0.2.7", 0.0, verified=True)) is not None


def test_ban_book_expiry_and_increment() -> None:
    cfg = JailConfig(name="t", where="x", bantime=60, bantime_increment=True, bantime_factor=2, bantime_maxtime=200)
    assert [bantime_for(cfg, n) for n in (1, 2, 3, 4)] == [60, 120, 200, 200]
    cfg.bantime = FOREVER
    assert bantime_for(cfg, 3) == FOREVER
    book = BanBook()
    book.add(Ban("t", "192.0.2.1", 0.0, 10.0))
    book.add(Ban("t", "192.0.2.2", 0.0, 5.0))
    book.add(Ban("t", "192.0.2.3", 0.0, FOREVER))
    assert book.next_expiry() == 5.0
    assert [b.ip for b in book.due(7.0)] == ["192.0.2.2"]
    book.remove("t", "192.0.2.1")
    assert book.next_expiry() is None and len(book) == 1


def test_never_ban() -> None:
    nb = NeverBan(own=["192.0.2.1", "2001:db8::1"], gateways=["192.0.2.254"], resolvers=["198.51.100.53"])
    assert nb.why("192.0.2.254") == "default gateway"
    assert nb.why("2001:db8::1") == "own address"
    assert nb.why("198.51.100.53") == "resolver"
    assert nb.why("127.0.0.1") is not None and nb.why("::1") is not None
    assert nb.why("203.0.113.9", [ipaddress.ip_network("203.0.113.0/24")]) == "ignoreip 203.0.113.0/24"
    assert nb.why("203.0.113.9") is None
    assert nb.why("192.0.2.1", ignoreself=False) is None


def test_per_minute_cap() -> None:
    cap = PerMinuteCap(2)
    assert [cap.allow(t) for t in (0, 1, 2, 59, 60.5, 61.5)] == [True, True, False, False, True, True]
    assert cap.refused == 2


def test_trust() -> None:
    cfg = JailConfig(name="t", where="x", trusted_uids=(0, 101), trusted_units=("portsentinel-detector.service",))
    assert journal_trusted({"_UID": "0"}, cfg) is not None  # a unit is required when one is configured
    assert journal_trusted({"_UID": "101", "_SYSTEMD_UNIT": "portsentinel-detector.service"}, cfg) is None
    assert journal_trusted({"_UID": "1000"}, cfg) is not None
    assert journal_trusted({}, cfg) is not None
    assert journal_trusted({"_UID": "0", "_SYSTEMD_UNIT": "evil.service"}, cfg) is not None
