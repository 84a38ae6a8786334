"""responder.core.addrint reads an address's text as ipaddress does (the same integer, the same refusals)."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from portsentinel.responder.core.addrint import addr_int, network_range

v4 = st.integers(0, 2**32 - 1).map(lambda i: str(ipaddress.IPv4Address(i)))
v6 = st.integers(0, 2**128 - 1).map(lambda i: str(ipaddress.IPv6Address(i)))
v6_sparse = st.lists(st.sampled_from([0, 0, 0, 1, 0xFFFF, 0xDB8]), min_size=8, max_size=8).map(
    lambda g: str(ipaddress.IPv6Address(sum(x << (16 * (7 - i)) for i, x in enumerate(g)))))
odd = st.text(alphabet="0123456789abcdefABCDEF:./%x ", max_size=45)


@settings(max_examples=500, deadline=None)
@given(text=st.one_of(v4, v6, v6_sparse))
def test_canonical_text_is_read_as_ipaddress_reads_it(text: str) -> None:
    assert addr_int(text) == int(ipaddress.ip_address(text))


@settings(max_examples=1000, deadline=None)
@given(text=odd)
def test_any_other_text_is_read_or_refused_as_ipaddress_does(text: str) -> None:
    try:
        want: int | None = int(ipaddress.ip_address(text))
    except ValueError:
        want = None
    try:
        got: int | None = addr_int(text)
    except ValueError:
        got = None
    assert got == want


@pytest.mark.parametrize("text", ["1.2.3.04", "01.2.3.4", "1.2.3", "1.2.3.4.5", "256.1.1.1", "1::2::3",
                                  ":1:2:3:4:5:6:7", "1:2:3:4:5:6:7:8:9", "12345::", "::ffff:1.2.3.4", "fe80::1%eth0",
                                  "", "::g"])
def test_garbage_and_non_canonical_forms_are_ipaddress_business(text: str) -> None:
    try:
        want: int | None = int(ipaddress.ip_address(text))
    except ValueError:
        want = None
    try:
        got: int | None = addr_int(text)
    except ValueError:
        got = None
    assert got == want


@settings(max_examples=300, deadline=None)
@given(text=st.one_of(v4, v6), plen=st.integers(0, 128))
def test_network_range(text: str, plen: int) -> None:
    addr = ipaddress.ip_address(text)
    net = ipaddress.ip_network(f"{text}/{min(plen, addr.max_prefixlen)}", strict=False)
    assert network_range(str(net)) == (net.version, int(net.network_address), int(net.broadcast_address))
    if net.num_addresses > 1 and int(addr) != int(net.network_address):
        with pytest.raises(ValueError):
            network_range(f"{text}/{net.prefixlen}")  # host bits set
