"""detector.packet.parse: IP bytes → Probe or Bad, on every input."""

from __future__ import annotations

import ipaddress
import mmap

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scapy.layers.inet import ICMP, IP, TCP, UDP, IPOption_NOP
from scapy.layers.inet6 import (
    ICMPv6EchoRequest,
    IPv6,
    IPv6ExtHdrDestOpt,
    IPv6ExtHdrFragment,
    IPv6ExtHdrHopByHop,
    IPv6ExtHdrRouting,
    PadN,
)
from scapy.packet import Packet

from portsentinel.detector.packet import Bad, Probe, parse, parse_tuple

S4, D4 = "198.51.100.7", "203.0.113.1"
S6, D6 = "2001:db8::7", "2001:db8::1"


def raw(pkt: Packet) -> bytes:
    return bytes(pkt)


def a(text: str) -> bytes:
    return ipaddress.ip_address(text).packed


# ----------------------------------------------------------------------------- well-formed packets

def test_ipv4_tcp() -> None:
    got = parse(raw(IP(src=S4, dst=D4) / TCP(sport=40000, dport=143, flags="S")))
    assert got == Probe(a(S4), a(D4), 6, 143, 0x02)
    assert isinstance(got.src, bytes) and isinstance(got.dst, bytes)


def test_ipv4_udp() -> None:
    assert parse(raw(IP(src=S4, dst=D4) / UDP(sport=5353, dport=69) / (b"x" * 10))) == Probe(a(S4), a(D4), 17, 69, 0)


@pytest.mark.parametrize("flags,value", [("", 0), ("F", 1), ("FPU", 0x29), ("A", 0x10), ("FA", 0x11),
                                         ("SEC", 0xC2), ("SA", 0x12), ("R", 0x04)])
def test_tcp_flags_byte_passed_through(flags: str, value: int) -> None:
    got = parse(raw(IP(src=S4, dst=D4) / TCP(dport=1, flags=flags)))
    assert isinstance(got, Probe) and got.flags == value


def test_ipv4_options_are_skipped() -> None:
    pkt = raw(IP(src=S4, dst=D4, options=[IPOption_NOP()] * 8) / TCP(dport=31337, flags="S"))
    assert pkt[0] & 0x0F == 7
    assert parse(pkt) == Probe(a(S4), a(D4), 6, 31337, 0x02)


def test_tcp_with_options_and_payload() -> None:
    pkt = raw(IP(src=S4, dst=D4) / TCP(dport=80, flags="S", options=[("MSS", 1460), ("SAckOK", b"")]) / b"hello")
    assert parse(pkt) == Probe(a(S4), a(D4), 6, 80, 0x02)


def test_ipv6_tcp_and_udp() -> None:
    assert parse(raw(IPv6(src=S6, dst=D6) / TCP(dport=22, flags="S"))) == Probe(a(S6), a(D6), 6, 22, 2)
    assert parse(raw(IPv6(src=S6, dst=D6) / UDP(dport=161))) == Probe(a(S6), a(D6), 17, 161, 0)


def test_ipv4_mapped_source_kept_raw() -> None:
    got = parse(raw(IPv6(src="::ffff:198.51.100.7", dst=D6) / TCP(dport=1)))
    assert isinstance(got, Probe) and len(got.src) == 16


@pytest.mark.parametrize("chain", [
    [IPv6ExtHdrHopByHop()],
    [IPv6ExtHdrDestOpt()],
    [IPv6ExtHdrRouting()],
    [IPv6ExtHdrFragment(offset=0, m=0)],  # an atomic fragment (RFC 6946): a whole packet
    [IPv6ExtHdrHopByHop(), IPv6ExtHdrDestOpt(), IPv6ExtHdrRouting(), IPv6ExtHdrFragment(offset=0, m=0),
     IPv6ExtHdrDestOpt()],
    [IPv6ExtHdrHopByHop(options=[PadN(optdata=b"\x00" * 12)])],  # a longer header (hdr ext len > 0)
], ids=["hbh", "dstopt", "routing", "atomic-frag", "chain", "long-hbh"])
@pytest.mark.parametrize("l4,proto,port", [(TCP(dport=8080, flags="F"), 6, 8080), (UDP(dport=7), 17, 7)])
def test_ipv6_extension_chains(chain: list[Packet], l4: Packet, proto: int, port: int) -> None:
    pkt: Packet = IPv6(src=S6, dst=D6)
    for hdr in chain:
        pkt = pkt / hdr
    data = raw(pkt / l4)
    got = parse(data)
    assert got == Probe(a(S6), a(D6), proto, port, 1 if proto == 6 else 0)


