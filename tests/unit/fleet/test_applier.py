"""portsentinel.fleet.applier: origin from the key, allow-lists, caps, PS_ORIGINS, deletes and fleet-wide unbans."""

from __future__ import annotations

from portsentinel import record as R
from portsentinel.fleet import codec as C
from portsentinel.fleet.applier import DEL, PUT, Applier
from portsentinel.fleet.config import FleetConfig
from portsentinel.fleet.lines import to_record

NOW = 1_764_490_000.0


def cfg(**over: object) -> FleetConfig:
    base: dict[str, object] = {"host": "e", "origin_rate": 5, "origin_max": 10}
    base.update(over)
    return FleetConfig(**base)  # type: ignore[arg-type]


def put(ap: Applier, origin: str, addr: str, *, jail: str = "portsentinel", until: float = NOW + 600,
        live: bool = True, now: float = NOW, at: float = NOW - 1) -> C.Ban | None:
    from portsentinel.fleet.keys import make_key

    value = C.encode_ban(C.Ban(addr, jail, until, "syn", 0, 1, at))
    out = ap.entry(make_key(origin, jail, addr), PUT, value, now, live=live)
    return None if out.line is None else ap.bans[(origin, jail, addr)]


def test_origin_comes_from_the_key_and_counts_origins() -> None:
    ap = Applier(cfg())
    value = C.encode_ban(C.Ban("203.0.113.7", "portsentinel", NOW + 60, "syn", 1, 3, NOW))
    out = ap.entry("a.portsentinel.203-0-113-7", PUT, value, NOW, live=True)
    assert out.line is not None and out.line.origin == "a" and out.line.origins == 1
    out = ap.entry("b.portsentinel.203-0-113-7", PUT, value, NOW, live=True)
    assert out.line is not None and out.line.origin == "b" and out.line.origins == 2
    rec = to_record(out.line, NOW)
    assert R.validate(dict(rec.fields)) == rec  # made without the checks, passes them
    assert rec.get(R.F_ORIGIN) == "b" and rec.get(R.F_ORIGINS) == "2" and rec.get(R.F_IDENT) == "portsentinel-fleet"
    assert rec.src == "203.0.113.7" and float(rec.get(R.F_UNTIL)) == NOW + 60 and rec.get(R.F_VERIFIED) == "1"


def test_own_keys_untrusted_origins_and_bad_values() -> None:
    ap = Applier(cfg(origins=frozenset({"a"})))
    assert put(ap, "e", "192.0.2.1") is None and not ap.bans  # our own, echoed back
    out = ap.entry("x.portsentinel.192-0-2-1", PUT, b"{}", NOW, live=True)
    assert out.refused == "origin x is not in origins" and out.origin == "x"
    out = ap.entry("a.portsentinel.192-0-2-1", PUT, b'{"v":1}', NOW, live=True)
    assert out.refused and "missing" in out.refused
    out = ap.entry("a.portsentinel.192-0-2-01", PUT, b"{}", NOW, live=True)
    assert out.refused and "bad address token" in out.refused
    assert not ap.bans


def test_rate_cap_applies_to_live_updates_only() -> None:
    ap = Applier(cfg(origin_rate=3, origin_max=100))
    accepted = [put(ap, "a", f"198.51.100.{i}", live=True) is not None for i in range(1, 6)]
    assert accepted == [True, True, True, False, False]
    assert put(ap, "a", "198.51.100.9", live=True, now=NOW + 61) is not None  # the window moved on
    assert put(ap, "b", "198.51.100.10", live=True) is not None  # per origin
    assert all(put(ap, "c", f"198.51.100.{i}", live=False) is not None for i in range(20, 40))  # catch-up


def test_active_cap_holds_in_catch_up_and_renewals_are_free() -> None:
    ap = Applier(cfg(origin_max=4, origin_rate=1000))
    results = [put(ap, "a", f"198.51.100.{i}", live=False) is not None for i in range(1, 8)]
    assert results.count(True) == 4 and ap.active["a"] == 4
    assert put(ap, "a", "198.51.100.1", live=False, until=NOW + 900) is not None  # renewal
    assert ap.bans[("a", "portsentinel", "198.51.100.1")].until == NOW + 900


