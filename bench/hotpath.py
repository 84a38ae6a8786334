#!/usr/bin/env python3
"""The detector's per-packet cost without a network: a TPACKET_V2 ring in memory, filled with SYNs, drained
by the real RingCapture.drain into the per-packet reference path (tests/reference/packet_path.py), and by the
real Pipeline.on_ring (what the detector's loop runs: the same per batch). No root needed.

  .venv/bin/python -m bench.hotpath            ns per packet, split by stage
  .venv/bin/python -m bench.hotpath --profile  plus cProfile of the drain loop
  .venv/bin/python -m bench.hotpath --fragments   the ring holds random spoofed IPv4 fragments instead
                                                 (each one a new reassembly queue: the flood's worst case)
"""

from __future__ import annotations

import argparse
import cProfile
import ipaddress
import mmap
import pstats
import random
import struct
import sys
import time
from collections.abc import Callable
from pathlib import Path

from scapy.layers.inet import IP, TCP
from scapy.layers.sctp import SCTP, SCTPChunkInit

from portsentinel import record as R
from portsentinel.common.hostproto import handled_protocols
from portsentinel.detector.adapters.capture import RingCapture
from portsentinel.detector.classify import classify
from portsentinel.detector.config.model import DetectorConfig
from portsentinel.detector.other import OtherSentries
from portsentinel.detector.packet import Bad, parse, parse_tuple
from portsentinel.detector.pipeline import OTHER_BADS
from portsentinel.detector.service import Detector
from tests.reference.packet_path import handler

ROOT = Path(__file__).resolve().parents[1]

FRAME = 512
NFRAMES = 16384
NET_OFF = 80  # TPACKET_ALIGN(TPACKET2_HDRLEN + 16) for a cooked socket
SRC, DST = "198.18.7.2", "198.18.7.1"


class NullSink:
    name = "null"

    def write(self, record: R.Record) -> None:
        pass

    def reopen(self) -> None:
        pass

    def close(self) -> None:
        pass


def make_ring(sources: int = 1, fragments: bool = False, other: bool = False) -> RingCapture:
    """A ring of SYNs; with ``fragments``, of random fragments; with ``other``, of SCTP INITs and IP protocol
    probes (nmap -sY and -sO), half each."""
    ring = mmap.mmap(-1, FRAME * NFRAMES)
    rnd = random.Random(9)
    for i in range(NFRAMES):
        src = SRC if sources == 1 else str(ipaddress.IPv4Address(0x0A000000 + (i % sources) + 1))
        if fragments:  # refilled rounds repeat them: each round starts with an already full table
            pkt = bytes(IP(src=str(ipaddress.IPv4Address(rnd.getrandbits(32))), dst=DST, id=rnd.getrandbits(16),
                           flags="MF", frag=rnd.getrandbits(13), proto=6) / bytes(16))
        elif other:
            pkt = bytes(IP(src=src, dst=DST) / SCTP(sport=40000, dport=1 + i % 1024) / SCTPChunkInit() if i % 2
                        else IP(src=src, dst=DST, proto=100 + i % 100))
        else:
            pkt = bytes(IP(src=src, dst=DST) / TCP(sport=40000 + (i % 1000), dport=1 + i % 1024, flags="S"))
        off = i * FRAME
        struct.pack_into("<IIIHH", ring, off, 1, len(pkt), len(pkt), NET_OFF, NET_OFF)
        struct.pack_into("<HHi", ring, off + 32, 17, 8, 3)  # sockaddr_ll: family, protocol, ifindex
        ring[off + NET_OFF:off + NET_OFF + len(pkt)] = pkt
    cap = RingCapture.__new__(RingCapture)
    cap.ring, cap.status = ring, memoryview(ring).cast("I")
    cap.frame_size, cap.nframes, cap.index, cap.iface = FRAME, NFRAMES, 0, "lab0"
    return cap


def refill(cap: RingCapture, frames: int = NFRAMES) -> None:
    st = cap.status
    for i in range(NFRAMES):
        st[(i * FRAME) >> 2] = 1 if i < frames else 0
    cap.index = 0


def make_detector() -> Detector:
    cfg = DetectorConfig(modes=("atcp",), interface="lab0", output="jsonl", advanced_tcp=65535,
                         advanced_exclude_tcp=())
    det = Detector(cfg, sink=NullSink())
    det.pipe.watch = {6: {p: "atcp" for p in range(1, 65536)}, 17: {}}
    view = det.pipe.view
    view.local = frozenset({ipaddress.ip_address(DST).packed})
    view.local_at = time.monotonic() + 1e9
    view.in_use = {6: frozenset(), 17: frozenset()}
    view.in_use_at = {6: time.monotonic() + 1e9, 17: time.monotonic() + 1e9}  # no /proc reads here
    return det


