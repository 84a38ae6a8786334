"""detector.pipeline.Pipeline.on_ring (the hot path, per batch) does what the reference path does for each
packet (tests/reference/packet_path.py).

Two detectors with the same configuration and host facts read the same packets from in-memory TPACKET_V2
rings: one through RingCapture.drain into the reference on_packet, the other through on_ring. The clock stands
still within a ring (on_ring reads it once per batch, on_packet once per packet), so every counter, every
tracker state in LRU order, every record and the ring's state must come out the same.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import mmap
import struct
import time
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from portsentinel import record as R
from portsentinel.detector.adapters import procnet
from portsentinel.detector.adapters.capture import RingCapture
from portsentinel.detector.config.model import DetectorConfig
from portsentinel.detector.service import Detector
from tests.reference.packet_path import handler

FRAME, NFRAMES, NET_OFF = 512, 16, 80


def a(text: str) -> bytes:
    return ipaddress.ip_address(text).packed


LOCAL = [a("203.0.113.1"), a("2001:db8::1")]
OTHER_DST = [a("203.0.113.99"), a("2001:db8::99")]
SOURCES = [a("198.51.100.1"), a("198.51.100.2"), a("198.51.100.3"), a("10.9.0.5"),  # 10.9/16 is ignored
           a("203.0.113.1"), a("2001:db8::7"), a("2001:db8::8")]  # 203.0.113.1 is the host itself
TCP_PORTS = [1, 2, 3, 22, 80, 443, 999, 5000]  # 22 listens, 443 is connected, 5000 is not watched
UDP_PORTS = [53, 69, 161, 5000]  # 53 is bound, 5000 is not watched
FLAGS = [0x02, 0x02, 0x02, 0x00, 0x01, 0x29, 0x10, 0x11, 0x12, 0x04, 0xC2]  # SYN weighted


class ListSink:
    name = "list"

    def __init__(self) -> None:
        self.records: list[R.Record] = []

    def write(self, record: R.Record) -> None:
        self.records.append(record)

    def reopen(self) -> None:
        pass

    def close(self) -> None:
        pass


def packet(kind: str, src: bytes, dst: bytes, port: int, flags: int) -> bytes:
    """Raw IP bytes; ``kind`` picks TCP, UDP or something parse() rejects."""
    if kind == "udp":
        l4, proto = struct.pack("!HHHH", 5353, port, 20, 0) + b"u" * 12, 17
    elif kind == "udp-short":
        l4, proto = struct.pack("!HHHH", 5353, port, 8, 0), 17
    elif kind == "icmp":
        l4, proto = b"\x08\x00" + b"\x00" * 30, 1
    else:
        doff = 0x30 if kind == "tcp-bad-offset" else 0x50
        l4, proto = struct.pack("!HHIIBBHHH", 40000, port, 0, 0, doff, flags, 1024, 0, 0), 6
    if len(src) == 16:
        dst16 = dst if len(dst) == 16 else LOCAL[1]
        return struct.pack("!IHBB16s16s", 0x60000000, len(l4), proto, 64, src, dst16) + l4
    dst4 = dst if len(dst) == 4 else LOCAL[0]
    frag = 0x0010 if kind == "fragment" else 0
    data = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(l4), 0, frag, 64, proto, 0, src, dst4) + l4
    return data[:30] if kind == "truncated" else data


def make_ring() -> RingCapture:
    cap = RingCapture.__new__(RingCapture)
    cap.ring = mmap.mmap(-1, FRAME * NFRAMES)
    cap.status = memoryview(cap.ring).cast("I")
    cap.frame_size, cap.nframes, cap.index, cap.iface = FRAME, NFRAMES, 0, "lab0"
    return cap


def fill(cap: RingCapture, frames: list[tuple[bytes, int]]) -> None:
    """Put ``frames`` (packet, interface index) in the ring from its current index on, wrapping around."""
    assert len(frames) <= NFRAMES
    for n, (pkt, ifindex) in enumerate(frames):
        off = ((cap.index + n) % NFRAMES) * FRAME
        cap.ring[off + NET_OFF:off + NET_OFF + len(pkt)] = pkt
        struct.pack_into("<IIIHH", cap.ring, off, 1, len(pkt), len(pkt), NET_OFF, NET_OFF)
        struct.pack_into("<HHi", cap.ring, off + 32, 17, 8, ifindex)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Iterator[Clock]:
    clk = Clock()
    monkeypatch.setattr(time, "monotonic", clk)
    monkeypatch.setattr(time, "time", lambda: 1.7e9 + clk.now)

    def in_use(proto: str, root: str = "", *, listening_only: bool = False) -> frozenset[int]:
        if proto == "udp":
            return frozenset({53})
        return frozenset({22}) if listening_only else frozenset({22, 443})

    monkeypatch.setattr(procnet, "ports_in_use", in_use)
    monkeypatch.setattr(procnet, "local_addresses", lambda root="": frozenset(LOCAL))
    monkeypatch.setattr(procnet, "ifname", lambda index: f"if{index}")
    yield clk


def make_detector(trigger: int, max_sources: int, rate: int) -> tuple[Detector, ListSink]:
    cfg = DetectorConfig(modes=("atcp", "audp"), interface="lab0", output="jsonl", wake_socket="",
                         scan_trigger=trigger, max_sources=max_sources, max_records_per_second=rate,
                         ignore=(ipaddress.ip_network("10.9.0.0/16"),))
    sink = ListSink()
    det = Detector(cfg, sink=sink)
    det.pipe.watch = {6: {p: ("atcp" if p % 2 else "stcp") for p in TCP_PORTS if p != 5000},
                 17: {p: "audp" for p in UDP_PORTS if p != 5000}}
    now = time.monotonic()
    det.pipe.refresh_local(now)
    det.pipe.refresh_in_use(6, now)
    det.pipe.refresh_in_use(17, now)
    return det, sink


def close(*objs: Detector | RingCapture) -> None:
    for obj in objs:
        if isinstance(obj, Detector):
            obj.waker.close()
            obj.sel.close()
        else:
            obj.status.release()
            obj.ring.close()


def snapshot(det: Detector, sink: ListSink, cap: RingCapture) -> tuple[object, ...]:
    t = det.tracker
    c = det.counters
    return ([(k, dataclasses.astuple(s)) for k, s in t._sources.items()], sorted(t._triggered), t.bitmaps,
            t.evictions, det.decider.suppressed,
            (c.packets, c.probes, c.records, c.not_local, c.in_use, c.late_ack, c.ignored, sorted(c.bad.items())),
            [r.fields for r in sink.records], cap.index, bytes(cap.ring[0::4]) == bytes(len(cap.ring) // 4),
            det.pipe.view.in_use_at, det.pipe.view.full_at, det.pipe.view.local_at)


KINDS = ["tcp"] * 10 + ["udp"] * 6 + ["udp-short", "icmp", "tcp-bad-offset", "fragment", "truncated"]
# Mostly one source (floods are runs from one source), sometimes another.
PACKETS = st.tuples(st.sampled_from(KINDS), st.sampled_from([0] * 6 + list(range(len(SOURCES)))), st.booleans(),
                    st.integers(0, 7), st.sampled_from(FLAGS), st.integers(1, 9))
# A ring's worth of packets, how long after the previous ring it arrives, and the batch size.
RINGS = st.tuples(st.sampled_from([0.0, 0.01, 0.06, 1.5, 31.0, 70.0]), st.lists(PACKETS, max_size=NFRAMES),
                  st.sampled_from([1, 3, 4096]))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.integers(0, 3), st.sampled_from([2, 4, 65536]), st.sampled_from([1, 50]), st.integers(0, NFRAMES - 1),
       st.lists(RINGS, min_size=1, max_size=8))
def test_on_ring_is_on_packet(clock: Clock, trigger: int, max_sources: int, rate: int, start: int,
                              rings: list[tuple[float, list[tuple[str, int, bool, int, int, int]], int]]) -> None:
    clock.now = 1000.0
    one, one_sink = make_detector(trigger, max_sources, rate)
    two, two_sink = make_detector(trigger, max_sources, rate)
    cap1, cap2 = make_ring(), make_ring()
    cap1.index = cap2.index = start
    try:
        compare(clock, one, one_sink, cap1, two, two_sink, cap2, rings)
    finally:
        close(one, two, cap1, cap2)


def compare(clock: Clock, one: Detector, one_sink: ListSink, cap1: RingCapture, two: Detector, two_sink: ListSink,
            cap2: RingCapture, rings: list[tuple[float, list[tuple[str, int, bool, int, int, int]], int]]) -> None:
    for dt, specs, budget in rings:
        clock.now += dt
        frames = []
        for kind, s, local, p, flags, ifindex in specs:
            src = SOURCES[s]
            dst = (LOCAL if local else OTHER_DST)[len(src) == 16]
            port = UDP_PORTS[p % len(UDP_PORTS)] if kind.startswith("udp") else TCP_PORTS[p]
            frames.append((packet(kind, src, dst, port, flags), ifindex))
        fill(cap1, frames)
        fill(cap2, frames)
        while cap1.drain(handler(one.pipe)):
            pass
        got = []
        while k := two.pipe.on_ring(cap2, budget):
            got.append(k)
        assert sum(got) == len(frames) and all(k <= budget for k in got)
        for det in (one, two):  # the one-second tick's summaries, between batches as in Detector.run
            for rec in det.decider.tick(clock.now, time.time()):
                det.emit(rec)
        assert snapshot(one, one_sink, cap1) == snapshot(two, two_sink, cap2)


def test_on_ring_counts_a_flood(clock: Clock) -> None:
    """One source, every port: one scan record, every probe counted, the trigger's interface index."""
    det, sink = make_detector(0, 65536, 50)
    det.pipe.watch[6] = {p: "atcp" for p in range(1, 65536)}
    cap = make_ring()
    src = a("198.51.100.1")
    total = 0
    for base in range(0, 160, NFRAMES):
        fill(cap, [(packet("tcp", src, LOCAL[0], 1000 + base + n, 0x02), 4 if base + n == 0 else 5)
                   for n in range(NFRAMES)])
        while k := det.pipe.on_ring(cap):
            total += k
    assert total == 160 and det.counters.packets == 160 and det.counters.probes == 160
    st1 = det.tracker.get(src + b"\x06")
    assert st1 is not None and st1.hits == 160 and st1.nports == 160 and st1.bitmap is not None
    assert [r.get(R.F_EVENT) for r in sink.records] == ["scan"]
    assert sink.records[0].get(R.F_IFACE) == "if4" and sink.records[0].get(R.F_PORT) == "1000"
    close(det, cap)


