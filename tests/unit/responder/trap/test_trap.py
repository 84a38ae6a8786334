"""responder.trap.ruleset (pure ruleset and decisions), the NFLOG parser and the /proc/net listener reader."""

from __future__ import annotations

import ipaddress
import socket
import struct
from pathlib import Path

import pytest

from portsentinel.responder.actions.action import load_action
from portsentinel.responder.adapters import nflog
from portsentinel.responder.adapters.listening import listening_ports
from portsentinel.responder.config.jailconf import JailConfig, load
from portsentinel.responder.core.bans import BanBook
from portsentinel.responder.core.engine import Engine, JailRuntime
from portsentinel.responder.core.guard import NeverBan, PerMinuteCap
from portsentinel.responder.core.jail import Jail
from portsentinel.responder.trap import hits as H
from portsentinel.responder.trap import ruleset as T
from portsentinel.responder.trap import settings as S
from portsentinel.responder.trap.escalation import escalate
from tests.conftest import ROOT


def _settings(args: str = "", jail: str = "trap") -> S.TrapSettings:
    action = load_action(ROOT / "actions.d", f"kernel-trap[{args}]" if args else "kernel-trap", jail)
    assert action.options[S.MARKER] == "yes"
    return S.settings_from(action.params, jail)


def test_shipped_defaults_are_portsentry_advanced() -> None:
    s = _settings()
    assert (s.name, s.table, s.shape, s.protocols, s.tarpit, s.size) == ("trap", "portsentinel", "advanced",
                                                                         ("tcp", "udp", "sctp", "ip"), 60, 65536)
    assert s.trap_ports("tcp") == frozenset(range(1, 1025)) - {113, 139}
    assert s.trap_ports("udp") == frozenset(range(1, 1025)) - {520, 138, 137, 67}
    lst = _settings("shape=list, protocol=tcp")
    assert 31337 in lst.trap_ports("tcp") and len(lst.trap_ports("tcp")) == 26 and lst.trap_ports("udp") == set()


@pytest.mark.parametrize(("args", "key"), [
    ("shape=stealth", "shape"), ("protocol=icmp", "protocol"), ("tcp_bound=70000", "tcp_bound"),
    ("tcp_exclude=0", "tcp_exclude"), ("tcp_exclude=abc", "tcp_exclude"), ("tarpit=soon", "tarpit"),
    ("tarpit=0", "tarpit"), ("size=0", "size"), ("rate=10/fortnight", "rate"), ("rate=0/second", "rate"),
    ("nflog_group=0", "nflog_group"), ("socket_match=maybe", "socket_match"), ("never=10.0.0.300", "never"),
    ('shape=list, protocol="tcp, udp", tcp_ports="", udp_ports=""', "tcp_ports"), ("table=1bad", "table"),
])
def test_bad_settings_name_their_key(args: str, key: str) -> None:
    with pytest.raises(S.TrapError) as exc:
        _settings(args)
    assert exc.value.key == key


def test_check_config_reports_a_bad_trap_with_its_place(tmp_path: Path) -> None:
    import shutil

    shutil.copytree(ROOT / "actions.d", tmp_path / "actions.d")
    shutil.copytree(ROOT / "filter.d", tmp_path / "filter.d")
    (tmp_path / "jail.conf").write_text("[a]\nenabled = true\nfilter = portsentinel\naction = kernel-trap[size=-4]\n"
                                        "[b]\nenabled = true\nfilter = portsentinel\naction = kernel-trap\n")
    cfg = load(tmp_path)
    assert [j.name for j in cfg.jails] == ["b"]
    assert len(cfg.errors) == 1 and "jail.conf:4: a: action kernel-trap: size:" in cfg.errors[0]


def test_ranges_merge_ports() -> None:
    assert S.port_ranges([5, 1, 2, 3, 7, 8, 65535]) == ["1-3", "5", "7-8", "65535"]
    assert S.port_ranges([]) == []


def test_never_networks_merge_and_split_families() -> None:
    v4, v6 = T.never_networks(["10.0.0.1", "10.0.0.0/8", "::ffff:192.0.2.1", "fe80::1%eth0", "2001:db8::/32",
                               "2001:db8::5", "junk", ipaddress.ip_network("192.0.2.0/30")])
    assert v4 == ["10.0.0.0/8", "192.0.2.0/30"]
    assert v6 == ["2001:db8::/32", "fe80::1"]


def _rules(text: str, chain: str) -> list[str]:
    prefix = f"add rule inet portsentinel {chain} "
    return [line[len(prefix):] for line in text.splitlines() if line.startswith(prefix)]


