"""hostfacts: rtnetlink messages and resolver files → never-ban facts (messages laid out as the kernel does)."""

from __future__ import annotations

import ipaddress
import socket
import struct

import pytest

from portsentinel.responder.core import hostfacts as H


def _attr(atype: int, value: bytes) -> bytes:
    raw = struct.pack("=HH", 4 + len(value), atype) + value
    return raw + b"\0" * (-len(raw) % 4)


def _msg(mtype: int, body: bytes, seq: int = 1) -> bytes:
    raw = struct.pack("=IHHII", 16 + len(body), mtype, 0, seq, 0) + body
    return raw + b"\0" * (-len(raw) % 4)


def _ip(text: str) -> bytes:
    return ipaddress.ip_address(text).packed


def _addr(family: int, *attrs: bytes, mtype: int = H.RTM_NEWADDR) -> bytes:
    return _msg(mtype, struct.pack("=BBBBI", family, 24, 0, 0, 2) + b"".join(attrs))


def _route(family: int, dst_len: int, *attrs: bytes, rtype: int = H.RTN_UNICAST, table: int = 254,
           mtype: int = H.RTM_NEWROUTE) -> bytes:
    return _msg(mtype, struct.pack("=BBBBBBBBI", family, dst_len, 0, 0, table, 3, 0, rtype, 0) + b"".join(attrs))


def test_addresses_prefer_the_local_address_of_a_point_to_point_link() -> None:
    ptp = _addr(H.AF_INET, _attr(H.IFA_ADDRESS, _ip("10.0.0.2")), _attr(H.IFA_LOCAL, _ip("10.0.0.1")))
    v6 = _addr(H.AF_INET6, _attr(H.IFA_ADDRESS, _ip("2001:db8::5")))
    mapped = _addr(H.AF_INET6, _attr(H.IFA_ADDRESS, _ip("::ffff:192.0.2.4")))
    got = [H.address_of(m.payload) for m in H.messages(ptp + v6 + mapped)]
    assert got == ["10.0.0.1", "2001:db8::5", "192.0.2.4"]


def test_gateways_of_default_routes_in_any_table_single_via_and_multipath() -> None:
    main = _route(H.AF_INET, 0, _attr(H.RTA_GATEWAY, _ip("192.0.2.1")))
    vpn = _route(H.AF_INET6, 0, _attr(H.RTA_GATEWAY, _ip("fe80::1")), table=200)
    via = _route(H.AF_INET, 0, _attr(H.RTA_VIA, struct.pack("=H", socket.AF_INET6) + _ip("fe80::9")))
    hops = b"".join(struct.pack("=HBBi", 8 + 8, 0, 0, i) + _attr(H.RTA_GATEWAY, _ip(f"198.51.100.{i}"))
                    for i in (1, 2))
    multi = _route(H.AF_INET, 0, _attr(H.RTA_MULTIPATH, hops))
    other = _route(H.AF_INET, 24, _attr(H.RTA_DST, _ip("203.0.113.0")), _attr(H.RTA_GATEWAY, _ip("192.0.2.9")))
    blackhole = _route(H.AF_INET, 0, rtype=6)
    got = [H.gateways_of(m.payload) for m in H.messages(main + vpn + via + multi + other + blackhole)]
    assert got == [["192.0.2.1"], ["fe80::1"], ["fe80::9"], ["198.51.100.1", "198.51.100.2"], [], []]


def test_relevant_events_are_address_changes_and_default_routes_only() -> None:
    assert H.relevant(_addr(H.AF_INET, _attr(H.IFA_LOCAL, _ip("10.0.0.1")), mtype=H.RTM_DELADDR))
    assert H.relevant(_route(H.AF_INET6, 0, _attr(H.RTA_GATEWAY, _ip("fe80::1")), mtype=H.RTM_DELROUTE))
    assert not H.relevant(_route(H.AF_INET, 24, _attr(H.RTA_GATEWAY, _ip("192.0.2.9"))))
    assert not H.relevant(b"")


@pytest.mark.parametrize("junk", [b"\xff" * 3, struct.pack("=IHHII", 8, 20, 0, 0, 0),
                                  struct.pack("=IHHII", 4000, 20, 0, 0, 0) + b"x" * 20,
                                  _msg(H.RTM_NEWADDR, b"\x02\x18"),
                                  _msg(H.RTM_NEWADDR, struct.pack("=BBBBI", 2, 24, 0, 0, 1)
                                       + struct.pack("=HH", 200, 2) + b"abcd"),
                                  _route(H.AF_INET, 0, _attr(H.RTA_GATEWAY, b"\x01\x02\x03")),
                                  _route(H.AF_INET, 0, _attr(H.RTA_MULTIPATH, struct.pack("=HBBi", 3, 0, 0, 1)))])
def test_malformed_messages_yield_nothing_and_never_raise(junk: bytes) -> None:
    for m in H.messages(junk):
        assert H.address_of(m.payload) is None and H.gateways_of(m.payload) == []
    H.relevant(junk)


def test_dump_request_is_a_well_formed_message() -> None:
    (m,) = H.messages(H.dump_request(H.RTM_GETROUTE, 0, 7))
    assert (m.type, m.seq, len(m.payload)) == (H.RTM_GETROUTE, 7, 12)


def test_resolv_conf_and_resolved_lists() -> None:
    text = ("# systemd-resolved upstream\nnameserver 198.51.100.53\nnameserver fe80::1%eth0\n"
            "nameserver  2001:db8::53 \nnameserver bogus\nnameserverx 1.2.3.4\nsearch example\n"
            "nameserver ::ffff:192.0.2.53\n")
    assert H.resolv_conf(text) == ["198.51.100.53", "fe80::1", "2001:db8::53", "192.0.2.53"]
    link = "# networkd\nADMIN_STATE=configured\nDNS=192.0.2.10 2001:db8::a\nNTP=192.0.2.99\n"
    assert H.dns_lines(link) == ["192.0.2.10", "2001:db8::a"]
    conf = "[Resolve]\nDNS=9.9.9.9#dns.quad9.net [2620:fe::9]:853 1.1.1.1:53\nFallbackDNS=8.8.8.8\n#DNS=6.6.6.6\n"
    assert H.dns_lines(conf) == ["9.9.9.9", "2620:fe::9", "1.1.1.1", "8.8.8.8"]


def test_never_ban_sees_mapped_and_zoned_forms_as_the_plain_address() -> None:
    from portsentinel.responder.core.guard import NeverBan

    never = NeverBan(own=["fe80::1%eth0", "192.0.2.2"], gateways=["::ffff:192.0.2.1"], resolvers=["bogus"])
    assert never.why("fe80::1") == "own address" and never.why("::ffff:192.0.2.2") == "own address"
    assert never.why("192.0.2.1") == "default gateway"
    assert never.why("::ffff:127.0.0.1") == "loopback, unspecified or multicast address"
    assert never.why("198.51.100.1") is None
    with pytest.raises(ValueError):
        never.why("fe80::1%eth0")