def test_ipv6_later_fragment() -> None:
    data = raw(IPv6(src=S6, dst=D6) / IPv6ExtHdrFragment(offset=185, m=0) / (b"\x00" * 40))
    assert parse(data) == Bad.FRAGMENT


def test_ipv6_later_fragment_after_hbh() -> None:
    data = raw(IPv6(src=S6, dst=D6) / IPv6ExtHdrHopByHop() / IPv6ExtHdrFragment(offset=1, m=1) / (b"\x00" * 40))
    assert parse(data) == Bad.FRAGMENT


def test_ipv6_too_many_extension_headers() -> None:
    pkt: Packet = IPv6(src=S6, dst=D6)
    for _ in range(9):
        pkt = pkt / IPv6ExtHdrDestOpt()
    assert parse(raw(pkt / TCP(dport=1))) == Bad.EXT_HEADERS
    pkt = IPv6(src=S6, dst=D6)
    for _ in range(8):
        pkt = pkt / IPv6ExtHdrDestOpt()
    assert isinstance(parse(raw(pkt / TCP(dport=1))), Probe)


def test_ipv4_later_fragment() -> None:
    data = raw(IP(src=S4, dst=D4, frag=185, proto=6) / (b"\x00" * 40))
    assert parse(data) == Bad.FRAGMENT


def test_first_fragments_go_to_reassembly() -> None:
    """The host judges the reassembled datagram: a first fragment alone is no probe, even with whole ports."""
    data = raw(IP(src=S4, dst=D4, flags="MF") / TCP(dport=143, flags="S") / (b"\x00" * 100))
    assert parse(data) == Bad.FRAGMENT
    data = raw(IPv6(src=S6, dst=D6) / IPv6ExtHdrFragment(offset=0, m=1) / TCP(dport=143, flags="S"))
    assert parse(data) == Bad.FRAGMENT
    data = raw(IP(src=S4, dst=D4, flags="DF") / UDP(dport=9))
    assert parse(data) == Probe(a(S4), a(D4), 17, 9, 0)


@pytest.mark.parametrize("data,why", [
    (raw(IP(src=S4, dst=D4) / ICMP()), Bad.OTHER_PROTO),
    (raw(IPv6(src=S6, dst=D6) / ICMPv6EchoRequest()), Bad.OTHER_PROTO),
    (raw(IPv6(src=S6, dst=D6) / IPv6ExtHdrHopByHop() / ICMPv6EchoRequest()), Bad.OTHER_PROTO),
    (raw(IPv6(src=S6, dst=D6, nh=59)), Bad.OTHER_PROTO),  # no next header
    (b"\x00" * 60, Bad.NOT_IP),
    (b"\x50" + b"\x00" * 59, Bad.NOT_IP),
    (b"\xff" * 60, Bad.NOT_IP),
    (b"", Bad.TRUNCATED),
])
def test_other_input(data: bytes, why: Bad) -> None:
    assert parse(data) == why


@pytest.mark.parametrize("ihl", [0, 1, 4])
def test_bad_ihl(ihl: int) -> None:
    data = bytearray(raw(IP(src=S4, dst=D4) / TCP(dport=1)))
    data[0] = 0x40 | ihl
    assert parse(bytes(data)) == Bad.BAD_HEADER


