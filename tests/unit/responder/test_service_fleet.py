"""The responder's fleet wiring without a kernel (no actions): a sharing jail's decision records and the wake
datagram, the [fleet] jail following a JSON-lines file as the fleet daemon writes it, and ``unban --fleet``."""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from portsentinel.common.wake import WakeSocket
from portsentinel.responder.adapters.decisions import DecisionLog
from portsentinel.responder.service import Options, Responder
from tests.conftest import ROOT

JAILS = """[DEFAULT]
backend = pyinotify
action =
maxbans_per_minute = 0

[shared]
enabled = true
filter = portsentinel
share = true
logpath = {tmp}/alerts.jsonl

[fleet]
enabled = true
filter = portsentinel-fleet
logpath = {tmp}/remote.jsonl
logowner = {uid}
bantime.maxtime = 1h
"""


def _start(tmp_path: Path, state: str = "state") -> Responder:
    """A responder on the test's files, loaded (sources open at their stored cursors), not running."""
    conf = tmp_path / "conf"
    if not conf.exists():
        conf.mkdir()
        (conf / "filter.d").symlink_to(ROOT / "filter.d")
        (conf / "actions.d").symlink_to(ROOT / "actions.d")
        (conf / "jail.conf").write_text(JAILS.format(tmp=tmp_path, uid=os.geteuid()))
        for name in ("alerts.jsonl", "remote.jsonl"):
            (tmp_path / name).write_text("")
            os.chmod(tmp_path / name, 0o640)
    r = Responder(Options(conf, tmp_path / state, str(tmp_path / "ctl.sock"), backend="pyinotify",
                          wake=str(tmp_path / "w.sock"), decisions_jsonl=str(tmp_path / "decisions.jsonl"),
                          rearm="", fleet_wake=str(tmp_path / "fleet.wake")))
    r.decisions = r.reporter.decisions = DecisionLog(str(tmp_path / "decisions.jsonl"), use_journal=False)
    r.load()
    assert r.errors == [] and sorted(r.engine.jails) == ["fleet", "shared"]
    return r


def _close(r: Responder) -> None:
    for src in r.sources.values():
        src.close()
    r.store.close()
    r.decisions.close()
    r.rearm.close()
    r.host.close()
    r.sel.close()


@pytest.fixture
def responder(tmp_path: Path) -> Iterator[tuple[Responder, Path, socket.socket]]:
    wake = WakeSocket(str(tmp_path / "fleet.wake"))
    r = _start(tmp_path)
    try:
        yield r, tmp_path, wake.sock
    finally:
        _close(r)
        wake.close()


def _append(path: Path, *records: dict[str, str]) -> None:
    with path.open("a") as f:
        for rec in records:
            f.write(json.dumps(rec) + "\n")


def _decisions(tmp: Path) -> list[dict[str, str]]:
    path = tmp / "decisions.jsonl"
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


def _woken(sock: socket.socket) -> int:
    sock.setblocking(False)
    n = 0
    try:
        while True:
            sock.recv(16)
            n += 1
    except BlockingIOError:
        return n


def test_a_sharing_jails_ban_and_unban_records_carry_the_fleets_fields_and_wake_it(
        responder: tuple[Responder, Path, socket.socket]) -> None:
    r, tmp, wake = responder
    _append(tmp / "alerts.jsonl", {"SYSLOG_IDENTIFIER": "portsentinel-detector", "PS_EVENT": "scan",
                                   "MESSAGE": "attackalert", "PS_SRC": "203.0.113.5", "PS_SCAN": "syn",
                                   "PS_MODE": "stcp", "PS_VERIFIED": "1", "PS_PORT": "23", "PS_PROTO": "tcp"})
    assert r.pump(f"file:{tmp}/alerts.jsonl") == 1
    assert _woken(wake) == 0  # only at the end of the turn, once its decisions are flushed
    r.reporter.turn_done()
    assert _woken(wake) == 1
    (ban,) = [d for d in _decisions(tmp) if d["PS_EVENT"] == "ban"]
    assert ban["PS_SHARE"] == "1" and ban["PS_JAIL"] == "shared" and ban["PS_SRC"] == "203.0.113.5"
    assert (ban["PS_SCAN"], ban["PS_MODE"], ban["PS_VERIFIED"], ban["PS_OFFENCE"]) == ("syn", "stcp", "1", "1")
    assert abs(float(ban["PS_UNTIL"]) - (float(ban["PS_TIME"]) + 3600)) < 30
    assert r.control_request({"cmd": "unban", "ip": "203.0.113.5"})["ok"]
    r.reporter.turn_done()
    assert _woken(wake) == 1
    (unban,) = [d for d in _decisions(tmp) if d["PS_EVENT"] == "unban"]
    assert unban["PS_SHARE"] == "1" and unban["PS_UNTIL"] == ban["PS_UNTIL"] and unban["PS_JAIL"] == "shared"
    r.reporter.turn_done()
    assert _woken(wake) == 0  # nothing shared since


