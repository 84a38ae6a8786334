"""detector.reassembly: fragments → the datagram Linux will see (pure; the clock is an argument).

The expected outcomes are Linux's, measured on the kernel in tests/integration/test_fragments.py, which
sends the same shapes to a real stack and compares the detector's verdict with the host's answer.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import IPv6, IPv6ExtHdrDestOpt, IPv6ExtHdrFragment, IPv6ExtHdrHopByHop
from scapy.packet import Packet, Raw

from portsentinel.detector.packet import parse_tuple
from portsentinel.detector.reassembly import ENTRY_COST, HEAD, Reassembler

S4, D4 = "198.51.100.7", "203.0.113.1"
S6, D6 = "2001:db8::7", "2001:db8::1"


def tcp4(dport: int = 4444, flags: str = "S", payload: int = 4, sport: int = 40000) -> bytes:
    """A TCP segment (header + payload) as it would follow an IPv4 header from S4 to D4."""
    return bytes(IP(src=S4, dst=D4) / TCP(sport=sport, dport=dport, flags=flags) / Raw(b"\0" * payload))[20:]


def tcp6(dport: int = 4444, flags: str = "S", payload: int = 12) -> bytes:
    return bytes(IPv6(src=S6, dst=D6) / TCP(sport=40000, dport=dport, flags=flags) / Raw(b"\0" * payload))[40:]


def f4(off: int, data: bytes, mf: bool, *, ident: int = 7, proto: int = 6, tos: int = 0, src: str = S4) -> bytes:
    return bytes(IP(src=src, dst=D4, id=ident, proto=proto, frag=off // 8, flags="MF" if mf else 0, tos=tos)
                 / Raw(data))


def f6(off: int, data: bytes, m: bool, *, ident: int = 7, nh: int = 6, tc: int = 0,
       pre: tuple[Packet, ...] = ()) -> bytes:
    pkt: Packet = IPv6(src=S6, dst=D6, tc=tc)
    for hdr in pre:
        pkt = pkt / hdr
    return bytes(pkt / IPv6ExtHdrFragment(id=ident, nh=nh, offset=off // 8, m=1 if m else 0) / Raw(data))


def feed_all(r: Reassembler, frags: list[bytes], now: float = 0.0) -> list[tuple[bytes, bytes, int, int, int]]:
    """Every probe the fragments complete, as the detector would parse it."""
    out = []
    for frag in frags:
        whole = r.feed(frag, 0, len(frag), now)
        if whole is not None:
            got = parse_tuple(whole)
            assert isinstance(got, tuple), got
            out.append(got)
    return out


P4 = (bytes([198, 51, 100, 7]), bytes([203, 0, 113, 1]), 6, 4444, 2)


# ----------------------------------------------------------------------------- what completes

def test_nmap_f_in_order_and_reversed() -> None:
    seg = tcp4(payload=0)
    for order in ([0, 1, 2], [2, 1, 0], [1, 2, 0]):
        frags = [f4(0, seg[:8], True), f4(8, seg[8:16], True), f4(16, seg[16:], False)]
        r = Reassembler()
        assert feed_all(r, [frags[i] for i in order]) == [P4]
        assert len(r) == 0 and r.bytes == 0
        assert r.counters.datagrams == 1 and r.counters.fragments == 3


def test_udp_split_and_header_bytes_kept() -> None:
    seg = bytes(IP(src=S4, dst=D4) / UDP(sport=5, dport=69) / Raw(b"x" * 40))[20:]
    r = Reassembler()
    got = feed_all(r, [f4(0, seg[:8], True, proto=17), f4(8, seg[8:], False, proto=17)])
    assert got == [(P4[0], P4[1], 17, 69, 0)]
    whole = Reassembler().feed(f4(0, seg, False, proto=17), 0, None, 0.0)
    assert whole is None  # MF clear and offset 0: not a fragment at all


def test_synthetic_packet_carries_head_bytes_only() -> None:
    seg = tcp4(payload=100)
    r = Reassembler()
    assert r.feed(f4(0, seg[:64], True), 0, None, 0.0) is None
    whole = r.feed(f4(64, seg[64:], False), 0, None, 0.0)
    assert whole is not None and len(whole) == 20 + HEAD and whole[20:] == seg[:HEAD]


def test_keys_keep_datagrams_apart() -> None:
    seg = tcp4(payload=0)
    r = Reassembler()
    frags = [f4(0, seg[:8], True, ident=1), f4(0, seg[:8], True, ident=2), f4(0, seg[:8], True, proto=17),
             f4(8, seg[8:], False, ident=2)]
    assert feed_all(r, frags) == [P4]
    assert len(r) == 2


def test_ipv6_first_fragment_holds_the_tcp_header() -> None:
    seg = tcp6()
    r = Reassembler()
    got = feed_all(r, [f6(24, seg[24:], False), f6(0, seg[:24], True)])
    assert got == [(bytes.fromhex("20010db8" + "0" * 23 + "7"), bytes.fromhex("20010db8" + "0" * 23 + "1"), 6, 4444, 2)]


def test_ipv6_extension_headers_in_both_parts() -> None:
    seg = bytes(IPv6ExtHdrDestOpt(nh=6)) + tcp6(payload=12)
    r = Reassembler()
    got = feed_all(r, [f6(0, seg[:32], True, nh=60, pre=(IPv6ExtHdrHopByHop(),)), f6(32, seg[32:], False, nh=60)])
    assert len(got) == 1 and got[0][2:] == (6, 4444, 2)


@pytest.mark.parametrize("first", [8, 16])
def test_ipv6_split_tcp_header_is_dropped_but_the_queue_kept(first: int) -> None:
    """RFC 8200 4.5 (Linux: ICMPv6 parameter problem code 3): the first fragment is dropped, its queue stays."""
    seg = tcp6(payload=12)
    r = Reassembler()
    assert feed_all(r, [f6(0, seg[:first], True), f6(24, seg[24:], False)]) == []
    assert r.counters.invalid == 1 and len(r) == 1
    assert len(feed_all(r, [f6(first, seg[first:24], True)])) == 0  # still no first fragment
    r2 = Reassembler()
    assert feed_all(r2, [f6(0, seg[:first], True), f6(24, seg[24:], False), f6(0, seg[:24], True)])


# ----------------------------------------------------------------------------- Linux's discards

def test_partial_overlap_discards_the_datagram() -> None:
    seg = tcp4(payload=4)
    r = Reassembler()
    assert feed_all(r, [f4(0, seg[:16], True), f4(8, seg[8:], False)]) == []
    assert r.counters.overlaps == 1 and len(r) == 0


def test_duplicate_inside_a_run_is_dropped_first_data_wins() -> None:
    seg, other = tcp4(payload=4), tcp4(dport=22, flags="F", payload=4)
    r = Reassembler()
    assert feed_all(r, [f4(0, seg[:16], True), f4(0, other[:8], True), f4(16, seg[16:], False)]) == [P4]
    assert r.counters.duplicates == 1


def test_contained_in_two_runs_is_an_overlap() -> None:
    """[8,16) then [0,8) are two runs (the second did not extend the highest one): [0,16) overlaps both."""
    seg = tcp4(payload=4)
    r = Reassembler()
    assert feed_all(r, [f4(8, seg[8:16], True), f4(0, seg[:8], True), f4(0, seg[:16], True),
                        f4(16, seg[16:], False)]) == []
    assert r.counters.overlaps == 1


def test_contained_in_one_appended_run_is_a_duplicate() -> None:
    seg = tcp4(payload=4)
    r = Reassembler()
    assert feed_all(r, [f4(0, seg[:8], True), f4(8, seg[8:16], True), f4(0, b"\x55" * 16, True),
                        f4(16, seg[16:], False)]) == [P4]


def test_inconsistent_last_fragments() -> None:
    seg = tcp4(payload=4)
    r = Reassembler()  # a second last fragment with another end
    assert feed_all(r, [f4(16, seg[16:], False), f4(16, seg[16:] + b"\0" * 8, False), f4(0, seg[:16], True)]) == []
    assert r.counters.invalid == 1
    r = Reassembler()  # data beyond the end a last fragment fixed
    assert feed_all(r, [f4(16, seg[16:], False), f4(0, seg[:8], True), f4(8, seg[8:] + b"\0" * 8, True)]) == []
    r = Reassembler()  # a last fragment ending before data already held
    assert feed_all(r, [f4(0, seg[:16], True), f4(8, b"", False), f4(16, seg[16:], False)]) == []


def test_empty_fragment_discards() -> None:
    seg = tcp4(payload=4)
    r = Reassembler()
    assert feed_all(r, [f4(0, seg[:8], True), f4(8, b"", True), f4(8, seg[8:], False)]) == []
    assert r.counters.invalid == 1


def test_duplicate_last_fragment_stalls_the_queue() -> None:
    """Linux fixes the length before it finds the duplicate, and checks completion only after an insert."""
    seg = tcp4(payload=0)
    r = Reassembler()
    assert feed_all(r, [f4(0, seg[:8], True), f4(8, seg[8:16], True), f4(8, seg[8:16], False)]) == []
    assert len(r) == 1 and r.counters.duplicates == 1  # complete in size, but never reassembled
    assert feed_all(r, [f4(16, seg[16:], False)]) == []  # ends past the length the duplicate fixed
    assert len(r) == 0 and r.counters.invalid == 1


def test_ipv4_non_last_fragment_is_cut_to_eight() -> None:
    seg = tcp4(payload=4)
    r = Reassembler()
    assert feed_all(r, [f4(0, seg[:12], True), f4(8, seg[8:], False)]) == [P4]


def test_ipv6_non_last_fragment_not_multiple_of_eight_is_dropped() -> None:
    seg = tcp6()
    r = Reassembler()
    assert feed_all(r, [f6(0, seg[:28], True), f6(24, seg[24:], False)]) == []
    assert len(r) == 1 and r.counters.invalid == 1
    assert len(feed_all(r, [f6(0, seg[:24], True)])) == 1


@pytest.mark.parametrize("tos1,tos2,ok", [(0, 0, True), (2, 3, True), (1, 2, True), (0, 2, False),
                                          (0, 3, False), (3, 0, False)])
def test_ecn_mixtures(tos1: int, tos2: int, ok: bool) -> None:
    seg = tcp4(payload=4)
    r = Reassembler()
    assert bool(feed_all(r, [f4(0, seg[:8], True, tos=tos1), f4(8, seg[8:], False, tos=tos2)])) == ok


def test_oversize_datagram_discarded() -> None:
    seg = tcp4(payload=4)
    r = Reassembler()
    assert feed_all(r, [f4(0, seg[:8], True), f4(65528, b"\0" * 16, False)]) == []
    assert len(r) == 1  # [8, 65528) missing: still waiting
    r = Reassembler(max_runs=10**6)
    frags = [f4(0, seg[:8], True)] + [f4(o, b"\0" * 1480, True) for o in range(8, 65528 - 1480, 1480)]
    last = 8 + ((65528 - 1480 - 8) // 1480 + 1) * 1480
    frags.append(f4(last, b"\0" * (65535 - 20 - last + 8), False))
    assert feed_all(r, frags) == [] and r.counters.invalid == 1


# ----------------------------------------------------------------------------- bounds and time

def test_timeout_is_the_hosts_and_not_extended() -> None:
    seg = tcp4(payload=0)
    r = Reassembler(timeout4=30.0)
    r.feed(f4(0, seg[:8], True), 0, None, 0.0)
    r.feed(f4(8, seg[8:16], True), 0, None, 29.0)  # does not extend the queue's life
    assert r.feed(f4(16, seg[16:], False), 0, None, 30.0) is None
    assert r.counters.timeouts == 1 and len(r) == 1  # the late fragment starts a queue of its own
    r.expire(60.0)
    assert len(r) == 0 and r.bytes == 0 and r.counters.timeouts == 2


def test_entry_cap_evicts_the_oldest() -> None:
    seg = tcp4(payload=0)
    r = Reassembler(max_entries=4)
    for ident in range(10):
        r.feed(f4(0, seg[:8], True, ident=ident), 0, None, float(ident))
    assert len(r) == 4 and r.counters.evicted == 6
    assert feed_all(r, [f4(8, seg[8:], False, ident=9)]) == [P4]  # the newest survived
    assert feed_all(r, [f4(8, seg[8:], False, ident=0)]) == []  # the oldest did not


def test_byte_cap_and_run_cap() -> None:
    seg = tcp4(payload=0)
    r = Reassembler(max_bytes=3 * ENTRY_COST + 200)
    for ident in range(5):
        r.feed(f4(0, seg[:8], True, ident=ident), 0, None, 0.0)
    assert r.bytes <= r.max_bytes and len(r) <= 3
    r = Reassembler(max_runs=8)
    for k in range(20):  # reverse order, non-adjacent: one run each
        r.feed(f4(8 * (40 - 2 * k), b"\0" * 8, True), 0, None, 0.0)
    assert len(r) == 1 and r.counters.evicted == 2  # a queue goes at its ninth run


def test_max_dist_restarts_a_queue_left_behind() -> None:
    seg = tcp4(payload=0)
    r = Reassembler(max_dist=4)
    r.feed(f4(0, seg[:8], True, ident=1), 0, None, 0.0)
    for ident in range(100, 104):  # four other fragments from the same source in between: too far
        r.feed(f4(8, b"\0" * 8, True, ident=ident), 0, None, 0.0)
    assert feed_all(r, [f4(8, seg[8:], False, ident=1)]) == []
    assert r.counters.too_far == 1
    r = Reassembler(max_dist=4)  # three are fine
    r.feed(f4(0, seg[:8], True, ident=1), 0, None, 0.0)
    for ident in range(100, 103):
        r.feed(f4(8, b"\0" * 8, True, ident=ident), 0, None, 0.0)
    assert feed_all(r, [f4(8, seg[8:], False, ident=1)]) == [P4]
    r = Reassembler(max_dist=4)  # other sources do not count
    r.feed(f4(0, seg[:8], True, ident=1), 0, None, 0.0)
    for ident in range(100, 110):
        r.feed(f4(8, b"\0" * 8, True, ident=ident, src="198.51.100.8"), 0, None, 0.0)
    assert feed_all(r, [f4(8, seg[8:], False, ident=1)]) == [P4]


@settings(max_examples=1500)
@given(st.lists(st.tuples(st.sampled_from([4, 6]), st.integers(0, 3), st.integers(0, 40), st.integers(0, 48),
                          st.booleans(), st.integers(0, 3)), max_size=40),
       st.lists(st.tuples(st.integers(0, 90), st.integers(0, 255)), max_size=4))
def test_random_fragment_sequences_stay_bounded(seq: list[tuple[int, int, int, int, bool, int]],
                                                edits: list[tuple[int, int]]) -> None:
    r = Reassembler(max_entries=3, max_bytes=3 * ENTRY_COST + 5 * 72, max_runs=4)
    now = 0.0
    for fam, ident, off8, size, more, ecn in seq:
        data = bytes(range(size))
        frag = bytearray(f4(off8 * 8, data, more, ident=ident, tos=ecn) if fam == 4
                         else f6(off8 * 8, data, more, ident=ident, tc=ecn))
        for pos, value in edits:
            if pos < len(frag):
                frag[pos] = value
        now += 1.0
        whole = r.feed(bytes(frag), 0, len(frag), now)
        if whole is not None:
            parse_tuple(whole)  # whatever it is, the parser takes it
        assert len(r) <= 3 and r.bytes <= r.max_bytes
    r.expire(now + 61)
    assert len(r) == 0 and r.bytes == 0


@settings(max_examples=500)
@given(st.binary(max_size=120), st.integers(0, 10), st.one_of(st.none(), st.integers(-3, 130)))
def test_random_bytes_never_raise(data: bytes, start: int, length: int | None) -> None:
    r = Reassembler()
    for lead in (b"", b"\x45", b"\x60"):
        r.feed(lead + data, start, length, 0.0)


def test_transport_checksum_checked_when_captured_whole() -> None:
    seg = bytearray(tcp4(payload=4))
    seg[16] ^= 0xFF  # the checksum's first byte: the host drops the datagram without an answer
    r = Reassembler()
    assert feed_all(r, [f4(0, bytes(seg[:8]), True), f4(8, bytes(seg[8:]), False)]) == []
    assert r.counters.badsum == 1 and r.counters.datagrams == 0
    # Captured short (the ring keeps the first bytes of a packet): judged without the checksum.
    frags = [f4(0, bytes(seg[:8]), True), f4(8, bytes(seg[8:]), False)]
    r = Reassembler()
    assert r.feed(frags[0], 0, None, 0.0) is None
    whole = r.feed(frags[1], 0, len(frags[1]) - 2, 0.0)
    assert whole is not None and parse_tuple(whole) == P4


def test_udp_checksum_zero_means_none_in_ipv4_only() -> None:
    seg = bytearray(bytes(IP(src=S4, dst=D4) / UDP(sport=5, dport=69) / Raw(b"x" * 8))[20:])
    seg[6:8] = b"\0\0"
    r = Reassembler()
    assert len(feed_all(r, [f4(0, bytes(seg[:8]), True, proto=17), f4(8, bytes(seg[8:]), False, proto=17)])) == 1
    seg6 = bytearray(bytes(IPv6(src=S6, dst=D6) / UDP(sport=5, dport=69) / Raw(b"x" * 8))[40:])
    seg6[6:8] = b"\0\0"
    r = Reassembler()
    assert feed_all(r, [f6(0, bytes(seg6[:8]), True, nh=17), f6(8, bytes(seg6[8:]), False, nh=17)]) == []
    assert r.counters.badsum == 1


def test_bad_ipv4_header_checksum_is_not_a_fragment_the_host_keeps() -> None:
    seg = tcp4(payload=4)
    first = bytearray(f4(0, seg[:8], True))
    first[10] ^= 0x01
    r = Reassembler()
    assert feed_all(r, [bytes(first), f4(8, seg[8:], False)]) == []
    assert r.counters.invalid == 1 and len(r) == 1
