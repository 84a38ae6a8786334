"""The kernel trap's SCTP and IP-protocol parts (responder.trap.ruleset): settings, rules, protocol sets, payloads."""

from __future__ import annotations

import pytest
from scapy.layers.inet import IP
from scapy.layers.inet6 import IPv6
from scapy.layers.sctp import SCTP, SCTPChunkInit

from portsentinel.responder.trap import hits as H
from portsentinel.responder.trap import ruleset as T
from portsentinel.responder.trap import settings as S


def _settings(**params: str) -> S.TrapSettings:
    return S.settings_from(params, "j")


def test_sctp_shapes() -> None:
    adv = _settings(sctp_exclude="7, 9")
    assert adv.trap_ports("sctp") == frozenset(range(1, 65536)) - {7, 9}
    lst = _settings(shape="list", protocol="sctp", sctp_ports="2905, 36412")
    assert lst.trap_ports("sctp") == {2905, 36412} and lst.trap_ports("tcp") == set()
    assert _settings(protocol="tcp").trap_ports("sctp") == set()
    with pytest.raises(S.TrapError, match="sctp_bound"):
        _settings(sctp_bound="0")
    with pytest.raises(S.TrapError, match="protocol"):
        _settings(protocol="tcp, icmp")
    assert _settings(shape="list", protocol="ip").protocols == ("ip",)  # a list shape of protocols alone


def test_rules_for_sctp_and_protocols_without_a_handler() -> None:
    text = T.install_script(_settings(), {"sctp": [2905], "ip4": [47]}, [])
    assert "add rule inet portsentinel j_trap sctp dport @j_sctp sctp dport != @j_sctp_l goto j_catch" in text
    assert ("add rule inet portsentinel j_trap meta nfproto ipv4 meta l4proto != @j_ph4 fib daddr type local "
            "goto j_catch") in text
    assert "meta nfproto ipv6 meta l4proto != @j_ph6 fib daddr type local goto j_catch" in text
    assert "add set inet portsentinel j_ph4 { type inet_proto; }" in text
    assert "add element inet portsentinel j_ph4 { 1, 2, 6, 17, 47 }" in text
    assert "add element inet portsentinel j_sctp_l { 2905 }" in text
    # The protocol rules come after the never-ban, tarpit and ban checks, like the port rules.
    rules = [line for line in text.splitlines() if line.startswith("add rule inet portsentinel j_trap")]
    assert rules.index(next(r for r in rules if "l4proto" in r)) > rules.index(next(r for r in rules if "@j_b6" in r))
    only_tcp = T.install_script(_settings(protocol="tcp"), {}, [])
    assert "sctp dport" not in only_tcp and "l4proto" not in only_tcp
    assert "add element inet portsentinel j_ph4 { 1, 2, 6, 17 }" in only_tcp  # the sets exist, the core in them


def test_handled_sets_never_lose_the_core() -> None:
    sync = T.sync_script(_settings(), listening={"ip4": [], "ip6": [132, 999, -1]})
    assert "add element inet portsentinel j_ph4 { 1, 2, 6, 17 }" in sync
    assert "add element inet portsentinel j_ph6 { 6, 17, 58, 59, 132 }" in sync


def test_payloads_of_sctp_and_other_protocols() -> None:
    hit = H.parse_payload("j", bytes(IP(src="198.51.100.7", dst="192.0.2.1") / SCTP(dport=36412) / SCTPChunkInit()),
                          1.0)
    assert hit is not None and (hit.ip, hit.proto, hit.port) == ("198.51.100.7", "sctp", 36412)
    hit = H.parse_payload("j", bytes(IP(src="198.51.100.7", dst="192.0.2.1", proto=99)), 1.0)
    assert hit is not None and (hit.proto, hit.port) == ("ip", 99)
    hit = H.parse_payload("j", bytes(IPv6(src="2001:db8::7", dst="2001:db8::1", nh=47, plen=0)), 1.0)
    assert hit is not None and (hit.ip, hit.proto, hit.port) == ("2001:db8::7", "ip", 47)