def _syn_fragments(src: str, port: int, ident: int) -> list[tuple[bytes, int]]:
    """nmap -f's shape: a SYN cut into 8, 8 and 4 bytes of TCP."""
    from scapy.layers.inet import IP, TCP

    seg = bytes(IP(src=src, dst="203.0.113.1") / TCP(sport=40000, dport=port, flags="S"))[20:]
    return [(bytes(IP(src=src, dst="203.0.113.1", id=ident, proto=6, frag=o // 8, flags="MF" if o < 16 else 0)
                   / seg[o:o + 8]), 3) for o in (0, 8, 16)]


def test_fragments_complete_into_a_probe(clock: Clock) -> None:
    det, sink = make_detector(0, 65536, 50)
    cap = make_ring()
    fill(cap, _syn_fragments("198.51.100.1", 3, 1))
    assert det.pipe.on_ring(cap) == 3
    assert det.counters.probes == 1 and det.frags.counters.datagrams == 1 and not det.counters.bad
    scan = [r for r in sink.records if r.event == "scan"]
    assert scan and scan[0].get(R.F_PORT) == "3" and scan[0].get(R.F_SCAN) == "syn"
    close(det, cap)


def test_fragments_are_shed_while_the_ring_is_over_half_full(clock: Clock) -> None:
    """A fragment flood the loop cannot keep up with costs fragments, not whole probes."""
    det, sink = make_detector(0, 65536, 50)
    cap = make_ring()
    frames = _syn_fragments("198.51.100.1", 3, 1) * 4 + [(packet("tcp", SOURCES[1], LOCAL[0], 1, 2), 3)] * 4
    fill(cap, frames)  # 16 of 16 frames waiting: the frame half a ring ahead is ready
    assert det.pipe.on_ring(cap) == NFRAMES
    assert det.frags.counters.shed == 12 and det.frags.counters.fragments == 0
    assert det.counters.probes == 4
    fill(cap, _syn_fragments("198.51.100.2", 1, 2))  # 3 waiting: fed to the reassembler again
    det.pipe.on_ring(cap)
    assert det.frags.counters.datagrams == 1 and det.counters.probes == 5
    close(det, cap)