def test_ihl_longer_than_packet() -> None:
    data = bytearray(raw(IP(src=S4, dst=D4) / TCP(dport=1)))  # 40 bytes
    data[0] = 0x4F  # 60-byte header claimed
    assert parse(bytes(data)) == Bad.TRUNCATED


@pytest.mark.parametrize("doff", [0, 1, 4])
def test_bad_tcp_data_offset(doff: int) -> None:
    data = bytearray(raw(IP(src=S4, dst=D4) / TCP(dport=1)))
    data[32] = doff << 4
    assert parse(bytes(data)) == Bad.BAD_HEADER


TRUNCATION_CASES = {
    "v4-tcp": raw(IP(src=S4, dst=D4) / TCP(dport=143, flags="S")),
    "v4-opts-udp": raw(IP(src=S4, dst=D4, options=[IPOption_NOP()] * 4) / UDP(dport=69)),
    "v6-tcp": raw(IPv6(src=S6, dst=D6) / TCP(dport=22)),
    "v6-udp": raw(IPv6(src=S6, dst=D6) / UDP(dport=161)),
    "v6-chain-tcp": raw(IPv6(src=S6, dst=D6) / IPv6ExtHdrHopByHop() / IPv6ExtHdrRouting()
                        / IPv6ExtHdrFragment(offset=0) / IPv6ExtHdrDestOpt() / TCP(dport=8080)),
}


@pytest.mark.parametrize("name", sorted(TRUNCATION_CASES))
def test_truncated_at_every_length(name: str) -> None:
    full = TRUNCATION_CASES[name]
    assert isinstance(parse(full), Probe)
    for n in range(len(full)):
        assert parse(full[:n]) == Bad.TRUNCATED, n
        # The same through start/length inside a longer buffer (as in the capture ring).
        buf = b"\xaa" * 7 + full + b"\xbb" * 64
        assert parse(buf, 7, n) == Bad.TRUNCATED, n


@pytest.mark.parametrize("name", sorted(TRUNCATION_CASES))
def test_start_and_length_in_a_larger_buffer(name: str) -> None:
    full = TRUNCATION_CASES[name]
    want = parse(full)
    buf = bytearray(b"\x45" * 33) + bytearray(full) + bytearray(b"\x60" * 100)
    assert parse(buf, 33, len(full)) == want
    assert parse(memoryview(buf), 33, len(full)) == want
    assert parse(bytes(buf), 33) == want  # no length: up to the end of the buffer
    assert parse(buf, 33, 10**6) == want  # a length beyond the buffer is clamped
    assert parse(buf, len(buf)) == Bad.TRUNCATED
    assert parse(buf, 33, 0) == Bad.TRUNCATED
    assert parse(buf, 33, -5) == Bad.TRUNCATED


def test_parse_from_mmap() -> None:
    full = TRUNCATION_CASES["v6-chain-tcp"]
    with mmap.mmap(-1, 4096) as ring:
        ring[100:100 + len(full)] = full
        assert parse(ring, 100, len(full)) == parse(full)  # an mmap ring, as service.py passes


# ----------------------------------------------------------------------------- never raises

def _check(data: bytes | bytearray, start: int = 0, length: int | None = None) -> None:
    got = parse(data, start, length)
    assert isinstance(got, Probe | Bad)
    if isinstance(got, Probe):
        assert got.proto in (6, 17)
        assert len(got.src) == len(got.dst) in (4, 16)
        assert 0 <= got.port <= 65535 and 0 <= got.flags <= 255
        assert got.proto == 6 or got.flags == 0


@settings(max_examples=3000, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=200), st.integers(0, 40), st.one_of(st.none(), st.integers(-5, 300)))
def test_random_bytes_never_raise(data: bytes, start: int, length: int | None) -> None:
    _check(data, start, length)


@settings(max_examples=2000)
@given(st.sampled_from([4, 6]), st.binary(min_size=0, max_size=120))
def test_random_bytes_with_ip_version_never_raise(version: int, tail: bytes) -> None:
    _check(bytes([(version << 4) | (tail[0] & 0x0F if tail else 5)]) + tail[1:])


