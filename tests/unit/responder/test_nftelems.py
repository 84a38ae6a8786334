"""responder.adapters.nftelems: the elements' netlink layout, read back attribute by attribute."""

from __future__ import annotations

import socket
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from portsentinel.responder.adapters import nftelems as N
from portsentinel.responder.adapters.nftrules import attributes


def _read(data: bytes) -> list[tuple[bytes, int]]:
    """(key, timeout ms) of each element in ``data`` (a list of NFTA_LIST_ELEM attributes)."""
    out = []
    for kind, elem in attributes(data):
        assert kind == N.NFTA_LIST_ELEM
        parts = dict(attributes(elem))
        (vkind, key), = attributes(parts[N.NFTA_SET_ELEM_KEY])
        assert vkind == N.NFTA_DATA_VALUE
        out.append((key, struct.unpack("!Q", parts[N.NFTA_SET_ELEM_TIMEOUT])[0]))
    return out


@given(st.lists(st.tuples(st.integers(0, 2**32 - 1), st.integers(1, 2**40)), min_size=1, max_size=50))
def test_ipv4_elements_read_back(items: list[tuple[int, int]]) -> None:
    ips = [socket.inet_ntoa(struct.pack("!I", a)) for a, _ in items]
    data = N.elements(4, N.keys_of(ips, 4), [t for _, t in items])
    assert _read(data) == [(struct.pack("!I", a), t) for a, t in items]


@given(st.lists(st.tuples(st.binary(min_size=16, max_size=16), st.integers(1000, 10**9)), min_size=1, max_size=20))
def test_ipv6_elements_read_back(items: list[tuple[bytes, int]]) -> None:
    ips = [socket.inet_ntop(socket.AF_INET6, k) for k, _ in items]
    assert _read(N.elements(16, N.keys_of(ips, 16), [t for _, t in items])) == items


@pytest.mark.parametrize("ip, key_len", [("10.0.0.999", 4), ("010.0.0.1", 4), ("10.0.0", 4), ("2001:db8::1", 4),
                                         ("10.0.0.1", 16), ("10.0.0.0/24", 4), ("", 4), ("fe80::1%eth0", 16)])
def test_texts_that_are_not_plain_addresses_of_the_sets_length_are_refused(ip: str, key_len: int) -> None:
    with pytest.raises(ValueError):
        N.keys_of([ip], key_len)


def test_a_message_holds_as_many_elements_as_a_16_bit_attribute_length_allows() -> None:
    assert len(N.template(4)) == 28 and len(N.template(16)) == 40
    assert N.per_message(4) * 28 + 4 <= 0xFFFF < (N.per_message(4) + 1) * 28 + 4
    assert N.per_message(16) * 40 + 4 <= 0xFFFF < (N.per_message(16) + 1) * 40 + 4


def test_elements_without_a_timeout_or_of_another_family_are_not_sent() -> None:
    e = N.Elements()
    assert e.add("inet", "t", [("s", ["192.0.2.1"], [None])]) is False
    assert e.add("inet", "t", [("s", ["192.0.2.1"], [-1])]) is False
    assert e.add("bridge", "t", [("s", ["192.0.2.1"], [60])]) is False
    assert e.commits == 0