def test_the_wake_up_carries_the_turns_shared_decisions_as_written(
        responder: tuple[Responder, Path, socket.socket]) -> None:
    """The fleet daemon publishes them from the datagram without waiting for journald (docs/fleet.md)."""
    r, tmp, wake = responder
    for i in (1, 2):
        _append(tmp / "alerts.jsonl", {"SYSLOG_IDENTIFIER": "portsentinel-detector", "PS_EVENT": "scan",
                                       "MESSAGE": "attackalert", "PS_SRC": f"203.0.113.{10 + i}", "PS_SCAN": "syn",
                                       "PS_MODE": "stcp", "PS_VERIFIED": "1", "PS_PORT": "23", "PS_PROTO": "tcp"})
    assert r.pump(f"file:{tmp}/alerts.jsonl") == 2
    r.reporter.turn_done()
    wake.setblocking(False)
    carried = [json.loads(x) for x in wake.recv(65536).decode().splitlines()]
    written = [d for d in _decisions(tmp) if d["PS_EVENT"] == "ban"]
    assert len(carried) == 2 and carried == written  # the records already written, field for field
    assert _woken(wake) == 0


def _remote(event: str, src: str, origin: str = "host-a", **kw: str) -> dict[str, str]:
    import time

    rec = {"SYSLOG_IDENTIFIER": "portsentinel-fleet", "PS_EVENT": event, "MESSAGE": f"fleet: {src} {event}",
           "PS_SRC": src, "PS_ORIGIN": origin, "PS_ORIGIN_JAIL": "portsentinel",
           "PS_UNTIL": f"{time.time() + 600:.3f}", "PS_OFFENCE": "1", "PS_ORIGINS": "1"}
    rec.update(kw)
    return rec


def test_the_fleet_jail_follows_the_daemons_file(responder: tuple[Responder, Path, socket.socket]) -> None:
    r, tmp, wake = responder
    remote = tmp / "remote.jsonl"
    name = f"file:{remote}"
    _append(remote, _remote("ban", "198.51.100.7", PS_ORIGINS="2"), _remote("ban", "127.0.0.1"))
    with remote.open("a") as f:
        f.write("not json\n")
    _append(remote, _remote("ban", "198.51.100.8", PS_UNTIL="1000.0"), _remote("ban", "198.51.100.9"),
            _remote("unban", "198.51.100.9"))
    assert r.pump(name) == 6
    r.reporter.turn_done()
    ban = r.book.get("fleet", "198.51.100.7")
    assert ban is not None and 1150 < ban.bantime <= 1201  # 600 s left, 2 origins: x2
    assert r.book.get("fleet", "198.51.100.9") is None and len(r.book) == 1
    out = _decisions(tmp)
    bans = {d["PS_SRC"]: d for d in out if d["PS_EVENT"] == "ban"}
    assert sorted(bans) == ["198.51.100.7", "198.51.100.9"]  # .9 banned, then lifted by the next line
    assert bans["198.51.100.9"]["PS_ORIGIN"] == "host-a"
    b = bans["198.51.100.7"]
    assert b["PS_ORIGIN"] == "host-a" and b["PS_ORIGINS"] == "2" and "PS_SHARE" not in b
    assert "PS_DETAIL" not in b  # (a catch-up's ban records may then be aggregated)
    refused = [d for d in out if d["PS_EVENT"] == "ignored" and d.get("PS_SRC") == "127.0.0.1"]
    assert refused and refused[0]["PS_ORIGIN"] == "host-a" and "never banned" in refused[0]["MESSAGE"]
    assert any("not JSON" in d["MESSAGE"] for d in out if d["PS_EVENT"] == "ignored")
    assert not [d for d in out if d.get("PS_SRC") == "198.51.100.8"]  # over at its origin: counted only
    assert r.engine.jails["fleet"].ignored_total == 2  # it, and the refused 127.0.0.1
    (unban,) = [d for d in out if d["PS_EVENT"] == "unban"]
    assert unban["PS_SRC"] == "198.51.100.9" and unban["PS_ORIGIN"] == "host-a" and unban["PS_JAIL"] == "fleet"
    r.reporter.turn_done()
    assert _woken(wake) == 0  # the fleet jail's decisions are never shared
    os.chmod(remote, 0o666)  # now anyone could write it: nothing in it counts
    _append(remote, _remote("ban", "198.51.100.10"))
    assert r.pump(name) == 1 and r.book.get("fleet", "198.51.100.10") is None


def test_a_file_of_another_owner_is_not_trusted(tmp_path: Path) -> None:
    from portsentinel.responder.config.jailconf import load

    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "jail.conf").write_text(JAILS.format(tmp=tmp_path, uid=os.geteuid() + 4242))
    (fleet,) = [j for j in load(conf).jails if j.name == "fleet"]
    assert fleet.file_owner == os.geteuid() + 4242 and fleet.trusted_uids == (0,)


