"""The fleet's jail without I/O: the fleet daemon's lines → remote bans and unbans (responder.core.remote), with
the shipped filter (filter.d/portsentinel-fleet.conf) and the record schema's JSON-lines parser."""

from __future__ import annotations

import ipaddress
import json
from typing import Any

import pytest

from portsentinel import record as R
from portsentinel.responder.config.jailconf import JailConfig
from portsentinel.responder.core import remote
from portsentinel.responder.core.bans import BanBook
from portsentinel.responder.core.engine import Decision, Engine, JailRuntime
from portsentinel.responder.core.guard import NeverBan, PerMinuteCap
from portsentinel.responder.core.jail import Jail
from portsentinel.responder.core.share import record_fields
from portsentinel.responder.core.sources import Entry
from portsentinel.responder.filter.filters import load_filter
from tests.conftest import ROOT

NOW = 1_800_000_000.0
SRC = "file:/var/lib/portsentinel-fleet/remote.jsonl"


class _Offences:
    def offences(self, jail: str, ip: str) -> int:
        return 0


def _fleet_cfg(**kw: Any) -> JailConfig:
    cfg = JailConfig(name="fleet", where="x", enabled=True, filter="portsentinel-fleet", maxbans_per_minute=0,
                     bantime_maxtime=86400.0)
    for k, v in kw.items():
        setattr(cfg, k, v)
    return cfg


def _engine(**kw: Any) -> Engine:
    cfg = _fleet_cfg(**kw)
    fleet = JailRuntime(cfg, load_filter(ROOT / "filter.d", "portsentinel-fleet", {}), Jail(cfg),
                        PerMinuteCap(0), SRC, False)
    local_cfg = JailConfig(name="portsentinel", where="x", enabled=True, filter="portsentinel")
    local = JailRuntime(local_cfg, load_filter(ROOT / "filter.d", "portsentinel", {}), Jail(local_cfg),
                        PerMinuteCap(0), "journal", True)
    never = NeverBan(own=["192.0.2.1"], gateways=["192.0.2.254"], resolvers=["192.0.2.53"])
    return Engine([fleet, local], never, BanBook(), _Offences())


def _line(event: str = "ban", src: str = "203.0.113.7", **kw: Any) -> dict[str, str]:
    out = {"SYSLOG_IDENTIFIER": "portsentinel-fleet", "PS_EVENT": event, "MESSAGE": f"fleet: {src} {event}",
           "PS_SRC": src, "PS_ORIGIN": "host-a", "PS_ORIGIN_JAIL": "portsentinel", "PS_UNTIL": f"{NOW + 600:.3f}",
           "PS_SCAN": "syn", "PS_VERIFIED": "0", "PS_OFFENCE": "1", "PS_ORIGINS": "1", "PS_TIME": f"{NOW:.6f}"}
    out.update({k: str(v) for k, v in kw.items()})
    return {k: v for k, v in out.items() if v != "-"}


def _entry(fields: dict[str, str], trusted: bool = True) -> Entry:
    """As the file source makes it: the JSON line parsed and checked by the record schema."""
    rec = R.from_json_line(json.dumps(fields))
    return Entry(dict(rec.fields), "", "1:2:3", trusted)


def _one(eng: Engine, fields: dict[str, str], now: float = NOW, trusted: bool = True) -> Decision:
    (d,) = eng.entry(SRC, _entry(fields, trusted), now)
    return d


# ---------------------------------------------------------------------------------------- bantime
@pytest.mark.parametrize("origins,expected", [(1, 600.0), (2, 1200.0), (3, 2400.0), (7, 2400.0)])
def test_bantime_is_the_remaining_time_times_the_multiplier_for_the_origins(origins: int, expected: float) -> None:
    assert remote.bantime(_fleet_cfg(), NOW + 600, origins, NOW) == expected