MUTATION_BASES = list(TRUNCATION_CASES.values()) + [
    raw(IPv6(src=S6, dst=D6) / IPv6ExtHdrFragment(offset=3) / (b"\x00" * 16)),
    raw(IP(src=S4, dst=D4) / ICMP()),
]


@settings(max_examples=3000)
@given(st.sampled_from(MUTATION_BASES),
       st.lists(st.tuples(st.integers(0, 127), st.integers(0, 255)), min_size=1, max_size=8),
       st.integers(0, 140))
def test_mutated_packets_never_raise(base: bytes, edits: list[tuple[int, int]], cut: int) -> None:
    data = bytearray(base)
    for pos, value in edits:
        if pos < len(data):
            data[pos] = value
    _check(bytes(data[:cut]))
    _check(data)


# ----------------------------------------------------------------------------- parse_tuple (the hot path's)

def _same(data: bytes | bytearray | memoryview | mmap.mmap, start: int = 0, length: int | None = None) -> None:
    """parse_tuple gives parse's answer, a probe as a plain tuple."""
    want = parse(data, start, length)
    got = parse_tuple(data, start, length)
    if isinstance(want, Bad):
        assert got is want
    else:
        assert type(got) is tuple and got == tuple(want)


FAST_CASES = [
    raw(IP(src=S4, dst=D4) / TCP(sport=40000, dport=143, flags="S")),  # exactly 40 bytes
    raw(IP(src=S4, dst=D4) / TCP(dport=1, flags="FPU") / (b"p" * 30)),
    raw(IP(src=S4, dst=D4) / UDP(dport=69) / (b"x" * 12)),  # 40 bytes: the one-struct path
    raw(IP(src=S4, dst=D4) / UDP(dport=69) / (b"x" * 11)),  # 39 bytes: the general parser
    raw(IP(src=S4, dst=D4) / UDP(dport=53)),
    raw(IP(src=S4, dst=D4, flags="MF") / TCP(dport=80, flags="S") / (b"y" * 20)),  # first fragment
    raw(IP(src=S4, dst=D4, frag=3) / (b"\x00" * 40)),  # later fragment
    raw(IP(src=S4, dst=D4) / ICMP() / (b"z" * 40)),
]


@pytest.mark.parametrize("data", FAST_CASES + list(TRUNCATION_CASES.values()))
def test_parse_tuple_is_parse(data: bytes) -> None:
    _same(data)
    buf = b"\xaa" * 13 + data + b"\x45" * 64
    _same(buf, 13, len(data))
    _same(buf, 13)
    for n in range(len(data) + 1):
        _same(data[:n])
        _same(buf, 13, n)


@pytest.mark.parametrize("doff", [0, 1, 4, 5, 15])
def test_parse_tuple_tcp_data_offset(doff: int) -> None:
    data = bytearray(FAST_CASES[0])
    data[20 + 12] = doff << 4
    _same(bytes(data))
    assert (parse_tuple(bytes(data)) == Bad.BAD_HEADER) == (doff < 5)


def test_parse_tuple_from_mmap_returns_copies() -> None:
    full = FAST_CASES[0]
    with mmap.mmap(-1, 4096) as ring:
        ring[100:100 + len(full)] = full
        got = parse_tuple(ring, 100, len(full))
        ring[100:100 + len(full)] = b"\x00" * len(full)  # the ring frame is reused: the probe must not change
        assert got == (a(S4), a(D4), 6, 143, 0x02)
        _same(ring, 4096 - 20, 40)  # a frame cut short by the end of the buffer


@settings(max_examples=3000, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=120), st.integers(0, 40), st.one_of(st.none(), st.integers(-5, 160)))
def test_parse_tuple_random_bytes(data: bytes, start: int, length: int | None) -> None:
    _same(b"\x45" + data, start, length)
    _same(data, start, length)


