"""Packets to records: frame → parse → classify → admit → tracker → decide, for every sentry's input.

:class:`Pipeline` holds what the sentries watch, the host's facts (``admit.HostView``), the tracker, the
decider and the reassembler, and runs each input through them:

- :meth:`Pipeline.on_ring`: every frame waiting in a capture ring, per batch (the hot path; what
  ``tests/reference/packet_path.py`` does per packet, which the unit tests hold it to);
- :meth:`Pipeline.on_other`: an SCTP or IP-protocol packet from the ring;
- :meth:`Pipeline.on_connection`: a classic sentry's accepted connection or datagram.

Every path asks ``admit.HostView`` for the verdict. The host's facts are read here when the verdict asks
(``procnet`` adapters); records go to the ``emit`` callback the service passes in. The service owns the
sockets, the loop, the signals and the sinks.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from portsentinel import record as R
from portsentinel.common import hostproto
from portsentinel.common import rearm as rearm_msg

from .adapters import procnet
from .adapters.capture import FRAME, TP_STATUS_USER, RingCapture
from .admit import IGNORED, IN_USE, LATE_ACK, NOT_LOCAL, REFRESH, REFRESH_LISTENERS, REFRESH_LOCAL, HostView
from .classify import classify
from .config.model import DetectorConfig
from .decide import Decider
from .metrics import PROTO_NAMES
from .other import OtherSentries
from .packet import V4_L4, Bad, OtherTuple, ProbeTuple, parse_other, parse_tuple
from .reassembly import Reassembler
from .tracker import SourceState, Tracker, masker

TCP, UDP = 6, 17
STEALTH = {"stcp": TCP, "atcp": TCP, "sudp": UDP, "audp": UDP}
#: What parse says of a packet that parse_other may read (another protocol; an IPv6 extension chain cut short).
OTHER_BADS = frozenset((Bad.OTHER_PROTO, Bad.TRUNCATED))
#: classify(TCP, flags) for every flags byte, computed once: one tuple index on the hot path.
TCP_KINDS: tuple[str | None, ...] = tuple(classify(TCP, f) for f in range(256))
#: Frames per on_ring call.
BATCH = 4096


@dataclass
class Counters:
    packets: int = 0
    probes: int = 0
    records: int = 0
    not_local: int = 0
    in_use: int = 0
    ignored: int = 0
    late_ack: int = 0  # ACK-bearing segments to a free port of the ephemeral range: late ends of connections
    drops: int = 0
    rearm_msgs: int = 0  # valid re-arm messages from the responder
    rearm_bad: int = 0  # refused ones
    rearmed: int = 0  # sources forgotten because their ban ended
    bad: Counter[str] = field(default_factory=Counter)
    #: Probes by kind, for the metrics (detector/metrics.py): index = TCP flags byte, 256 = UDP (the hot path's
    #: list), and (protocol, scan) for the other paths (SCTP, IP protocols, classic sentries).
    kinds: list[int] = field(default_factory=lambda: [0] * 257)
    other_kinds: Counter[tuple[str, str]] = field(default_factory=Counter)
    events: Counter[str] = field(default_factory=Counter)  # records written, by PS_EVENT
    ports: Counter[tuple[str, str]] = field(default_factory=Counter)  # scan records by (protocol, port), capped

    def dropped(self, verdict: int, n: int = 1) -> None:
        """Count ``n`` probes dropped by an ``admit`` verdict."""
        if verdict == NOT_LOCAL:
            self.not_local += n
        elif verdict == IN_USE:
            self.in_use += n
        elif verdict == LATE_ACK:
            self.late_ack += n
        elif verdict == IGNORED:
            self.ignored += n


def _resolver(cfg: DetectorConfig) -> Callable[[str], str] | None:
    if not cfg.resolve_host:
        return None
    from .adapters.resolver import reverse_name

    return reverse_name


class Pipeline:
    """One detector's probes, from every sentry, through admit, tracker and decider to ``emit``."""

    def __init__(self, cfg: DetectorConfig, emit: Callable[[R.Record], None]) -> None:
        self.emit = emit
        self.counters = Counters()
        #: Port → mode, per protocol: the TCP and UDP ports the capture sentries watch.
        self.watch: dict[int, dict[int, str]] = {TCP: {}, UDP: {}}
        self.other = OtherSentries({})
        self.other_bads: frozenset[Bad] = frozenset()
        self.other_at = 0.0
        self.view = HostView(cfg.ignore, cfg.ignore_self, procnet.ephemeral_ports())
        self.tracker = Tracker(trigger=cfg.scan_trigger, window=cfg.window, summary_interval=cfg.summary_interval,
                               max_sources=cfg.max_sources, proto_trigger=cfg.proto_trigger)
        self.frags = Reassembler(**procnet.fragment_sysctls())
        self.decider = Decider(self.tracker, window=cfg.window, max_records_per_second=cfg.max_records_per_second,
                               ifname=procnet.ifname, resolve=_resolver(cfg),
                               prefixes=(cfg.ipv4_prefix, cfg.ipv6_prefix))
        #: Networks (ipv4_prefix / ipv6_prefix) of the host's own addresses: the LAN, whose hosts are counted one
        #: by one (a scanner next door is not its neighbours), as the responder bans them and the trap holds them.
        self.near: set[bytes] = set()
        #: raw source address → raw address of the network it is tracked by (ipv4_prefix / ipv6_prefix).
        self.netof = masker(cfg.ipv4_prefix, cfg.ipv6_prefix, self.near)
        self.full4 = cfg.ipv4_prefix == 32
        self.prefixes = (cfg.ipv4_prefix, cfg.ipv6_prefix)

    def reconfigure(self, cfg: DetectorConfig) -> None:
        """A reloaded configuration: the tracker keeps its sources unless the prefixes change (then the keys
        have another shape, and it starts afresh)."""
        t = self.tracker
        t.trigger, t.window, t.summary_interval, t.max_sources = (cfg.scan_trigger, cfg.window,
                                                                  cfg.summary_interval, cfg.max_sources)
        t.proto_trigger = cfg.proto_trigger
        self.decider.window = cfg.window
        if (cfg.ipv4_prefix, cfg.ipv6_prefix) != self.decider.prefixes:
            self.decider.prefixes = self.prefixes = (cfg.ipv4_prefix, cfg.ipv6_prefix)
            self.netof, self.full4 = masker(cfg.ipv4_prefix, cfg.ipv6_prefix, self.near), cfg.ipv4_prefix == 32
            self.refresh_local(time.monotonic())  # the host's own networks for the new prefixes
            self.tracker = self.decider.tracker = Tracker(trigger=cfg.scan_trigger, window=cfg.window,
                                                          summary_interval=cfg.summary_interval,
                                                          max_sources=cfg.max_sources,
                                                          proto_trigger=cfg.proto_trigger)
        self.decider.resolve = _resolver(cfg)
        self.view.set_ignore(cfg.ignore, cfg.ignore_self)

    def set_watch(self, cfg: DetectorConfig) -> None:
        """What the capture sentries watch: TCP and UDP port → mode, the SCTP ports and the IP-protocol sentry."""
        self.watch = {TCP: {}, UDP: {}}
        for mode in ("atcp", "audp", "stcp", "sudp"):  # a listed port takes the list mode's name
            if mode in cfg.modes:
                proto = STEALTH[mode]
                for port in cfg.watched_ports("tcp" if proto == TCP else "udp", mode):
                    self.watch[proto][port] = mode
        sctp_watch: dict[int, str] = {}
        for mode in ("asctp", "ssctp"):  # a listed port takes the list mode's name
            if mode in cfg.modes:
                sctp_watch.update(dict.fromkeys(cfg.watched_ports("sctp", mode), mode))
        self.other = OtherSentries(sctp_watch, "aproto" if "aproto" in cfg.modes else "",
                                   frozenset(cfg.proto_exclude))
        self.other_bads = OTHER_BADS if self.other.active else frozenset()

    # ----------------------------------------------------------------- host facts (read when asked)
    def refresh_in_use(self, proto: int, now: float, *, listening_only: bool = False) -> None:
        """Re-read the ports with a socket. ``listening_only`` (cheap, for the hot path) re-reads TCP listeners
        and keeps the connected sockets from the last full read."""
        name = "tcp" if proto == TCP else "udp"
        only = listening_only and proto == TCP
        self.view.set_in_use(proto, procnet.ports_in_use(name, listening_only=True) if only
                             else procnet.ports_in_use(name), now, listening_only=only)

    def refresh_other(self, now: float) -> None:
        """Re-read the SCTP ports in use and the protocols this host handles (the SCTP and IP-protocol sentries)."""
        o = self.other
        if o.sctp_watch:
            o.sctp_in_use = procnet.ports_in_use("sctp")
        if o.proto_mode:
            o.handled4, o.handled6 = hostproto.handled_protocols()
        self.other_at = now

    def refresh_local(self, now: float) -> None:
        self.view.set_local(procnet.local_addresses(), now)
        plain = masker(self.prefixes[0], self.prefixes[1])
        near = {plain(a) for a in self.view.local}
        if near != self.near:
            self.near.clear()
            self.near.update(near)

    def settle(self, verdict: int, src: bytes, dst: bytes, proto: int, port: int, scan: str, now: float) -> int:
        """Read again what ``verdict`` (a REFRESH_*) asks for, stamped ``now``, and ask again until the verdict
        is final. Each fact is read at most once: the three reads leave nothing stale at ``now``."""
        for _ in range(3):
            if verdict == REFRESH_LOCAL:
                self.refresh_local(now)
            elif verdict == REFRESH_LISTENERS:
                self.refresh_in_use(proto, now, listening_only=True)
            elif verdict >= REFRESH:  # REFRESH_SOCKETS
                self.refresh_in_use(proto, now)
            else:
                break
            verdict = self.view.probe(src, dst, proto, port, scan, now)
        return verdict

    def tick(self, now: float) -> None:
        """Once a second, between batches: due summaries, stale host facts, expired fragment queues."""
        for rec in self.decider.tick(now, time.time()):
            self.emit(rec)
        for proto in (TCP, UDP):
            if now - self.view.in_use_at[proto] > 2.0:
                self.refresh_in_use(proto, now)
        if self.other.active and now - self.other_at > 2.0:
            self.refresh_other(now)
        if now - self.view.local_at > 10.0:
            self.refresh_local(now)
        self.frags.expire(now)

    def rearm(self, msg: rearm_msg.Rearm) -> int:
        """The responder says bans ended: forget those sources (their next probe is a new scan record) and write
        the final summary of what they sent while banned. Returns how many sources were forgotten."""
        states: list[SourceState] = []
        for addr in msg.addresses:  # the source is tracked by its network (ipv4_prefix, ipv6_prefix)
            states += self.tracker.rearm(self.netof(addr))
            if len(addr) == 4:  # the same host seen through IPv6 as a v4-mapped address
                states += self.tracker.rearm(self.netof(b"\0" * 10 + b"\xff\xff" + addr))
        for size, lo, _hi in msg.networks:  # a network narrower than the one the detector counts by
            states += self.tracker.rearm(self.netof(lo.to_bytes(size, "big")))
        if msg.networks or msg.everything:
            states += self.tracker.rearm_networks(msg.networks, everything=msg.everything)
        if states:
            for rec in self.decider.rearmed(states, time.monotonic(), time.time()):
                self.emit(rec)
        return len(states)

    # ----------------------------------------------------------------- the hot path
    def on_ring(self, cap: RingCapture, budget: int = BATCH) -> int:
        """Every packet waiting in ``cap``'s ring, at most ``budget`` of them. Returns how many. This is the hot
        path (bench/hotpath.py measures it); ``tests/reference/packet_path.py`` is the same per packet.

        What is done once per batch instead of once per packet:

        - The time: one ``time.monotonic()`` for the batch (4,096 frames take a few ms), read again after
          anything slow (a refresh of the host's sockets or addresses, a record).
        - Counters: local ints, added to ``self.counters`` at the end. Bound to locals: the watch dicts and the
          verdict (``HostView.probe``; its facts are refreshed in place).
        - The tracker: probes from the same source as the previous one, already triggered, are collected
          (their port codes in ``run``) and counted by one ``Tracker.hit_run`` (no lookup; the source is already
          the most recently seen, so the order is as ``hit`` leaves it) before anything else touches the
          tracker or the time moves on, and at the end of the batch. ``tick`` runs between batches.

        Each frame goes back to the kernel as soon as it is parsed: ``parse_tuple`` copies what is needed and
        the interface index is read with the frame header, so a slow step does not hold ring space.
        """
        ring, status, fs, nframes = cap.ring, cap.status, cap.frame_size, cap.nframes
        frag_feed = self.frags.feed
        frame, v4_l4, size = FRAME.unpack_from, V4_L4.unpack_from, len(ring)
        watch_tcp, watch_udp = self.watch[TCP], self.watch[UDP]
        verdict, settle = self.view.probe, self.settle
        other_bads = self.other_bads
        kinds = TCP_KINDS
        kinds_n = self.counters.kinds
        tracker = self.tracker
        hit, hit_run, tracker_get = tracker.hit, tracker.hit_run, tracker.get
        netof, full4 = self.netof, self.full4
        now = time.monotonic()
        # The source the previous hit counted: (address, protocol) and its state.
        prev_src, prev_proto = b"", 0
        prev_st: SourceState | None = None
        run: list[int] = []  # port codes of probes from prev_st's source not yet counted (hit_run)
        run_append = run.append
        i = cap.index
        # Over half the ring waiting: fragments are shed (counted) until it drains, so that a fragment flood the
        # loop cannot keep up with costs frames of itself, not the kernel dropping whole probes with it.
        shed = status[((i + (nframes >> 1)) % nframes) * fs >> 2] & TP_STATUS_USER
        n = probes = 0
        dropped = [0, 0, 0, 0, 0]  # by admit verdict
        try:
            while n < budget:
                off = i * fs
                if not status[off >> 2] & TP_STATUS_USER:
                    break
                length, net, ifindex = frame(ring, off)
                start = off + net
                # parse_tuple's common case inline (same checks, see packet.py): IPv4 without options, TCP with
                # a valid data offset or UDP, 40 bytes or more. Anything else goes through parse_tuple.
                fast = False
                if length >= 40 and start + 40 <= size:
                    vi, frag, proto, src, dst, port, doff, flags = v4_l4(ring, start)  # flags: junk for UDP
                    fast = vi == 0x45 and not frag & 0x3FFF and (proto == TCP and doff >= 0x50 or proto == UDP)
                if not fast:  # (an IPv4 fragment has an offset or MF in 0x3FFF: one bit test above)
                    whole = None
                    if (other_bads and length >= 20 and ring[start] == 0x45 and ring[start + 9] != TCP
                            and ring[start + 9] != UDP and not (ring[start + 6] & 0x3F or ring[start + 7])):
                        res: ProbeTuple | Bad | None = Bad.OTHER_PROTO  # IPv4, not TCP/UDP, whole: parse_other
                    elif length >= 20 and ring[start] >> 4 == 4 and (ring[start + 6] & 0x3F or ring[start + 7]):
                        res = Bad.FRAGMENT  # an IPv4 fragment (offset or MF): straight to the reassembler
                    else:
                        res = parse_tuple(ring, start, length)
                    if res is Bad.FRAGMENT:  # copied out of the ring by the reassembler
                        if shed:
                            self.frags.counters.shed += 1
                            res = None
                        else:
                            whole = frag_feed(ring, start, length, now)
                            res = None if whole is None else parse_tuple(whole)
                    # SCTP or another IP protocol: read it before the frame goes back
                    oth = ((parse_other(ring, start, length) if whole is None else parse_other(whole))
                           if type(res) is Bad and res in other_bads else None)
                status[off >> 2] = 0  # give the frame back to the kernel: what is needed is copied out
                i += 1
                if i == nframes:
                    i = 0
                n += 1
                if not fast:
                    if res is None:  # a fragment held for its datagram, or dropped as the host drops it
                        continue
                    if isinstance(res, Bad):
                        if oth is not None and not isinstance(oth, Bad):
                            if run:
                                assert prev_st is not None  # a run is only collected while prev_st is set
                                hit_run(prev_st, run, now)
                                run.clear()
                            self.on_other(oth, ifindex, now, res)
                            now = time.monotonic()
                            prev_st = None  # the tracker may have changed: hit_again's shortcut is off
                        else:
                            self.counters.bad[res.name.lower()] += 1
                        continue
                    src, dst, proto, port, flags = res
                if proto == TCP:
                    mode = watch_tcp.get(port)
                    scan = kinds[flags]  # == classify(TCP, flags)
                else:  # parse gives 6 or 17
                    mode = watch_udp.get(port)
                    scan = "udp"
                    flags = 256  # kinds' UDP slot
                if mode is None:
                    self.counters.bad["unwatched"] += 1
                    continue
                if scan is None:
                    continue
                v = verdict(src, dst, proto, port, scan, now)
                if v:
                    if v >= REFRESH:  # a host fact may be stale: read it, then the verdict is final
                        if run:  # the run so far was counted at this time
                            assert prev_st is not None  # a run is only collected while prev_st is set
                            hit_run(prev_st, run, now)
                            run.clear()
                        v = settle(v, src, dst, proto, port, scan, now)
                        now = time.monotonic()
                    if v:
                        dropped[v] += 1
                        continue
                probes += 1
                kinds_n[flags] += 1
                if prev_st is not None and src == prev_src and proto == prev_proto and prev_st.triggered:
                    run_append(port + 65536 if proto == UDP else port)
                    continue
                if run:
                    assert prev_st is not None  # a run is only collected while prev_st is set
                    hit_run(prev_st, run, now)
                    run.clear()
                # The key is the source's network (its IPv6 /64 by default), the record names the address.
                key = (src if full4 and len(src) == 4 else netof(src)) + (b"\x06" if proto == TCP else b"\x11")
                st = hit(key, dst, proto, port, scan, mode, 0, False, now)
                if st is not None:  # hit stores the interface index only on the probe that crosses the trigger
                    st.src = src
                    st.ifindex = ifindex
                    rec = self.decider.on_trigger(st, now, time.time())
                    if rec is not None:
                        self.emit(rec)
                        now = time.monotonic()
                # Not hit's return value: the state may be gone already (evicted by its own insert).
                prev_src, prev_proto, prev_st = src, proto, tracker_get(key)
        finally:
            if run:
                assert prev_st is not None  # a run is only collected while prev_st is set
                hit_run(prev_st, run, now)
            cap.index = i
            c = self.counters
            c.packets += n
            c.probes += probes
            for v, count in enumerate(dropped):
                if count:
                    c.dropped(v, count)
        return n

    def on_other(self, pkt: OtherTuple, ifindex: int, now: float, reason: Bad = Bad.OTHER_PROTO) -> None:
        """A packet that is neither TCP nor UDP, read by ``parse_other``: the SCTP and IP-protocol sentries.
        ``reason`` is what ``parse`` said of it, counted when the packet is no probe of these sentries either
        (a TCP header cut short stays ``truncated``)."""
        c = self.counters
        if now - self.other_at > 1.0:  # a listener, a raw socket or a tunnel may have appeared
            self.refresh_other(now)
        probes = self.other.probes(pkt)
        if not probes:
            c.bad[reason.name.lower()] += 1
            return
        src, dst = pkt[0], pkt[1]
        v = self.view.packet(src, dst, now)
        if v == REFRESH_LOCAL:
            self.refresh_local(now)
            v = self.view.packet(src, dst, now)
        if v:
            c.dropped(v)
            return
        net = src if self.full4 and len(src) == 4 else self.netof(src)  # tracked by network, as TCP and UDP
        for key_byte, proto, port, scan, mode in probes:
            c.probes += 1
            c.other_kinds[(PROTO_NAMES.get(proto, "ip"), scan)] += 1
            st = self.tracker.hit(net + key_byte, dst, proto, port, scan, mode, 0, False, now)
            if st is not None:
                st.src = src
                st.ifindex = ifindex
                rec = self.decider.on_trigger(st, now, time.time())
                if rec is not None:
                    self.emit(rec)

    def on_connection(self, proto: str, port: int, src: bytes, dst: bytes) -> None:
        """A classic sentry's socket accepted a connection (``proto`` tcp: the handshake proves the source) or
        read a datagram (udp) from ``src`` to ``dst``: its own port ``port``."""
        c = self.counters
        c.packets += 1
        v = self.view.connection(src)
        if v:
            c.dropped(v)
            return
        c.probes += 1
        tcp = proto == "tcp"
        c.other_kinds[("tcp", "connect") if tcp else ("udp", "udp")] += 1
        now = time.monotonic()
        st = self.tracker.hit(self.netof(src) + (b"\x06" if tcp else b"\x11"), dst, TCP if tcp else UDP, port,
                              "connect" if tcp else "udp", proto, 0, tcp, now)
        if st is not None:
            st.src = src
            rec = self.decider.on_trigger(st, now, time.time())
            if rec is not None:
                self.emit(rec)