def per_packet(fn: object, cap: RingCapture, rounds: int, batch: Callable[[RingCapture], int] | None = None,
               frames: int = NFRAMES) -> float:
    """Best ns per packet over ``rounds`` rings of ``frames`` packets: drained with ``cap.drain(fn)``, or
    ``batch(cap)``."""
    best = float("inf")
    for _ in range(rounds):
        refill(cap, frames)
        t = time.perf_counter()
        n = 0
        while True:
            k = batch(cap) if batch is not None else cap.drain(fn)  # type: ignore[arg-type]
            if not k:
                break
            n += k
        best = min(best, (time.perf_counter() - t) / n)
    return best * 1e9


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--sources", type=int, default=1, help="distinct sources cycled through the ring")
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--fragments", action="store_true", help="random spoofed IPv4 fragments instead of SYNs")
    args = ap.parse_args()
    cap = make_ring(args.sources, args.fragments)
    det = make_detector()

    def nothing(buf: object, start: int, length: int, ifoff: int) -> None:
        pass

    def parse_only(buf: object, start: int, length: int, ifoff: int) -> None:
        parse(buf, start, length)  # type: ignore[arg-type]

    def parse_classify(buf: object, start: int, length: int, ifoff: int) -> None:
        res = parse(buf, start, length)  # type: ignore[arg-type]
        if not isinstance(res, Bad):
            classify(res[2], res[4])

    def tuple_only(buf: object, start: int, length: int, ifoff: int) -> None:
        parse_tuple(buf, start, length)  # type: ignore[arg-type]

    stages = [("drain loop, empty handler", nothing), ("+ parse", parse_only), ("+ classify", parse_classify),
              ("+ parse_tuple (hot path's)", tuple_only),
              ("reference on_packet (whole)", handler(det.pipe))]
    print(f"python {sys.version.split()[0]}; {NFRAMES} frames per round, best of {args.rounds}; "
          f"{'random fragments' if args.fragments else f'{args.sources} source(s)'}")
    for name, fn in stages:
        print(f"  {name:<30} {per_packet(fn, cap, args.rounds):7.0f} ns/packet")
    det = make_detector()  # a fresh tracker, as for the reference path
    print(f"  {'Pipeline.on_ring (whole, batch)':<30} {per_packet(None, cap, args.rounds, det.pipe.on_ring):7.0f} "
          "ns/packet  <- the detector's hot path")
    if args.fragments:  # a full ring sheds the fragments of its first half (see service.py); half a ring does not
        fed = make_detector()
        half = per_packet(None, cap, 2 * args.rounds, fed.pipe.on_ring, NFRAMES // 2 - 1)
        print(f"  {'on_ring, every fragment fed':<30} {half:7.0f} ns/packet  (ring under half full: "
              f"{fed.frags.counters.shed} shed; {det.frags.counters.shed} shed in the full-ring line above)")
    # The same ring size of SCTP INITs and IP protocol probes through the SCTP and IP-protocol sentries.
    odet = make_detector()
    opipe = odet.pipe
    opipe.other = OtherSentries(dict.fromkeys(range(1, 65536), "asctp"), "aproto")
    opipe.other.handled4, opipe.other.handled6 = handled_protocols()
    opipe.other_bads = OTHER_BADS
    opipe.other_at = time.monotonic() + 1e9  # no /proc reads here
    other = make_ring(args.sources, other=True)
    print(f"  {'on_ring, SCTP INIT + -sO probes':<30} {per_packet(None, other, args.rounds, opipe.on_ring):7.0f} "
          "ns/packet  (asctp + aproto, not TCP/UDP)")
    t = time.perf_counter()
    for _ in range(100):
        det.pipe.refresh_in_use(6, time.monotonic())
    print(f"  refresh_in_use(tcp), every socket {(time.perf_counter() - t) * 10:6.2f} ms per call "
          "(the tick: every 2 s; the hot path: for ACK and FIN/ACK probes, at most every 50 ms)")
    if args.profile:
        prof = cProfile.Profile()
        refill(cap)
        prof.enable()
        while det.pipe.on_ring(cap):
            pass
        prof.disable()
        pstats.Stats(prof).sort_stats("tottime").print_stats(12)
    return 0


if __name__ == "__main__":
    sys.exit(main())