def test_unban_fleet_lifts_everywhere_and_hands_the_unban_to_the_fleet(
        responder: tuple[Responder, Path, socket.socket]) -> None:
    r, tmp, wake = responder
    _append(tmp / "remote.jsonl", _remote("ban", "198.51.100.20"))
    r.pump(f"file:{tmp}/remote.jsonl")
    assert r.control_request({"cmd": "ban", "jail": "shared", "ip": "198.51.100.20"})["ok"]
    _woken(wake)
    bad = r.control_request({"cmd": "unban", "ip": "not-an-address", "fleet": True})
    assert not bad["ok"] and "not-an-address" in bad["error"]
    a = r.control_request({"cmd": "unban", "ip": "198.51.100.20", "fleet": True})
    assert a["ok"] and sorted(b["jail"] for b in a["unbanned"]) == ["fleet", "shared"] and len(r.book) == 0
    r.reporter.turn_done()
    assert _woken(wake) == 1
    (marker,) = [d for d in _decisions(tmp) if d.get("PS_FLEET") == "1"]
    assert (marker["PS_EVENT"], marker["PS_SHARE"], marker["PS_SRC"]) == ("unban", "1", "198.51.100.20")


def test_an_incoming_fleet_wide_unban_lifts_every_local_jail(
        responder: tuple[Responder, Path, socket.socket]) -> None:
    r, tmp, _ = responder
    assert r.control_request({"cmd": "ban", "jail": "shared", "ip": "198.51.100.30"})["ok"]
    _append(tmp / "remote.jsonl", _remote("ban", "198.51.100.30"),
            _remote("unban", "198.51.100.30", origin="host-c", PS_ORIGIN_JAIL="_unban"))
    r.pump(f"file:{tmp}/remote.jsonl")
    r.reporter.turn_done()
    assert len(r.book) == 0
    unbans = [d for d in _decisions(tmp) if d["PS_EVENT"] == "unban"]
    assert sorted(d["PS_JAIL"] for d in unbans) == ["fleet", "shared"]
    assert all("fleet-wide unban from host-c" in d["MESSAGE"] for d in unbans)


def test_the_fleet_file_is_read_from_its_start_the_first_time_then_from_the_cursor(tmp_path: Path) -> None:
    first = _start(tmp_path, "state1")  # makes the files; its own sources start at the end (no cursor)...
    name = f"file:{tmp_path}/remote.jsonl"
    _close(first)
    _append(tmp_path / "remote.jsonl", _remote("ban", "198.51.100.40"), _remote("ban", "198.51.100.41"),
            _remote("unban", "198.51.100.41"), _remote("ban", "198.51.100.42", PS_UNTIL="1000.0"))
    r = _start(tmp_path, "state2")  # a responder without a cursor: a fresh install, or the jail just enabled
    try:
        assert r.pump(name) == 4
        assert [b.ip for b in r.book.active.values()] == ["198.51.100.40"]
    finally:
        _close(r)
    again = _start(tmp_path, "state2")  # restarted: from its cursor, nothing read twice
    try:
        assert again.pump(name) == 0
        _append(tmp_path / "remote.jsonl", _remote("ban", "198.51.100.43"))
        assert again.pump(name) == 1 and again.book.get("fleet", "198.51.100.43") is not None
    finally:
        _close(again)


def test_more_origins_renew_a_remote_ban(responder: tuple[Responder, Path, socket.socket]) -> None:
    r, tmp, _ = responder
    name = f"file:{tmp}/remote.jsonl"
    _append(tmp / "remote.jsonl", _remote("ban", "198.51.100.50"))
    r.pump(name)
    first = r.book.get("fleet", "198.51.100.50")
    assert first is not None and 590 < first.bantime <= 601  # (PS_UNTIL has 3 decimals)
    _append(tmp / "remote.jsonl", _remote("ban", "198.51.100.50", origin="host-b", PS_ORIGINS="3"))
    r.pump(name)
    r.reporter.turn_done()
    renewed = r.book.get("fleet", "198.51.100.50")
    assert renewed is not None and renewed is not first and 2350 < renewed.bantime <= 2401  # x4, from now
    assert [(b.ip, b.expires) for b in r.store.bans()] == [("198.51.100.50", renewed.expires)]
    out = [d for d in _decisions(tmp) if d.get("PS_SRC") == "198.51.100.50"]
    assert [d["PS_EVENT"] for d in out] == ["ban", "unban", "ban"]
    assert "renewed from the fleet" in out[1]["PS_DETAIL"] and out[2]["PS_ORIGINS"] == "3"
    _append(tmp / "remote.jsonl", _remote("ban", "198.51.100.50", origin="host-c", PS_ORIGINS="2"))
    r.pump(name)  # ends sooner than the ban in force: nothing happens
    assert r.book.get("fleet", "198.51.100.50") is renewed
