"""The never-ban list by integer ranges (responder.core.guard) decides as a plain ipaddress reading of the same
rules: own addresses, gateways and resolvers, ignoreip, loopback, unspecified and multicast; a network ban that
holds a protected address falls back to the address."""

from __future__ import annotations

import ipaddress

from hypothesis import given, settings
from hypothesis import strategies as st

from portsentinel.record import canonical_address
from portsentinel.responder.core.guard import IPNetwork, NeverBan

OWN = ["192.0.2.1", "2001:db8::1"]
GATEWAYS = ["192.0.2.254", "fe80::1"]
RESOLVERS = ["198.51.100.53"]
IGNORE: tuple[IPNetwork, ...] = (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("203.0.113.64/26"),
                                 ipaddress.ip_network("2001:db8:aa::/48"))


def _reference_why(ip: str, ignoreip: tuple[IPNetwork, ...], ignoreself: bool) -> str | None:
    addr = ipaddress.ip_address(canonical_address(ip))
    if addr.is_loopback or addr.is_unspecified or addr.is_multicast:
        return "loopback, unspecified or multicast address"
    reasons = dict.fromkeys(OWN, "own address") | dict.fromkeys(GATEWAYS, "default gateway") \
        | dict.fromkeys(RESOLVERS, "resolver")
    if ignoreself and str(addr) in reasons:
        return reasons[str(addr)]
    for net in ignoreip:
        if addr.version == net.version and addr in net:
            return f"ignoreip {net}"
    return None


def _reference_safe(ip: str, net: str, ignoreip: tuple[IPNetwork, ...], ignoreself: bool) -> str:
    wide = ipaddress.ip_network(net)
    protected = [ipaddress.ip_network(a) for a in OWN + GATEWAYS + RESOLVERS] if ignoreself else []
    protected += [*ignoreip, ipaddress.ip_network("::1/128" if wide.version == 6 else "127.0.0.0/8")]
    if any(p.version == wide.version and wide.overlaps(p) for p in protected):
        return ip
    return net


NEVER = NeverBan(own=OWN, gateways=GATEWAYS, resolvers=RESOLVERS)
v4 = st.one_of(st.sampled_from(["127.0.0.1", "0.0.0.0", "224.0.0.1", "239.255.255.255", "240.0.0.1",
                                "10.1.2.3", "203.0.113.64", "203.0.113.127", "203.0.113.128", *OWN[:1],
                                *GATEWAYS[:1], *RESOLVERS]),
               st.integers(0, 2**32 - 1).map(lambda i: str(ipaddress.IPv4Address(i))))
v6 = st.one_of(st.sampled_from(["::", "::1", "ff02::1", "fe80::1", "2001:db8::1", "2001:db8:aa:1::7",
                                "::ffff:10.0.0.1"]),
               st.integers(0, 2**128 - 1).map(lambda i: str(ipaddress.IPv6Address(i))))


@settings(max_examples=400, deadline=None)
@given(ip=st.one_of(v4, v6), ignore=st.booleans(), ignoreself=st.booleans())
def test_why_decides_as_ipaddress_does(ip: str, ignore: bool, ignoreself: bool) -> None:
    nets = IGNORE if ignore else ()
    assert NEVER.why(ip, nets, ignoreself) == _reference_why(ip, nets, ignoreself)


@settings(max_examples=400, deadline=None)
@given(ip=st.one_of(v4, v6), plen=st.integers(0, 128), ignore=st.booleans(), ignoreself=st.booleans())
def test_a_network_ban_holding_a_protected_address_falls_back_to_the_address(
        ip: str, plen: int, ignore: bool, ignoreself: bool) -> None:
    ip = canonical_address(ip)
    addr = ipaddress.ip_address(ip)
    net = str(ipaddress.ip_network(f"{ip}/{min(plen, addr.max_prefixlen)}", strict=False))
    nets = IGNORE if ignore else ()
    target, note = NEVER.safe_target(ip, net, nets, ignoreself)
    assert target == _reference_safe(ip, net, nets, ignoreself)
    assert (note != "") == (target != net)


def test_a_network_with_host_bits_or_a_bad_prefix_is_refused() -> None:
    for net in ("2001:db8::1/64", "192.0.2.0/33", "192.0.2.0/x"):
        try:
            NEVER.safe_target("2001:db8::1", net)
        except ValueError:
            continue
        raise AssertionError(f"{net} accepted")


def test_ignoreip_given_as_a_list_or_a_generator_counts_too() -> None:
    assert NEVER.why("10.9.9.9", list(IGNORE)) == "ignoreip 10.0.0.0/8"
    assert NEVER.why("10.9.9.9", iter(IGNORE)) == "ignoreip 10.0.0.0/8"
    assert NEVER.why("2001:db8:aa::5", IGNORE) == "ignoreip 2001:db8:aa::/48"


texts = st.one_of(v4, v6, st.sampled_from(["010.0.0.1", " 127.0.0.1", "127.0.0.1 ", "1.2.3", "192.0.2.1/32", ""]))


@settings(max_examples=300, deadline=None)
@given(ips=st.lists(texts, max_size=40), ignore=st.booleans(), ignoreself=st.booleans())
def test_suspects_leaves_out_only_addresses_why_passes(ips: list[str], ignore: bool, ignoreself: bool) -> None:
    """The restore's screen: an address it leaves out is one why() passes; texts that are not all canonical
    IPv4 addresses are all left to why() (None)."""
    nets = IGNORE if ignore else ()
    sus = NEVER.suspects(ips, nets, ignoreself)
    if sus is None:
        assert not all(_plain(ip) and canonical_address(ip) == ip and ":" not in ip for ip in ips)
        return
    assert all(_plain(ip) and ":" not in ip for ip in ips)
    for ip in ips:
        if ip not in sus:
            assert NEVER.why(ip, nets, ignoreself) is None, ip


def _plain(ip: str) -> bool:
    try:
        canonical_address(ip)
    except ValueError:
        return False
    return True


def test_suspects_of_a_chunk_are_the_lines_a_protected_first_byte_starts() -> None:
    chunk = ["100.64.0.1", "10.1.2.3", "127.0.0.9", "192.0.2.1", "192.0.2.77", "230.1.1.1", "8.8.8.8"]
    assert NEVER.suspects(chunk, IGNORE, True) == {"10.1.2.3", "127.0.0.9", "192.0.2.1", "192.0.2.77", "230.1.1.1"}
    assert NEVER.suspects(chunk, (), False) == {"127.0.0.9", "230.1.1.1"}
    assert NEVER.suspects([*chunk, "2001:db8::1"], IGNORE, True) is None
    assert NEVER.suspects([], IGNORE, True) == set()