def test_ruleset_order_puts_safety_first() -> None:
    s = _settings("tcp_bound=100, never=192.0.2.0/24")
    text = T.install_script(s, {"tcp": [22, 80], "udp": [53]}, ["198.51.100.1", "2001:db8::1"])
    rules = _rules(text, "trap_trap")
    order = [next(i for i, r in enumerate(rules) if key in r) for key in
             ('iif "lo"', "ct state established,related", "fib saddr type local", "@trap_never4", "@trap_never6",
              "ip saddr @trap_t4", "ip6 saddr @trap_t6", "@trap_b4", "tcp dport @trap_tcp", "udp dport @trap_udp")]
    assert order == sorted(order)
    assert all(r.endswith("return") for r in rules[:5])
    assert rules[5].endswith("drop") and rules[7].endswith("drop")
    catch = _rules(text, "trap_catch")
    assert catch[0] == "socket transparent { 0, 1 } return"
    assert catch[1].startswith("limit rate over 100/second burst 200 packets") and catch[1].endswith("drop")
    assert "add @trap_t4 { ip saddr }" in catch[2] and 'log prefix "pstrap:trap" group 27' in catch[2]
    assert catch[-1] == 'counter name "trap_full" drop'
    assert "add element inet portsentinel trap_tcp { 1-100 }" in text
    assert "add element inet portsentinel trap_tcp_l { 22, 80 }" in text
    assert "add element inet portsentinel trap_never4 { 192.0.2.0/24, 198.51.100.1 }" in text
    assert "add element inet portsentinel trap_never6 { 2001:db8::1 }" in text
    assert "flags dynamic,timeout; timeout 60s; size 65536;" in text
    # Objects are added (kept on reload), the chains flushed: running it twice is the same trap.
    assert not any(line.startswith(("delete", "create")) for line in text.splitlines())


def test_ruleset_options() -> None:
    s = _settings("protocol=udp, socket_match=no, tarpit=2m, size=10, rate=5/minute, burst=1, priority=10")
    text = T.install_script(s, {}, [])
    assert "socket" not in text and "tcp dport @" not in text and "udp dport @trap_udp" in text
    assert "timeout 120s; size 10;" in text and "limit rate over 5/minute burst 1 packets" in text
    assert "hook input priority 10;" in text


def test_sync_and_remove_and_unban() -> None:
    s = _settings()
    sync = T.sync_script(s, listening={"tcp": [443], "sctp": [2905], "ip4": [47, 300]})
    assert sync == ("flush set inet portsentinel trap_tcp_l\nadd element inet portsentinel trap_tcp_l { 443 }\n"
                    "flush set inet portsentinel trap_udp_l\n"
                    "flush set inet portsentinel trap_sctp_l\nadd element inet portsentinel trap_sctp_l { 2905 }\n"
                    "flush set inet portsentinel trap_ph4\nadd element inet portsentinel trap_ph4 { 1, 2, 6, 17, 47 }\n"
                    "flush set inet portsentinel trap_ph6\nadd element inet portsentinel trap_ph6 { 6, 17, 58, 59 }\n")
    assert "trap_never4" in T.sync_script(s, never=["192.0.2.1"])
    stmts = T.remove_statements(s)
    assert stmts[0] == "delete chain inet portsentinel trap_trap" and len(stmts) == 2 + 16 + 4
    # The address's element and its /64's (the tarpit holds an IPv6 source's network), each added then deleted.
    t6 = "inet portsentinel trap_t6"
    assert T.unban_script(s, "2001:db8::7") == (
        f"add element {t6} {{ 2001:db8:: }}\ndelete element {t6} {{ 2001:db8:: }}\n"
        f"add element {t6} {{ 2001:db8::7 }}\ndelete element {t6} {{ 2001:db8::7 }}\n")
    with pytest.raises(ValueError):
        T.unban_script(s, "1.2.3.4 }; flush ruleset; {")


def test_parse_payload_v4_v6() -> None:
    v4 = bytes([0x45, 0, 0, 40, 0, 0, 0, 0, 64, 6, 0, 0]) + bytes([198, 51, 100, 7]) + bytes([192, 0, 2, 1]) \
        + struct.pack(">HH", 40000, 23) + bytes(16)
    assert H.parse_payload("x", v4, 5.0) == H.TrapHit("x", "198.51.100.7", "tcp", 23, 5.0)
    v6 = bytes([0x60, 0, 0, 0, 0, 8, 17, 64]) + socket.inet_pton(socket.AF_INET6, "2001:db8::9") + bytes(16) \
        + struct.pack(">HH", 5353, 161) + bytes(4)
    assert H.parse_payload("x", v6, 1.0) == H.TrapHit("x", "2001:db8::9", "udp", 161, 1.0)
    assert H.parse_payload("x", b"\x45" + bytes(5), 0) is None