def test_delete_unbans_only_a_running_ban_nobody_else_holds() -> None:
    ap = Applier(cfg())
    put(ap, "a", "203.0.113.7")
    put(ap, "b", "203.0.113.7")
    assert ap.entry("a.portsentinel.203-0-113-7", DEL, b"", NOW, live=True).line is None  # b still bans it
    out = ap.entry("b.portsentinel.203-0-113-7", DEL, b"", NOW, live=True)
    assert out.line is not None and out.line.event == "unban" and out.line.origins == 0
    put(ap, "a", "203.0.113.8", until=NOW + 10)
    assert ap.entry("a.portsentinel.203-0-113-8", DEL, b"", NOW + 10.5, live=True).line is None  # ran out


def test_expire_forgets_and_origins_count_running_bans_only() -> None:
    ap = Applier(cfg())
    put(ap, "a", "203.0.113.7", until=NOW + 10)
    put(ap, "b", "203.0.113.7", until=NOW + 100)
    assert ap.origins_of("203.0.113.7", NOW + 20) == 1
    assert ap.expire(NOW + 20) == 1 and list(ap.bans) == [("b", "portsentinel", "203.0.113.7")]
    changes = ap.take_changes()
    assert changes[("a", "portsentinel", "203.0.113.7")] is None
    assert changes[("b", "portsentinel", "203.0.113.7")] is not None and not ap.changed


def test_fleet_wide_unban_marker() -> None:
    ap = Applier(cfg(unban_origins=frozenset({"admin"})))
    put(ap, "a", "203.0.113.7")
    marker = C.encode_unban(C.Unban("203.0.113.7", NOW, NOW + 3600))
    refused = ap.entry("a._unban.203-0-113-7", PUT, marker, NOW, live=True)
    assert refused.refused == "origin a is not in unban_origins" and ap.bans
    out = ap.entry("admin._unban.203-0-113-7", PUT, marker, NOW, live=True)
    assert out.line is not None and out.line.event == "unban" and out.line.origin_jail == "_unban"
    assert out.delete_own == ("203.0.113.7",) and not ap.bans
    rec = to_record(out.line, NOW)
    assert rec.get(R.F_EVENT) == "unban" and R.validate(dict(rec.fields)) == rec
    assert put(ap, "b", "203.0.113.7", at=NOW - 5) is None  # made before the marker: void
    assert put(ap, "b", "203.0.113.7", at=NOW + 1, now=NOW + 2) is not None  # a new ban after it counts


def test_own_unban_marker_is_honoured() -> None:
    ap = Applier(cfg())
    put(ap, "a", "203.0.113.7")
    marker = C.encode_unban(C.Unban("203.0.113.7", NOW, NOW + 3600))
    out = ap.entry("e._unban.203-0-113-7", PUT, marker, NOW, live=True)
    assert out.line is not None and out.delete_own == ("203.0.113.7",)


def test_network_ban_line() -> None:
    ap = Applier(cfg())
    value = C.encode_ban(C.Ban("2001:db8:1:2::/64", "portsentinel", NOW + 60, "", 0, 1, NOW))
    out = ap.entry("a.portsentinel.2001_db8_1_2__=64", PUT, value, NOW, live=True)
    assert out.line is not None
    rec = to_record(out.line, NOW)
    assert R.validate(dict(rec.fields)) == rec
    assert rec.src == "2001:db8:1:2::" and rec.get(R.F_SRC_NET) == "2001:db8:1:2::/64" and not rec.get(R.F_SCAN)


def test_load_keeps_running_bans_without_caps() -> None:
    ap = Applier(cfg(origin_max=1))
    bans = [("a", C.Ban(f"198.51.100.{i}", "j", NOW + 60, at=NOW)) for i in range(3)]
    ap.load([*bans, ("a", C.Ban("198.51.100.9", "j", NOW - 1, at=NOW - 9))], NOW)
    assert len(ap.bans) == 3 and not ap.changed