def test_bantime_is_capped_by_maxtime_and_a_past_until_bans_nothing() -> None:
    cfg = _fleet_cfg(bantime_maxtime=1000.0, bantime_fleetmultipliers=(1.0, 3.0))
    assert remote.bantime(cfg, NOW + 600, 1, NOW) == 600.0
    assert remote.bantime(cfg, NOW + 600, 2, NOW) == 1000.0  # 1800 capped
    assert remote.bantime(cfg, NOW, 1, NOW) is None
    assert remote.bantime(cfg, NOW - 5, 3, NOW) is None
    assert remote.multiplier((1.0, 2.0, 4.0), 0) == 1.0


def test_a_remote_ban_bans_at_once_for_its_computed_time_with_its_origin() -> None:
    eng = _engine()
    d = _one(eng, _line(PS_ORIGINS=3))
    assert d.kind == "ban" and d.ban is not None and d.ip == "203.0.113.7"
    assert d.ban.expires == NOW + 2400.0  # 600 s left at the origin, 3 origins: x4
    fields = record_fields(d.ban)
    assert fields[R.F_ORIGIN] == "host-a" and fields[R.F_ORIGIN_JAIL] == "portsentinel"
    assert fields[R.F_ORIGINS] == "3" and float(fields[R.F_UNTIL]) == NOW + 2400.0
    assert R.F_SHARE not in fields  # the fleet jail never shares
    assert _engine().entry(SRC, _entry(_line()), NOW)[0].ban is not None  # maxretry plays no part


def test_a_remote_ban_is_its_origins_offence_with_no_count_here(tmp_path: Any) -> None:
    """The fleet jail counts no offences: a source this host counted 4 times is a remote ban's offence 1 (its
    origin's offence travels in its info), and the store writes no offences row for it (a local ban's it does)."""
    from portsentinel.responder.adapters.store import Store

    class Counted:
        def offences(self, jail: str, ip: str) -> int:
            return 4

    eng = _engine()
    eng.offences = Counted()
    d = _one(eng, _line(PS_OFFENCE=3))
    assert d.ban is not None and d.ban.count == 1 and d.ban.info["origin_offence"] == "3"
    store = Store(str(tmp_path / "r.sqlite3"))
    local = _one(_engine(), _line(src="203.0.113.8"))
    assert local.ban is not None
    local.ban.info.clear()  # (as a local jail's ban: no origin)
    store.commit(added=[d.ban, local.ban])
    assert store.offences("fleet", "203.0.113.7") == 0 and store.offences("fleet", "203.0.113.8") == 1
    assert sorted(b.ip for b in store.bans()) == ["203.0.113.7", "203.0.113.8"]
    store.close()


def test_an_expired_remote_ban_is_counted_not_applied() -> None:
    eng = _engine()
    assert eng.entry(SRC, _entry(_line(PS_UNTIL=f"{NOW - 1:.3f}")), NOW) == []
    assert eng.entry(SRC, _entry(_line(PS_UNTIL=f"{NOW:.3f}")), NOW) == []
    assert len(eng.book) == 0 and eng.jails["fleet"].ignored_total == 2


# ---------------------------------------------------------------------------------------- protected
@pytest.mark.parametrize("addr,why", [("192.0.2.1", "own address"), ("192.0.2.254", "gateway"),
                                      ("192.0.2.53", "resolver"), ("127.0.0.1", "loopback"),
                                      ("198.51.100.20", "ignoreip")])
def test_a_protected_address_is_refused_and_the_refusal_names_the_origin(addr: str, why: str) -> None:
    eng = _engine(ignoreip=(ipaddress.ip_network("198.51.100.0/24"),))
    d = _one(eng, _line(src=addr))
    assert d.kind == "ignored" and "never banned" in d.reason and why in d.reason, d
    assert d.extra[R.F_ORIGIN] == "host-a" and d.extra[R.F_ORIGIN_JAIL] == "portsentinel"
    assert len(eng.book) == 0


