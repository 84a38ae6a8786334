"""SCTP and IP-protocol sentries, pure parts: parse_other, classify_sctp, the handled-protocol set, OtherSentries,
the tracker's distinct-protocol trigger, the capture filter, the configuration keys and the record values."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import IPv6, IPv6ExtHdrDestOpt, IPv6ExtHdrFragment, IPv6ExtHdrRouting
from scapy.layers.sctp import SCTP, SCTPChunkCookieEcho, SCTPChunkData, SCTPChunkInit, SCTPChunkInitAck
from scapy.packet import Packet, Raw

from portsentinel import record as R
from portsentinel.common import hostproto
from portsentinel.detector.adapters import procnet
from portsentinel.detector.bpf import build
from portsentinel.detector.classify import classify_sctp
from portsentinel.detector.config.model import ConfigError, DetectorConfig
from portsentinel.detector.config.own_grammar import parse_config_text
from portsentinel.detector.other import KEY_BYTE, PROTO_IP, OtherSentries
from portsentinel.detector.packet import Bad, parse, parse_other
from portsentinel.detector.pipeline import OTHER_BADS
from portsentinel.detector.tracker import Tracker
from tests.reference.packet_path import handler
from tests.unit.detector import test_detector_ring as ring_test
from tests.unit.detector.test_bpf import run_bpf
from tests.unit.detector.test_detector_ring import clock  # noqa: F401 - the fixture

S4, D4 = "198.51.100.7", "203.0.113.1"
S6, D6 = "2001:db8::7", "2001:db8::1"


def a(text: str) -> bytes:
    return ipaddress.ip_address(text).packed


# ----------------------------------------------------------------------------- parse_other

@pytest.mark.parametrize("l3", [IP(src=S4, dst=D4), IPv6(src=S6, dst=D6)])
@pytest.mark.parametrize("chunk,kind", [(SCTPChunkInit(), 1), (SCTPChunkCookieEcho(), 10), (SCTPChunkData(), 0)])
def test_sctp_port_and_first_chunk(l3: Packet, chunk: Packet, kind: int) -> None:
    pkt = bytes(l3 / SCTP(sport=5000, dport=36412) / chunk)
    assert parse(pkt) is Bad.OTHER_PROTO  # the TCP/UDP parser leaves it alone
    src, dst = (a(S4), a(D4)) if isinstance(l3, IP) else (a(S6), a(D6))
    assert parse_other(pkt) == (src, dst, 132, 36412, kind)


def test_sctp_behind_ipv6_extension_headers() -> None:
    pkt = bytes(IPv6(src=S6, dst=D6) / IPv6ExtHdrDestOpt() / SCTP(dport=2905) / SCTPChunkInit())
    assert parse_other(pkt) == (a(S6), a(D6), 132, 2905, 1)


def test_sctp_cut_short_has_no_port() -> None:
    pkt = bytes(IP(src=S4, dst=D4, proto=132) / Raw(b"\x00" * 12))  # common header, no chunk
    assert parse_other(pkt) == (a(S4), a(D4), 132, -1, -1)


@pytest.mark.parametrize("proto", [0, 3, 4, 41, 47, 50, 99, 255])
def test_empty_ipv4_protocol_probe(proto: int) -> None:
    """nmap -sO sends most protocols as a bare 20-byte IPv4 header."""
    pkt = bytes(IP(src=S4, dst=D4, proto=proto))
    assert len(pkt) == 20
    assert parse_other(pkt) == (a(S4), a(D4), proto, -1, -1)


@pytest.mark.parametrize("nh", [0, 43, 44, 60])
def test_ipv6_cut_extension_chain_reports_the_cut_header(nh: int) -> None:
    """nmap -6 -sO sends extension header numbers with nothing after the IPv6 header."""
    pkt = bytes(IPv6(src=S6, dst=D6, nh=nh, plen=0))
    assert parse(pkt) is Bad.TRUNCATED
    assert parse_other(pkt) == (a(S6), a(D6), nh, -1, -1)


def test_ipv6_walks_to_the_final_protocol() -> None:
    pkt = bytes(IPv6(src=S6, dst=D6) / IPv6ExtHdrRouting() / IPv6ExtHdrDestOpt(nh=99) / Raw(b"x" * 8))
    assert parse_other(pkt) == (a(S6), a(D6), 99, -1, -1)


def test_fragments_and_garbage() -> None:
    later = bytes(IP(src=S4, dst=D4, proto=99, frag=3))
    assert parse_other(later) is Bad.FRAGMENT
    later6 = bytes(IPv6(src=S6, dst=D6) / IPv6ExtHdrFragment(offset=2, nh=132) / Raw(b"x" * 16))
    assert parse_other(later6) is Bad.FRAGMENT
    assert parse_other(b"") is Bad.TRUNCATED
    assert parse_other(b"\x45" + b"\x00" * 10) is Bad.TRUNCATED
    assert parse_other(b"\x41" + b"\x00" * 19) is Bad.BAD_HEADER
    assert parse_other(b"\x20" * 40) is Bad.NOT_IP


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=120), st.integers(0, 8), st.integers(0, 130))
def test_parse_other_never_raises(data: bytes, start: int, length: int) -> None:
    got = parse_other(data, start, length)
    assert isinstance(got, Bad) or (len(got) == 5 and 0 <= got[2] <= 255 and -1 <= got[3] <= 65535)


# ----------------------------------------------------------------------------- classification

def test_classify_sctp() -> None:
    assert classify_sctp(1) == "init"
    assert classify_sctp(10) == "cookie"
    for answer in (2, 6, 8, 9, 11, 14):  # INIT ACK, ABORT, SHUTDOWN ACK, ERROR, COOKIE ACK, SHUTDOWN COMPLETE
        assert classify_sctp(answer) is None
    assert classify_sctp(0) == "other" and classify_sctp(4) == "other"  # DATA, HEARTBEAT
    assert classify_sctp(-1) is None


# ----------------------------------------------------------------------------- handled protocols

PROTOCOLS = """protocol  size sockets  memory press maxhdr  slab module     cl co di ac io in de sh ss gs se r
SCTPv6    1320      0       0   no       0   yes  sctp        y  y  y  y  y  y  y  y  y  y  y  y  n  y  y  y
UDPLITEv6 1344      0      -1   NI       0   yes  kernel      y  y  y  n  y  y  y  n  y  y  y  y  n  n  n  y
TCPv6     2568      4       1   no     320   yes  kernel      y  y  y  y  y  y  y  y  y  y  y  y  y  n  y  y
SCTP      1160      0       0   no       0   yes  sctp        y  y  y  y  y  y  y  y  y  y  y  y  n  y  y  y
RAW       1128      0      -1   NI       0   yes  kernel      y  y  y  n  y  y  y  n  y  y  y  y  n  y  y  y
UDP-Lite  1152      0      -1   NI       0   yes  kernel      y  y  y  n  y  y  y  n  y  y  y  y  y  n  n  y
"""
RAW = """  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref
  59: 00000000:0059 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 1234 2 0000 0
 255: 00000000:00FF 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 1235 2 0000 0
 112: 0100A8C0:0070 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 1236 2 0000 0