def test_nflog_parse_packet_and_ack() -> None:
    payload = bytes([0x45]) + bytes(19)

    def attr(kind: int, data: bytes) -> bytes:
        raw = struct.pack("=HH", 4 + len(data), kind) + data
        return raw + b"\0" * (-len(raw) % 4)

    body = struct.pack("=BBH", 2, 0, socket.htons(27)) + attr(nflog.NFULA_PREFIX, b"pstrap:trap\0") \
        + attr(nflog.NFULA_PAYLOAD, payload)
    msg = struct.pack("=IHHII", 16 + len(body), nflog.NFNL_SUBSYS_ULOG << 8, 0, 0, 0) + body
    ack = struct.pack("=IHHII", 16 + 4 + 16, nflog.NLMSG_ERROR, 0, 1, 0) + struct.pack("=i", -16) + bytes(16)
    packets, errors = nflog.parse(msg + ack, 3.0)
    assert packets == [nflog.LoggedPacket("pstrap:trap", payload, 3.0)] and errors == [16]
    assert nflog.parse(b"\xff" * 7, 0) == ([], [])


def test_listening_ports_from_proc(tmp_path: Path) -> None:
    head = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid\n"
    (tmp_path / "tcp").write_text(head + "   0: 00000000:0016 00000000:0000 0A 0:0 00:0 0 0\n"
                                         "   1: 0100007F:1F90 0200007F:C350 01 0:0 00:0 0 0\n")
    (tmp_path / "tcp6").write_text(head + "   0: 00000000000000000000000000000000:01BB 0000:0000 0A 0 0 0\n")
    (tmp_path / "udp").write_text(head + "   0: 00000000:0035 00000000:0000 07 0 0 0\n"
                                         "   1: 0100007F:A000 0200007F:0035 01 0 0 0\n")
    got = listening_ports(str(tmp_path))
    assert (got["tcp"], got["udp"], got["sctp"]) == (frozenset({22, 443}), frozenset({53}), frozenset())
    assert (got["ip4"], got["ip6"]) == (frozenset({1, 2, 6, 17}), frozenset({6, 17, 58, 59}))  # the core only


def _engine(**cfg: object) -> tuple[Engine, JailRuntime]:
    jc = JailConfig(name="trap", where="x:1", enabled=True, maxretry=2, bantime=600.0, **cfg)  # type: ignore[arg-type]

    class NoOffences:
        def offences(self, jail: str, ip: str) -> int:
            return 0

    rt = JailRuntime(jc, None, Jail(jc), PerMinuteCap(60), "file:x", False)  # type: ignore[arg-type]
    return Engine([rt], NeverBan(own=["192.0.2.1"]), BanBook(), NoOffences()), rt


def test_escalate_follows_the_jail() -> None:
    engine, _ = _engine()
    hit = H.TrapHit("trap", "198.51.100.7", "tcp", 23, 100.0)
    assert escalate(engine, "trap", hit, 100.0) is None  # first hit: tarpit only
    d = escalate(engine, "trap", hit, 170.0)  # back after the tarpit: maxretry reached
    assert d is not None and d.kind == "ban" and d.ban is not None
    assert d.ban.expires == 770.0 and d.ban.info["via"] == "kernel-trap" and d.ban.info["port"] == "23"
    assert escalate(engine, "trap", hit, 171.0) is None  # already banned
    assert escalate(engine, "nope", hit, 171.0) is None
    guarded, _ = _engine()
    own = H.TrapHit("trap", "192.0.2.1", "tcp", 1, 1.0)
    escalate(guarded, "trap", own, 1.0)
    d = escalate(guarded, "trap", own, 2.0)
    assert d is not None and d.kind == "ignored" and "own address" in d.reason
    strict, _ = _engine(verified_only=True)
    for t in range(5):
        assert escalate(strict, "trap", hit, float(t)) is None  # a trapped probe never proved a handshake


def test_tarpit_book() -> None:
    tp = H.Tarpit()
    tp.add("trap", H.TrapHit("trap", "198.51.100.7", "tcp", 23, 10.0), 60)
    tp.add("trap", H.TrapHit("trap", "2001:db8::7", "udp", 7, 20.0), 60)
    assert tp.next_expiry() == 70.0
    rows = tp.rows(30.0)
    assert [(r["ip"], r["remaining"], r["via"]) for r in rows] == [("198.51.100.7", 40.0, "kernel-trap"),
                                                                    ("2001:db8::7", 50.0, "kernel-trap")]
    assert [h.ip for _, h in tp.expired(75.0)] == ["198.51.100.7"]
    assert tp.remove("2001:db8::7") == [("trap", "2001:db8::7")] and tp.entries == {}