@settings(max_examples=3000)
@given(st.sampled_from(FAST_CASES + MUTATION_BASES),
       st.lists(st.tuples(st.integers(0, 63), st.integers(0, 255)), min_size=1, max_size=8),
       st.integers(0, 100))
def test_parse_tuple_mutated_packets(base: bytes, edits: list[tuple[int, int]], cut: int) -> None:
    data = bytearray(base)
    for pos, value in edits:
        if pos < len(data):
            data[pos] = value
    _same(bytes(data[:cut]))
    _same(data)


# ----------------------------------------------------------------------------- fragment sequences

def _fragments(pkt: bytes, cuts: list[int], order: list[int], dups: list[int]) -> list[bytes]:
    """``pkt`` (IPv4 without options, or IPv6 without extension headers) cut into fragments at the given
    offsets into its payload (multiples of 8), sent in ``order``, with the fragments at ``dups`` sent twice."""
    v6 = pkt[0] >> 4 == 6
    hl = 40 if v6 else 20
    payload = pkt[hl:]
    bounds = sorted({c for c in cuts if 0 < c < len(payload)} | {0, len(payload)})
    frags = []
    for k, (o, e) in enumerate(zip(bounds, bounds[1:], strict=False)):
        more = k < len(bounds) - 2
        if v6:
            ip6 = IPv6(pkt[:40])
            frags.append(raw(IPv6(src=ip6.src, dst=ip6.dst) / IPv6ExtHdrFragment(id=99, nh=ip6.nh, offset=o // 8,
                                                                                  m=int(more)) / payload[o:e]))
        else:
            ip4 = IP(pkt[:20])
            frags.append(raw(IP(src=ip4.src, dst=ip4.dst, id=99, proto=ip4.proto, frag=o // 8,
                                flags="MF" if more else 0) / payload[o:e]))
    seq = [frags[i % len(frags)] for i in order] + [frags[i % len(frags)] for i in range(len(frags))]
    for d in dups:
        seq.insert(d % (len(seq) + 1), frags[d % len(frags)])
    return seq


@settings(max_examples=400, deadline=None)
@given(st.sampled_from([4, 6]), st.sampled_from(["S", "F", "", "FPU", "A", "FA", "udp"]), st.integers(1, 65535),
       st.integers(0, 60), st.lists(st.integers(1, 12), max_size=6), st.permutations(range(8)),
       st.lists(st.integers(0, 40), max_size=3))
def test_fragment_sequences_give_the_unfragmented_verdict(fam: int, flags: str, port: int, extra: int,
                                                          cuts8: list[int], order: list[int],
                                                          dups: list[int]) -> None:
    """Any split of a probe (multiples of 8), in any order, with duplicates: the reassembled datagram parses
    as the unfragmented probe, once; IPv6 only when its first fragment holds the whole transport header
    (RFC 8200, as Linux enforces)."""
    from portsentinel.detector.reassembly import Reassembler

    l4 = UDP(sport=1, dport=port) if flags == "udp" else TCP(sport=1, dport=port, flags=flags)
    ip: Packet = IPv6(src=S6, dst=D6) if fam == 6 else IP(src=S4, dst=D4)
    pkt = raw(ip / l4 / (b"p" * extra))
    cuts = [8 * c for c in cuts8]
    seq = _fragments(pkt, cuts, [i for i in order if i < len(cuts) + 1], dups)
    r = Reassembler()
    got = []
    for frag in seq:
        whole = r.feed(frag, 0, len(frag), 0.0)
        if whole is not None:
            got.append(parse_tuple(whole))
            break  # later copies would start a new datagram, as on the host
    payload_len = len(pkt) - (40 if fam == 6 else 20)
    first = min([c for c in cuts if 0 < c < payload_len] + [payload_len])
    need = 8 if flags == "udp" else 20
    if first == payload_len or (fam == 6 and first < need):  # not fragmented at all, or dropped by the host
        assert got == []
    else:
        assert got == [parse_tuple(pkt)]