"""
DEV = """Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrie
    lo:       0       0    0    0    0     0          0         0        0       0    0    0    0     0
  gre0:       0       0    0    0    0     0          0         0        0       0    0    0    0     0
ip6tnl0:      0       0    0    0    0     0          0         0        0       0    0    0    0     0
  eth0:       0       0    0    0    0     0          0         0        0       0    0    0    0     0
"""


def test_handled_protocols_from_proc() -> None:
    v4, v6 = hostproto.from_protocols(PROTOCOLS)
    assert v4 == {132, 136} and v6 == {6, 132, 136}
    assert hostproto.from_raw(RAW) == {89, 112}  # IPPROTO_RAW (255) sockets only send
    assert hostproto.from_devices(DEV) == ({47}, {41, 4})


def test_handled_protocols_reader(tmp_path: Path) -> None:
    root = tmp_path
    (root / "protocols").write_text(PROTOCOLS)
    (root / "raw").write_text(RAW)
    (root / "raw6").write_text(RAW.splitlines()[0] + "\n")
    (root / "dev").write_text(DEV)
    v4, v6 = hostproto.handled_protocols(str(root))
    assert v4 == {1, 2, 6, 17, 132, 136, 89, 112, 47}
    assert v6 == {58, 59, 6, 17, 132, 136, 41, 4}
    assert hostproto.handled_protocols(str(root / "missing")) == (hostproto.CORE4, hostproto.CORE6)


def test_sctp_ports_in_use(tmp_path: Path) -> None:
    root = tmp_path
    (root / "sctp").mkdir()
    (root / "sctp" / "eps").write_text(
        " ENDPT     SOCK   STY SST HBKT LPORT   UID INODE LADDRS\n"
        "ffff8880123 ffff8880456 1   10  29   2905      0 12345 10.0.0.1 2001:db8::1\n"
        "ffff8880789 ffff8880abc 2   10  30   36412     0 12346 0.0.0.0\n")
    assert procnet.ports_in_use("sctp", str(root)) == {2905, 36412}
    assert procnet.ports_in_use("sctp", str(root / "none")) == frozenset()


# ----------------------------------------------------------------------------- the sentries

def _other(**kw: object) -> OtherSentries:
    o = OtherSentries({2905: "ssctp", 36412: "asctp"}, "aproto", frozenset({50}))
    o.handled4, o.handled6 = hostproto.CORE4, hostproto.CORE6
    for k, v in kw.items():
        setattr(o, k, v)
    return o


def test_sctp_init_on_a_host_without_sctp_is_two_probes() -> None:
    src = a(S4)
    got = _other().probes((src, a(D4), 132, 2905, 1))
    assert got == [(b"\x84", 132, 2905, "init", "ssctp"), (b"\x00", PROTO_IP, 132, "proto", "aproto")]


def test_sctp_with_a_handler_and_a_listener() -> None:
    src = a(S6)
    o = _other(handled6=hostproto.CORE6 | {132}, sctp_in_use=frozenset({2905}))
    assert o.probes((src, a(D6), 132, 2905, 10)) == []  # the listener's port; SCTP is handled
    assert o.probes((src, a(D6), 132, 36412, 10)) == [(KEY_BYTE[132], 132, 36412, "cookie", "asctp")]
    assert o.probes((src, a(D6), 132, 1, 1)) == []  # not watched
    assert o.probes((src, a(D6), 132, 36412, 6)) == []  # ABORT is an answer


def test_protocols_per_family_and_excluded() -> None:
    o = _other()
    s4, s6 = a(S4), a(S6)
    assert o.probes((s4, a(D4), 58, -1, -1)) == [(b"\x00", PROTO_IP, 58, "proto", "aproto")]  # no ICMPv6 in v4
    assert o.probes((s6, a(D6), 58, -1, -1)) == []
    assert o.probes((s6, a(D6), 1, -1, -1)) == [(b"\x00", PROTO_IP, 1, "proto", "aproto")]  # no ICMP in v6
    assert o.probes((s4, a(D4), 50, -1, -1)) == []  # proto_exclude
    assert OtherSentries({}, "").probes((s4, a(D4), 99, -1, -1)) == [] and not OtherSentries({}).active
    fresh = OtherSentries({}, "aproto")  # before the host's set is read: the core, so a cut TCP header never counts
    assert fresh.probes((s4, a(D4), 6, -1, -1)) == [] and fresh.probes((s6, a(D6), 17, -1, -1)) == []


def test_proto_trigger_counts_distinct_protocols() -> None:
    t = Tracker(trigger=0, window=60, summary_interval=30, max_sources=100, proto_trigger=2)
    key = a(S4) + b"\x00"
    for i in range(10):  # one protocol again and again (a tunnel peer): never a scan
        assert t.hit(key, a(D4), PROTO_IP, 47, "proto", "aproto", 0, False, float(i)) is None
    assert t.hit(key, a(D4), PROTO_IP, 99, "proto", "aproto", 0, False, 10.0) is None
    st_ = t.hit(key, a(D4), PROTO_IP, 7, "proto", "aproto", 0, False, 11.0)
    assert st_ is not None and (st_.nports, st_.port, st_.hits) == (3, 7, 12)
    # SCTP counts probes, like TCP and UDP.
    assert t.hit(a(S4) + b"\x84", a(D4), 132, 2905, "init", "ssctp", 0, False, 12.0) is not None


# ----------------------------------------------------------------------------- the capture filter

def test_bpf_passes_sctp_and_unhandled_protocols() -> None:
    prog = build([1], [7], [2905, 36412], hostproto.CORE4 | {132})  # a host with an SCTP stack
    accept = [IP(src=S4, dst=D4) / SCTP(dport=2905) / SCTPChunkInit(),
              IPv6(src=S6, dst=D6) / SCTP(dport=36412) / SCTPChunkCookieEcho(),
              IP(src=S4, dst=D4, proto=99), IP(src=S4, dst=D4, proto=47) / Raw(b"x" * 8),
              IPv6(src=S6, dst=D6, nh=99, plen=0), IPv6(src=S6, dst=D6, nh=43, plen=0),
              IP(src=S4, dst=D4) / TCP(dport=1, flags="S")]
    reject = [IP(src=S4, dst=D4, proto=1), IP(src=S4, dst=D4, proto=2), IP(src=S4, dst=D4) / TCP(dport=80),
              IP(src=S4, dst=D4) / UDP(dport=53), IP(src=S4, dst=D4) / SCTP(dport=80) / SCTPChunkInit()]
    assert all(run_bpf(prog, bytes(p)) for p in accept), [p.summary() for p in accept if not run_bpf(prog, bytes(p))]
    assert not any(run_bpf(prog, bytes(p)) for p in reject)
    # On a host without SCTP every SCTP packet is an IP-protocol probe too.
    assert run_bpf(build([1], [7], [2905], hostproto.CORE4), bytes(IP(src=S4, dst=D4) / SCTP(dport=80)))
    # Without aproto an SCTP INIT to an unwatched port stays in the kernel, and so does protocol 99 over IPv4.
    only_sctp = build([], [], [2905])
    assert run_bpf(only_sctp, bytes(IP(src=S4, dst=D4) / SCTP(dport=2905) / SCTPChunkInitAck()))
    assert not run_bpf(only_sctp, bytes(IP(src=S4, dst=D4, proto=99)))


# ----------------------------------------------------------------------------- configuration and records

def test_config_keys() -> None:
    cfg, warnings = parse_config_text(
        "[detector]\nmodes = ssctp, asctp, aproto\nsctp_ports = 2905, 36412\nadvanced_sctp = 100\n"
        "advanced_exclude_sctp = 7\nproto_trigger = 2\nproto_exclude = 47, 50-51\n", "t.conf")
    assert warnings == []
    assert cfg.watched_ports("sctp", "ssctp") == {2905, 36412}
    assert cfg.watched_ports("sctp", "asctp", frozenset({9})) == set(range(1, 101)) - {7, 9}
    assert (cfg.proto_trigger, cfg.proto_exclude) == (2, (47, 50, 51))
    assert DetectorConfig().modes == ("stcp", "sudp", "ssctp", "aproto")
    with pytest.raises(ConfigError, match=r"t.conf:2: proto_exclude: bad protocol number '256'"):
        parse_config_text("[detector]\nproto_exclude = 47, 256\n", "t.conf")
    _, warn = parse_config_text("[detector]\nmodes = ssctp\nsctp_ports =\n", "t.conf")
    assert any("ssctp sentry watches nothing" in w for w in warn)


def test_records_accept_the_new_values() -> None:
    msg = R.alert_message("proto", S4, "ip", 47)
    assert msg == f"attackalert: IP protocol scan from host: {S4}/{S4} to IP protocol: 47"
    assert R.alert_message("init", S6, "sctp", 2905) == (
        f"attackalert: SCTP INIT scan from host: {S6}/{S6} to SCTP port: 2905")
    assert R.alert_message("cookie", S6, "sctp", 2905).startswith("attackalert: SCTP COOKIE-ECHO scan")
    for proto, scan, mode in (("ip", "proto", "aproto"), ("sctp", "init", "ssctp"), ("sctp", "cookie", "asctp")):
        rec = R.validate({"MESSAGE": "m", "PS_PROTO": proto, "PS_SCAN": scan, "PS_MODE": mode, "PS_PORT": "47"})
        assert rec.get("PS_PROTO") == proto
    with pytest.raises(R.RecordError):
        R.validate({"MESSAGE": "m", "PS_PROTO": "icmp"})


# ----------------------------------------------------------------------------- the detector's two paths

OTHER_KINDS = ["sctp-init", "sctp-cookie", "sctp-abort", "proto", "proto", "proto", "tcp"]


def _other_packet(kind: str, raw_src: bytes, port: int, proto: int) -> bytes:
    v6 = len(raw_src) == 16
    src = str(ipaddress.ip_address(raw_src))
    dst = str(ipaddress.ip_address(ring_test.LOCAL[1] if v6 else ring_test.LOCAL[0]))
    l3: Packet = IPv6(src=src, dst=dst) if v6 else IP(src=src, dst=dst)
    if kind.startswith("sctp"):
        chunk = {"sctp-init": SCTPChunkInit(), "sctp-cookie": SCTPChunkCookieEcho(), "sctp-abort": Raw(b"\x06\0\0\4")}
        return bytes(l3 / SCTP(sport=5000, dport=port) / chunk[kind])
    if kind == "tcp":
        return bytes(l3 / TCP(dport=port, flags="S"))
    if v6:
        return bytes(IPv6(src=src, dst=dst, nh=proto, plen=0))
    return bytes(IP(src=src, dst=dst, proto=proto))


OTHER_PACKETS = st.tuples(st.sampled_from(OTHER_KINDS), st.sampled_from([0, 0, 0, 1, 3, 5]),
                          st.sampled_from([1, 2, 80, 2905, 36412]), st.sampled_from([3, 5, 7, 8, 9, 58, 47, 99, 132]))


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.lists(OTHER_PACKETS, max_size=ring_test.NFRAMES), min_size=1, max_size=6))
def test_on_ring_is_on_packet_for_sctp_and_protocols(clock: ring_test.Clock,  # noqa: F811 - the fixture
                                                     rings: list[list[tuple[str, int, int, int]]]) -> None:
    """The hot path's SCTP / IP-protocol branch does what the reference on_packet does, frame for frame."""
    clock.now = 1000.0
    dets = [ring_test.make_detector(0, 65536, 50) for _ in range(2)]
    for det, _ in dets:
        pipe = det.pipe
        pipe.other = OtherSentries({2905: "ssctp", 36412: "asctp", 1: "asctp"}, "aproto", frozenset({47}))
        pipe.other.handled4, pipe.other.handled6 = hostproto.CORE4, hostproto.CORE6
        pipe.other_bads = OTHER_BADS
        pipe.other_at = clock.now + 1e9  # no /proc reads
    (one, one_sink), (two, two_sink) = dets
    cap1, cap2 = ring_test.make_ring(), ring_test.make_ring()
    try:
        for specs in rings:
            clock.now += 0.01
            frames = [(_other_packet(k, ring_test.SOURCES[s], port, proto), 3) for k, s, port, proto in specs]
            ring_test.fill(cap1, frames)
            ring_test.fill(cap2, frames)
            while cap1.drain(handler(one.pipe)):
                pass
            while two.pipe.on_ring(cap2):
                pass
            assert ring_test.snapshot(one, one_sink, cap1) == ring_test.snapshot(two, two_sink, cap2)
        for rec in two_sink.records:
            assert (rec.get("PS_PROTO"), rec.get("PS_SCAN")) in {("sctp", "init"), ("sctp", "cookie"),
                                                                 ("ip", "proto"), ("tcp", "syn")}, rec.fields
    finally:
        ring_test.close(one, two, cap1, cap2)


def test_on_ring_reports_an_ip_protocol_scan(clock: ring_test.Clock) -> None:  # noqa: F811 - the fixture
    det, sink = ring_test.make_detector(0, 65536, 50)
    pipe = det.pipe
    pipe.other = OtherSentries({}, "aproto")
    pipe.other.handled4, pipe.other.handled6 = hostproto.CORE4, hostproto.CORE6
    pipe.other_bads = OTHER_BADS
    pipe.other_at = clock.now + 1e9
    cap = ring_test.make_ring()
    src = ring_test.SOURCES[0]
    ring_test.fill(cap, [(_other_packet("proto", src, 0, p), 7) for p in (3, 3, 1, 5, 7, 8, 9, 99)])
    while pipe.on_ring(cap):
        pass
    scans = [r for r in sink.records if r.get("PS_EVENT") == "scan"]
    assert len(scans) == 1 and scans[0].get("PS_PORT") == "9" and scans[0].get("PS_PORTS") == "5"
    assert scans[0].get("PS_IFACE") == "if7" and scans[0].get("PS_MODE") == "aproto"
    ring_test.close(det, cap)
