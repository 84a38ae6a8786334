"""IPv6 sources aggregated by prefix (issue 9 §5): record helpers, the detector's keys, the responder's network
bans, the never-ban narrowing, escalation, the ban book's covering lookups and the trap's masked tarpit."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

from portsentinel import record as R
from portsentinel.detector.config.files import load_config
from portsentinel.detector.decide import Decider
from portsentinel.detector.tracker import Tracker, masker
from portsentinel.responder.actions.variables import validate_vars
from portsentinel.responder.config.jailconf import JailConfig, load
from portsentinel.responder.core.bans import Ban, BanBook, src_fields
from portsentinel.responder.core.engine import Engine, JailRuntime
from portsentinel.responder.core.guard import NeverBan, PerMinuteCap
from portsentinel.responder.core.jail import Jail
from portsentinel.responder.core.sources import Entry
from portsentinel.responder.trap import ruleset as T
from portsentinel.responder.trap import settings as S
from tests.conftest import ROOT


# -- record helpers -----------------------------------------------------------------------------------------
def test_source_network_and_canonical_network() -> None:
    assert R.source_network("2001:db8:1:2:aaaa::7") == "2001:db8:1:2::/64"
    assert R.source_network("2001:db8:1:2::7", prefix6=48) == "2001:db8:1::/48"
    assert R.source_network("2001:db8::7", prefix6=128) == "2001:db8::7"
    assert R.source_network("192.0.2.77") == "192.0.2.77"
    assert R.source_network("192.0.2.77", prefix4=24) == "192.0.2.0/24"
    assert R.canonical_network("2001:DB8:0:0::/64") == "2001:db8::/64"
    assert R.canonical_network("192.0.2.7/32") == "192.0.2.7"
    for bad in ("2001:db8::7/64", "10.0.0.0/33", "x/8", "2001:db8::/64; flush ruleset"):
        with pytest.raises(ValueError):
            R.canonical_network(bad)


def test_record_fields_keep_ps_src_an_address() -> None:
    rec = R.validate({R.F_MESSAGE: "m", R.F_SRC: "2001:db8::7", R.F_SRC_NET: "2001:db8::/64"})
    assert rec.get(R.F_SRC_NET) == "2001:db8::/64"
    with pytest.raises(R.RecordError, match="PS_SRC"):
        R.validate({R.F_MESSAGE: "m", R.F_SRC: "2001:db8::/64"})
    with pytest.raises(R.RecordError, match="PS_SRC_NET"):
        R.validate({R.F_MESSAGE: "m", R.F_SRC_NET: "2001:db8::7"})
    assert src_fields("2001:db8::/64", {"src": "2001:db8::7"}) == {"PS_SRC": "2001:db8::7",
                                                                  "PS_SRC_NET": "2001:db8::/64"}
    assert validate_vars({"ip": "2001:db8:1::/48"}) == {"ip": "2001:db8:1::/48", "family": "inet6", "network": True}


# -- detector -----------------------------------------------------------------------------------------------
def _raw(text: str) -> bytes:
    return ipaddress.ip_address(text).packed


def test_masker() -> None:
    net = masker(32, 64)
    assert net(_raw("2001:db8:1:2:3:4:5:6")) == _raw("2001:db8:1:2::")
    assert net(_raw("192.0.2.9")) == _raw("192.0.2.9")
    lan = {_raw("2001:db8:5::")}  # the host's own /64: its hosts are counted one by one
    near = masker(32, 64, lan)
    assert near(_raw("2001:db8:5::77")) == _raw("2001:db8:5::77")
    assert near(_raw("2001:db8:6::77")) == _raw("2001:db8:6::")
    odd = masker(20, 60)
    assert odd(_raw("2001:db8:1:2ff::1")) == _raw("2001:db8:1:2f0::")
    assert odd(_raw("192.0.255.9")) == _raw("192.0.240.0")


def test_rotating_source_is_one_tracked_source_and_record_names_both() -> None:
    tracker = Tracker(trigger=2, window=60, summary_interval=30, max_sources=100)
    decider = Decider(tracker, window=60, max_records_per_second=10, ifname=lambda i: "eth0")
    net = masker(32, 64)
    crossed = None
    for i in range(3):  # three addresses of one /64, one probe each: the trigger (2) is crossed on the third
        src = _raw(f"2001:db8:1:2::{i + 10:x}")
        st = tracker.hit(net(src) + b"\x06", _raw("2001:db8::1"), 6, 100 + i, "syn", "stcp", 0, False, float(i))
        if st is not None:
            st.src = src
            crossed = decider.on_trigger(st, float(i), 1000.0)
    assert len(tracker) == 1 and crossed is not None
    assert crossed.get(R.F_SRC) == "2001:db8:1:2::c" and crossed.get(R.F_SRC_NET) == "2001:db8:1:2::/64"
    assert crossed.get(R.F_HITS) == "3" and crossed.get(R.F_PORTS) == "3"


def test_detector_prefix_keys(tmp_path: Path) -> None:
    conf = tmp_path / "d.conf"
    conf.write_text("[detector]\nipv6_prefix = /56\nipv4_prefix = 24\n")
    cfg, _ = load_config(str(conf))
    assert (cfg.ipv4_prefix, cfg.ipv6_prefix) == (24, 56)
    conf.write_text("[detector]\nipv6_prefix = 129\n")
    with pytest.raises(ValueError, match=r"d.conf:2: ipv6_prefix: .*1 to 128"):
        load_config(str(conf))
    classic = tmp_path / "portsentry.conf"
    classic.write_text('TCP_PORTS="1,11"\nIPV6_PREFIX="48"\n')
    assert load_config(str(classic))[0].ipv6_prefix == 48


# -- responder ----------------------------------------------------------------------------------------------
@dataclass
class _Hit:
    host: str


class _Matcher:
    def match_record(self, fields: Mapping[str, str]) -> _Hit | None:
        return _Hit(fields[R.F_SRC]) if fields.get(R.F_EVENT) == "scan" else None

    def match_line(self, line: str) -> _Hit | None:
        return None


class _Offences:
    def offences(self, jail: str, ip: str) -> int:
        return 0


OWN6 = "2001:db8:5::1"


def _engine(**kw: object) -> tuple[Engine, JailRuntime]:
    cfg = JailConfig(name="scan", where="x", enabled=True, filter="portsentinel", maxretry=1, bantime=600,
                     maxbans_per_minute=5)
    for k, v in kw.items():
        setattr(cfg, k, v)
    rt = JailRuntime(cfg, _Matcher(), Jail(cfg), PerMinuteCap(cfg.maxbans_per_minute), "journal", True)
    never = NeverBan(own=["192.0.2.1", OWN6], gateways=["2001:db8:5::fffe"])
    return Engine([rt], never, BanBook(), _Offences()), rt


def _scan(src: str) -> Entry:
    return Entry({R.F_EVENT: "scan", R.F_SRC: src, R.F_MESSAGE: "attackalert", "_UID": "0"}, "", "c")


def test_rotating_ipv6_scanner_is_one_ban_and_one_against_the_cap() -> None:
    eng, rt = _engine()
    decisions = [d for i in range(91) for d in eng.entry("journal", _scan(f"2001:db8:7:8::{i + 1:x}"), 100.0 + i)]
    assert [(d.kind, d.ip) for d in decisions] == [("ban", "2001:db8:7:8::/64")]
    assert decisions[0].ban is not None and decisions[0].ban.info["src"] == "2001:db8:7:8::1"
    assert rt.cap.refused == 0 and len(eng.book) == 1
    # IPv4 stays per address.
    v4 = [d.ip for i in range(3) for d in eng.entry("journal", _scan(f"203.0.113.{i + 1}"), 300.0)]
    assert v4 == ["203.0.113.1", "203.0.113.2", "203.0.113.3"]
    # unban by any address of the network lifts the network's ban
    assert [b.ip for b in eng.unban("2001:db8:7:8::99")] == ["2001:db8:7:8::/64"]


def test_prefix_with_a_protected_address_falls_back_to_the_address() -> None:
    eng, _ = _engine()
    (d,) = eng.entry("journal", _scan("2001:db8:5::80"), 100.0)
    assert d.kind == "ban" and d.ban is not None and d.ip == "2001:db8:5::80"
    assert "2001:db8:5::/64 holds protected 2001:db8:5::1 (own address)" in d.ban.info["note"]
    assert "src" not in d.ban.info
    # ignoreip counts too; the address itself stays never banned
    eng2, _ = _engine(ignoreip=(ipaddress.ip_network("2001:db8:9:0:8000::/65"),))
    (d2,) = eng2.entry("journal", _scan("2001:db8:9::7"), 100.0)
    assert d2.ip == "2001:db8:9::7" and "ignoreip 2001:db8:9:0:8000::/65" in d2.ban.info["note"]  # type: ignore[union-attr]
    (d4,) = eng2.entry("journal", _scan("2001:db8:10::7"), 100.0)
    assert d4.ip == "2001:db8:10::/64"
    (d3,) = eng2.entry("journal", _scan(OWN6), 100.0)
    assert d3.kind == "ignored" and "own address" in d3.reason


def test_escalation_to_the_wider_network() -> None:
    eng, rt = _engine(ban_prefix_v6_escalate=48, ban_prefix_v6_escalate_after=3, ban_prefix_v6_escalate_window=60.0)
    first = [d for i in range(2) for d in eng.entry("journal", _scan(f"2001:db8:beef:{i}::7"), 100.0 + i)]
    assert [d.ip for d in first] == ["2001:db8:beef::/64", "2001:db8:beef:1::/64"]
    (third,) = eng.entry("journal", _scan("2001:db8:beef:2::7"), 103.0)
    assert third.ip == "2001:db8:beef::/48" and third.ban is not None and "escalated" in third.ban.info["note"]
    assert sorted(b.ip for b in third.replaces) == ["2001:db8:beef:1::/64", "2001:db8:beef::/64"]
    assert [b.ip for b in eng.book.active.values()] == ["2001:db8:beef::/48"]
    assert eng.entry("journal", _scan("2001:db8:beef:77::1"), 104.0) == []  # covered by the /48
    # outside the window the count starts again; a /48 holding a protected address is never escalated to
    eng2, _ = _engine(ban_prefix_v6_escalate=48, ban_prefix_v6_escalate_after=2, ban_prefix_v6_escalate_window=10.0)
    assert eng2.entry("journal", _scan("2001:db8:cafe:1::1"), 0.0)[0].ip == "2001:db8:cafe:1::/64"
    assert eng2.entry("journal", _scan("2001:db8:cafe:2::1"), 20.0)[0].ip == "2001:db8:cafe:2::/64"
    eng2.entry("journal", _scan("2001:db8:5:1::1"), 30.0)
    (near,) = eng2.entry("journal", _scan("2001:db8:5:2::1"), 31.0)
    assert near.ip == "2001:db8:5:2::/64" and near.ban is not None and "no escalation" in near.ban.info["note"]


def test_ban_book_covering_and_inside() -> None:
    book = BanBook()
    book.add(Ban("j", "2001:db8::/48", 0.0, 100.0))
    book.add(Ban("j", "192.0.2.7", 0.0, 100.0))
    assert book.covering("j", "2001:db8:0:5::1") is not None and book.covering("k", "2001:db8::1") is None
    assert book.covering("j", "2001:db8:1::1") is None and book.covering("j", "192.0.2.7") is not None
    book.add(Ban("j", "2001:db8:1:2::/64", 0.0, 50.0))
    assert [b.ip for b in book.inside("j", "2001:db8:1::/48")] == ["2001:db8:1:2::/64"]
    assert [b.ip for b in book.due(60.0)] == ["2001:db8:1:2::/64"]
    assert book.covering("j", "2001:db8:1:2::1") is None


def test_jail_prefix_keys(tmp_path: Path) -> None:
    (tmp_path / "jail.conf").write_text("[a]\nenabled = true\nfilter = f\nban_prefix_v6 = 56\n"
                                        "ban_prefix_v6_escalate = /40\n[b]\nenabled = true\nfilter = f\n"
                                        "ban_prefix_v6 = 48\nban_prefix_v6_escalate = 56\n")
    cfg = load(tmp_path)
    assert [(j.name, j.ban_prefix_v6, j.ban_prefix_v6_escalate, j.ban_prefix_v4) for j in cfg.jails] == \
        [("a", 56, 40, 32)]
    assert any("jail.conf:10: [b] ban_prefix_v6_escalate: /56 must be wider" in e for e in cfg.errors), cfg.errors
    shipped = load(ROOT)
    main = next(j for j in shipped.jails if j.name == "portsentinel")
    assert (main.ban_prefix_v4, main.ban_prefix_v6, main.ban_prefix_v6_escalate) == (32, 64, 0)
    assert [a.name for a in main.actions] == ["nftables", "kernel-trap"]


# -- kernel trap ------------------------------------------------------------------------------------------
def test_trap_tarpit_holds_the_network_and_near_sources_by_address() -> None:
    s = S.settings_from({"shape": "list", "tcp_ports": "1", "udp_ports": "", "maxretry": "2"}, "j", prefix6=64)
    text = T.install_script(s, {}, ["2001:db8:5::1", "192.0.2.1"])
    assert "ip6 saddr & ffff:ffff:ffff:ffff:: @j_t6 counter" in text
    assert "ip6 saddr @j_near6 add @j_t6 { ip6 saddr }" in text
    assert "add @j_t6 { ip6 saddr & ffff:ffff:ffff:ffff:: }" in text
    assert "add element inet portsentinel j_near6 { 2001:db8:5::/64 }" in text
    assert "ip saddr & " not in text and "add @j_t4 { ip saddr }" in text  # IPv4 per address
    assert "j_b6 { type ipv6_addr; flags interval,timeout; }" in text
    assert s.maxretry == 2
    whole = S.settings_from({}, "j", prefix6=128)
    assert "&" not in T.install_script(whole, {}, [])
    assert "tcp 1-112,114-138,140-1024 (1022 ports)" in S.describe(S.settings_from({"protocol": "tcp"}, "j"))