def test_a_remote_network_ban_is_narrowed_around_a_protected_address() -> None:
    eng = _engine()
    d = _one(eng, _line(src="192.0.2.0", PS_SRC_NET="192.0.2.0/24"))  # holds this host's 192.0.2.1
    assert d.kind == "ban" and d.ban is not None and d.ip == "192.0.2.0"  # the network's first address alone
    assert "holds protected 192.0.2.1" in d.ban.info["note"] and eng.book.covering("fleet", "192.0.2.1") is None
    d2 = _one(eng, _line(src="203.0.113.0", PS_SRC_NET="203.0.113.0/24"))
    assert d2.kind == "ban" and d2.ip == "203.0.113.0/24" and eng.book.covering("fleet", "203.0.113.99")


# ---------------------------------------------------------------------------------------- garbage
GARBAGE: list[dict[str, str]] = [
    _line(PS_UNTIL="-"),  # a ban without an end
    _line(PS_UNTIL="soon"),
    _line(PS_UNTIL="nan"),
    _line(PS_UNTIL="inf"),
    _line(PS_ORIGIN="-"),
    _line(PS_ORIGIN="host a; rm -rf /"),
    _line(PS_ORIGIN="h" * 65),
    _line(PS_ORIGIN_JAIL="../x"),
    _line(PS_ORIGINS="0"),
    _line(PS_OFFENCE="99999999999"),
    _line(PS_FLEET="1"),  # a fleet-wide line may only unban
    _line(PS_ORIGIN_JAIL="_unban"),
    _line(src="203.0.113.9", PS_SRC_NET="198.51.100.0/24"),  # PS_SRC outside its network
]


@pytest.mark.parametrize("fields", GARBAGE, ids=range(len(GARBAGE)))
def test_a_garbage_line_is_never_a_ban(fields: dict[str, str]) -> None:
    eng = _engine()
    d = _one(eng, fields)
    assert d.kind == "invalid" and d.reason.startswith("fleet line not applied:"), d
    assert len(eng.book) == 0


@pytest.mark.parametrize("text", ['{"PS_SRC": "203.0.113.7"', "[1, 2]", '{"PS_SRC": "example.org", "MESSAGE": "x"}',
                                  '{"PS_SRC": "203.0.113.7", "MESSAGE": "x", "PS_EVENT": "rm"}',
                                  '{"PS_SRC": "203.0.113.7", "MESSAGE": "x", "_UID": "0"}',
                                  '{"PS_SRC": "203.0.113.7", "MESSAGE": "x", "PS_ORIGINS": "many"}'])
def test_lines_the_record_schema_refuses_never_reach_the_jail(text: str) -> None:
    with pytest.raises(R.RecordError):
        R.from_json_line(text)


def test_other_writers_records_and_an_untrusted_file_ban_nothing() -> None:
    eng = _engine()
    assert eng.entry(SRC, _entry(_line(SYSLOG_IDENTIFIER="portsentinel-detector")), NOW) == []
    assert eng.entry(SRC, _entry(_line(PS_EVENT="scan")), NOW) == []
    d = _one(eng, _line(), trusted=False)  # the file's owner or mode is wrong
    assert d.kind == "forged" and len(eng.book) == 0


# ---------------------------------------------------------------------------------------- renewals, unbans
def test_a_repeated_line_changes_nothing_and_more_origins_renew_the_ban() -> None:
    eng = _engine()
    first = _one(eng, _line()).ban
    assert first is not None and first.expires == NOW + 600
    assert eng.entry(SRC, _entry(_line()), NOW + 1) == []  # the same ban again: nothing runs
    d = _one(eng, _line(PS_ORIGINS=2, PS_ORIGIN="host-b"), NOW + 1)
    assert d.kind == "ban" and d.ban is not None and d.ban.expires == NOW + 1 + 2 * 599
    assert d.replaces == [first] and eng.book.get("fleet", "203.0.113.7") is d.ban


