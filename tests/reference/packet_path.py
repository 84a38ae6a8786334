"""The detector's per-packet path: what ``pipeline.Pipeline.on_ring`` does for each frame of a batch, written
plainly, one packet per call (a ``RingCapture.drain`` handler). Tests run both over the same rings and compare
every counter, tracker state and record (tests/unit/detector/test_detector_ring.py, test_proto_other.py);
bench/hotpath.py measures both.

It uses the general parser (``packet.parse``, not the hot path's inline one), reads the clock for each packet,
and asks the same verdict (``admit.HostView``) through the same refreshes as the hot path.
"""

from __future__ import annotations

import mmap
import time
from collections.abc import Callable

from portsentinel.detector.adapters.capture import ifindex_at
from portsentinel.detector.admit import REFRESH
from portsentinel.detector.packet import Bad, OtherTuple, Probe, parse, parse_other
from portsentinel.detector.pipeline import TCP, TCP_KINDS, UDP, Pipeline


def on_packet(pipe: Pipeline, buf: mmap.mmap, start: int, length: int, ifoff: int) -> None:
    """One captured packet (``buf`` is the capture ring, ``ifoff`` where its interface index is)."""
    c = pipe.counters
    c.packets += 1
    res = parse(buf, start, length)
    whole = None
    if res is Bad.FRAGMENT:
        whole = pipe.frags.feed(buf, start, length, time.monotonic())
        if whole is None:
            return
        res = parse(whole)
    if not isinstance(res, Probe):
        if res not in pipe.other_bads:
            oth: OtherTuple | Bad = res
        else:
            oth = parse_other(buf, start, length) if whole is None else parse_other(whole)
        if isinstance(oth, Bad):
            c.bad[res.name.lower()] += 1
        else:
            pipe.on_other(oth, ifindex_at(buf, ifoff), time.monotonic(), res)
        return
    src, dst, proto, port, flags = res
    mode = pipe.watch[proto].get(port)
    if mode is None:
        c.bad["unwatched"] += 1
        return
    scan = "udp" if proto == UDP else TCP_KINDS[flags]  # == classify(proto, flags); parse gives 6 or 17
    if scan is None:
        return
    now = time.monotonic()
    verdict = pipe.view.probe(src, dst, proto, port, scan, now)
    if verdict >= REFRESH:
        verdict = pipe.settle(verdict, src, dst, proto, port, scan, now)
    if verdict:
        c.dropped(verdict)
        return
    c.probes += 1
    c.kinds[256 if proto == UDP else flags] += 1
    # Tracker.hit stores the interface index only on the probe that crosses the trigger: read it then.
    net = src if pipe.full4 and len(src) == 4 else pipe.netof(src)
    st = pipe.tracker.hit(net + (b"\x06" if proto == TCP else b"\x11"), dst, proto, port, scan, mode, 0, False, now)
    if st is not None:
        st.src = src
        st.ifindex = ifindex_at(buf, ifoff)
        rec = pipe.decider.on_trigger(st, now, time.time())
        if rec is not None:
            pipe.emit(rec)


def handler(pipe: Pipeline) -> Callable[[mmap.mmap, int, int, int], None]:
    """``on_packet`` bound to ``pipe``, for ``RingCapture.drain``."""
    def one(buf: mmap.mmap, start: int, length: int, ifoff: int) -> None:
        on_packet(pipe, buf, start, length, ifoff)
    return one