def test_an_unban_lifts_only_the_fleet_jails_ban() -> None:
    eng = _engine()
    assert _one(eng, _line()).kind == "ban"
    local = eng.manual_ban("portsentinel", "203.0.113.7", NOW)
    assert local.kind == "ban"
    d = _one(eng, _line("unban", PS_UNTIL="-"))
    assert d.kind == "unban" and [b.jail for b in d.lifts] == ["fleet"] and d.extra[R.F_ORIGIN] == "host-a"
    assert eng.book.get("fleet", "203.0.113.7") is None
    assert eng.book.get("portsentinel", "203.0.113.7") is not None  # a local jail's ban stays
    again = _one(eng, _line("unban"))
    assert again.kind == "unban" and again.lifts == []  # nothing left to lift


@pytest.mark.parametrize("marker", [{}, {"PS_ORIGIN_JAIL": "_unban"}])
def test_an_unban_as_the_daemon_writes_it_counts_no_origin_left(marker: dict[str, str]) -> None:
    """portsentinel-fleet's unban lines carry PS_ORIGINS=0 (no origin bans the source any more)."""
    eng = _engine()
    assert _one(eng, _line()).kind == "ban"
    d = _one(eng, _line("unban", PS_ORIGINS="0", **marker))
    assert d.kind == "unban" and [b.jail for b in d.lifts] == ["fleet"], d


@pytest.mark.parametrize("marker", [{"PS_FLEET": "1"}, {"PS_ORIGIN_JAIL": "_unban"}])
def test_a_fleet_wide_unban_lifts_the_address_from_every_jail(marker: dict[str, str]) -> None:
    eng = _engine()
    assert _one(eng, _line()).kind == "ban"
    assert eng.manual_ban("portsentinel", "203.0.113.7", NOW).kind == "ban"
    assert eng.manual_ban("portsentinel", "203.0.113.8", NOW).kind == "ban"
    d = _one(eng, _line("unban", PS_UNTIL="-", **marker))
    assert d.kind == "unban" and sorted(b.jail for b in d.lifts) == ["fleet", "portsentinel"]
    assert d.extra[R.F_FLEET] == "1"
    assert [b.ip for b in eng.book.active.values()] == ["203.0.113.8"]


# ---------------------------------------------------------------------------------------- share (core.share)
def test_a_sharing_jails_bans_carry_what_the_fleet_publishes() -> None:
    from portsentinel.responder.core.bans import FOREVER

    cfg = JailConfig(name="portsentinel", where="x", enabled=True, filter="portsentinel", share=True, bantime=60)
    rt = JailRuntime(cfg, load_filter(ROOT / "filter.d", "portsentinel", {}), Jail(cfg), PerMinuteCap(0),
                     "journal", True)
    eng = Engine([rt], NeverBan(), BanBook(), _Offences())
    scan = {"SYSLOG_IDENTIFIER": "portsentinel-detector", "PS_EVENT": "scan", "MESSAGE": "attackalert",
            "PS_SRC": "203.0.113.5", "PS_SCAN": "xmas", "PS_MODE": "stcp", "PS_VERIFIED": "0", "_UID": "0"}
    (d,) = eng.entry("journal", Entry(scan, "", "c"), NOW)
    assert d.ban is not None
    assert record_fields(d.ban) == {R.F_SHARE: "1", R.F_OFFENCE: "1", R.F_SCAN: "xmas", R.F_MODE: "stcp",
                                    R.F_VERIFIED: "0", R.F_UNTIL: f"{NOW + 60:.3f}"}
    cfg.bantime = FOREVER
    (d,) = eng.entry("journal", Entry({**scan, "PS_SRC": "203.0.113.6", "PS_VERIFIED": "1"}, "", "c"), NOW)
    assert d.ban is not None and R.F_UNTIL not in record_fields(d.ban)  # for ever: no end to publish
    assert record_fields(d.ban)[R.F_VERIFIED] == "1"
    cfg.share = False
    (d,) = eng.entry("journal", Entry({**scan, "PS_SRC": "203.0.113.7"}, "", "c"), NOW)
    assert d.ban is not None and record_fields(d.ban) == {}  # a jail that does not share: nothing added
