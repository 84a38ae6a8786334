"""Wiring: sentries → parser → classifier → tracker → decider → sink, in one selector loop.

SIGTERM/SIGINT stop cleanly, SIGHUP reloads the configuration (a bad new one is reported and the old one
kept) and reopens the JSON-lines file. A timer tick each second writes due summaries, pings the watchdog
and refreshes the host's sockets and addresses.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import selectors
import signal
import socket
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from portsentinel import __version__
from portsentinel import record as R
from portsentinel.common import hostproto
from portsentinel.common import rearm as rearm_msg
from portsentinel.common.metrics import Exporter
from portsentinel.common.sdnotify import Notifier
from portsentinel.common.wake import Waker

from .adapters import listeners as L
from .adapters import procnet
from .adapters.capture import FRAME, TP_STATUS_USER, CaptureError, RingCapture, ifindex_at
from .adapters.rearm import RearmSocket
from .adapters.sinks import Sink, open_sink
from .bpf import build as build_bpf
from .bpf import port_ranges
from .classify import classify
from .config.model import DetectorConfig
from .decide import Decider
from .metrics import PROTO_NAMES, tally_record
from .metrics import exporter as metrics_exporter
from .other import OtherSentries
from .packet import V4_L4, Bad, OtherTuple, Probe, ProbeTuple, parse, parse_other, parse_tuple
from .reassembly import Reassembler
from .tracker import SourceState, Tracker, masker

log = logging.getLogger("portsentinel.detector")

TCP, UDP = 6, 17
STEALTH = {"stcp": TCP, "atcp": TCP, "sudp": UDP, "audp": UDP}
#: What parse says of a packet that parse_other may read (another protocol; an IPv6 extension chain cut short).
OTHER_BADS = frozenset((Bad.OTHER_PROTO, Bad.TRUNCATED))
#: classify(TCP, flags) for every flags byte, computed once: one tuple index on the hot path.
_TCP_KINDS: tuple[str | None, ...] = tuple(classify(TCP, f) for f in range(256))
#: Frames per on_ring call.
BATCH = 4096
#: After a short batch (fewer than COALESCE_BELOW frames), the loop waits COALESCE seconds before it looks
#: again, so that a steady flood is read in batches of a few hundred frames rather than a wake-up every few
#: packets (each wake-up costs several µs: epoll, the selector, a context switch). This is what TPACKET_V3's
#: block timeout does in the kernel. It delays a probe's processing by at most COALESCE; the ring holds
#: 16,384 frames, 65 ms at 250,000 pps.
COALESCE = 0.0005
COALESCE_BELOW = 256


def ranges_text(ports: frozenset[int] | list[int]) -> str:
    return ",".join(f"{a}" if a == b else f"{a}-{b}" for a, b in port_ranges(ports))


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


class Detector:
    """One detector process: every configured sentry in one loop."""

    def __init__(self, cfg: DetectorConfig, *, reload: Callable[[], DetectorConfig] | None = None,
                 sink: Sink | None = None) -> None:
        self.cfg = cfg
        self._reload = reload
        self.sink = sink or open_sink(cfg.output, cfg.jsonl_path)
        self.waker = Waker(cfg.wake_socket)
        self.counters = Counters()
        self.notifier = Notifier()
        self.sel = selectors.DefaultSelector()
        self.captures: list[RingCapture] = []
        self.listeners: list[L.Listener] = []
        self.watch: dict[int, dict[int, str]] = {TCP: {}, UDP: {}}
        self.in_use: dict[int, frozenset[int]] = {TCP: frozenset(), UDP: frozenset()}
        self._in_use_at: dict[int, float] = {TCP: 0.0, UDP: 0.0}
        self.other = OtherSentries({})
        self._other_bads: frozenset[Bad] = frozenset()
        self._other_at = 0.0
        self._connected: frozenset[int] = frozenset()  # TCP ports with any socket at the last full read
        self._full_at = 0.0
        self.local: frozenset[bytes] = frozenset()
        self._local_at = 0.0
        self._ignore_cache: dict[bytes, bool] = {}
        self._ignore_int = self._ignore_ranges(cfg)
        self._stop = False
        self._hup = False
        self._last_overload = (0, 0, 0)
        self._last_overload_at = 0.0
        self.tracker = Tracker(trigger=cfg.scan_trigger, window=cfg.window,
                               summary_interval=cfg.summary_interval, max_sources=cfg.max_sources,
                               proto_trigger=cfg.proto_trigger)
        self.frags = Reassembler(**procnet.fragment_sysctls())
        self.decider = Decider(self.tracker, window=cfg.window,
                               max_records_per_second=cfg.max_records_per_second, ifname=procnet.ifname,
                               resolve=self._resolver(cfg), prefixes=(cfg.ipv4_prefix, cfg.ipv6_prefix))
        #: raw source address → raw address of the network it is tracked by (ipv4_prefix / ipv6_prefix).
        #: Networks (ipv4_prefix / ipv6_prefix) of the host's own addresses: the LAN, whose hosts are counted one
        #: by one (a scanner next door is not its neighbours), as the responder bans them and the trap holds them.
        self._near: set[bytes] = set()
        self.netof = masker(cfg.ipv4_prefix, cfg.ipv6_prefix, self._near)
        self._full4 = cfg.ipv4_prefix == 32
        self._banner = cfg.port_banner.encode("utf-8", "replace")
        self.rearm_sock: RearmSocket | None = None
        #: The host's ephemeral port range: an ACK or FIN/ACK to a free port there is the late end of one of its
        #: own outgoing connections (a retransmission or a duplicate after the socket closed), not a probe.
        self._eph_lo, self._eph_hi = procnet.ephemeral_ports()
        self._rearm_problem = ""  # why the re-arm socket is not open, or why the last message was refused
        self._rearm_bad_logged = 0
        self.metrics: Exporter | None = None

    # ----------------------------------------------------------------- records
    def emit(self, record: R.Record) -> None:
        try:
            self.sink.write(record)
            self.counters.records += 1
            tally_record(self.counters, record)
            if record.event in ("scan", "summary"):
                self.waker.send()
        except OSError as exc:  # a full disk must not kill the sentry; the failure goes to stderr
            log.error("cannot write record to %s: %s", self.sink.name, exc)
        if record.event == R.Event.SCAN.value and self.cfg.history_file:
            self._history(record)

    def _history(self, record: R.Record) -> None:
        line = (f"{int(time.time())} - {time.strftime('%m/%d/%Y %H:%M:%S')} Host: {record.src}/{record.src} "
                f"Port: {record.get(R.F_PORT)} {record.get(R.F_PROTO).upper()} Detected "
                f"scan: {record.get(R.F_SCAN)}\n")
        try:
            fd = os.open(self.cfg.history_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
            try:
                os.write(fd, line.encode("ascii", "replace"))
            finally:
                os.close(fd)
        except OSError as exc:
            log.error("history file %s: %s", self.cfg.history_file, exc)

    def lifecycle(self, event: R.Event, message: str, **extra: str) -> None:
        fields = {R.F_MESSAGE: message, R.F_MSGID: R.MESSAGE_IDS[event], R.F_PRIORITY: str(R.PRIORITY_INFO),
                  R.F_IDENT: R.DETECTOR_IDENTIFIER, R.F_EVENT: event.value, **extra}
        log.info("%s", message)
        self.emit(R.validate({k: v for k, v in fields.items() if v != ""}))

    @staticmethod
    def _resolver(cfg: DetectorConfig) -> Callable[[str], str] | None:
        if not cfg.resolve_host:
            return None
        from .adapters.resolver import reverse_name

        return reverse_name

    # ----------------------------------------------------------------- host facts
    def refresh_in_use(self, proto: int, now: float, *, listening_only: bool = False) -> None:
        """Re-read the ports with a socket. ``listening_only`` (cheap, for the hot path) re-reads TCP listeners
        and keeps the connected sockets from the last full read."""
        name = "tcp" if proto == TCP else "udp"
        if listening_only and proto == TCP:
            self.in_use[proto] = self._connected | procnet.ports_in_use(name, listening_only=True)
        else:
            self.in_use[proto] = procnet.ports_in_use(name)
            if proto == TCP:
                self._connected = self.in_use[proto]
                self._full_at = now
        self._in_use_at[proto] = now

    def refresh_other(self, now: float) -> None:
        """Re-read the SCTP ports in use and the protocols this host handles (the SCTP and IP-protocol sentries)."""
        o = self.other
        if o.sctp_watch:
            o.sctp_in_use = procnet.ports_in_use("sctp")
        if o.proto_mode:
            o.handled4, o.handled6 = hostproto.handled_protocols()
        self._other_at = now

    def refresh_local(self, now: float) -> None:
        self.local = procnet.local_addresses()
        self._local_at = now
        self._ignore_cache.clear()
        plain = masker(self.cfg.ipv4_prefix, self.cfg.ipv6_prefix)
        near = {plain(a) for a in self.local}
        if near != self._near:
            self._near.clear()
            self._near.update(near)

    @staticmethod
    def _ignore_ranges(cfg: DetectorConfig) -> tuple[tuple[int, int, int], ...]:
        """The ignore list as (address length, first, last) integer ranges: no ipaddress object per source."""
        return tuple((4 if net.version == 4 else 16, int(net.network_address), int(net.broadcast_address))
                     for net in cfg.ignore)

    def ignored(self, src: bytes) -> bool:
        hit = self._ignore_cache.get(src)
        if hit is None:
            if len(self._ignore_cache) > 100_000:
                self._ignore_cache.clear()
            if self.cfg.ignore_self and src in self.local:
                hit = True
            else:
                n, size = int.from_bytes(src, "big"), len(src)
                hit = any(size == length and lo <= n <= hi for length, lo, hi in self._ignore_int)
            self._ignore_cache[src] = hit
        return hit

    # ----------------------------------------------------------------- sentries
    def start(self) -> None:
        self.refresh_local(time.monotonic())
        self._open_sentries()  # reads the ports in use once its own listeners are bound
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        signal.signal(signal.SIGHUP, self._on_signal)
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        signal.set_wakeup_fd(self._wake_w.fileno(), warn_on_full_buffer=False)
        self.sel.register(self._wake_r, selectors.EVENT_READ, None)
        self._open_rearm()
        try:
            self.metrics = metrics_exporter(self)
        except (OSError, ValueError) as exc:
            raise SystemExit(f"portsentinel-detector: {exc}") from exc
        self.lifecycle(R.Event.START,
                       f"portsentinel-detector {__version__} started: modes {','.join(self.cfg.modes)}, "
                       f"interface {self.cfg.interface}, output {self.sink.name}, "
                       f"config {self.cfg.source or '(embedded default)'}"
                       + (f"; re-arm socket not open: {self._rearm_problem}" if self._rearm_problem else ""),
                       PS_MODE=self.cfg.modes[0] if len(self.cfg.modes) == 1 else "",
                       PS_DETAIL=",".join(self.cfg.modes))
        self.notifier.ready(f"watching: {','.join(self.cfg.modes)}")

    def _open_sentries(self) -> None:
        cfg = self.cfg
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
        self._other_bads = OTHER_BADS if self.other.active else frozenset()
        for mode in ("tcp", "udp"):
            if mode not in cfg.modes:
                continue
            ports = sorted(cfg.tcp_ports if mode == "tcp" else cfg.udp_ports)
            opened, skipped = L.open_listeners(mode, ports)
            for lst in opened:
                self.listeners.append(lst)
                self.sel.register(lst.sock, selectors.EVENT_READ, lst)
            for port, reason in skipped:
                log.warning("%s port %d not watched: %s", mode.upper(), port, reason)
            self._listen_record(mode, mode, [lst.port for lst in opened], skipped)
        now = time.monotonic()
        for proto in (TCP, UDP):
            self.refresh_in_use(proto, now)
        self.refresh_other(now)
        o = self.other
        if self.watch[TCP] or self.watch[UDP] or o.active:
            program = build_bpf(self.watch[TCP], self.watch[UDP], o.sctp_watch,
                                (o.handled4 | o.exclude) if o.proto_mode else None)
            try:
                cap = RingCapture(cfg.interface, program)
            except CaptureError as exc:
                raise SystemExit(f"portsentinel-detector: {exc.strerror or exc}") from exc
            self.captures.append(cap)
            self.sel.register(cap.sock, selectors.EVENT_READ, cap)
            for mode in ("stcp", "sudp", "atcp", "audp"):
                if mode in cfg.modes:
                    proto = STEALTH[mode]
                    ports = [p for p, m in self.watch[proto].items() if m == mode]
                    busy = sorted(set(ports) & self.in_use[proto])
                    self._listen_record(mode, "tcp" if proto == TCP else "udp", ports,
                                        [(p, "in use now") for p in busy])
            for mode in ("ssctp", "asctp"):
                if mode in cfg.modes:
                    ports = [p for p, m in o.sctp_watch.items() if m == mode]
                    self._listen_record(mode, "sctp", ports,
                                        [(p, "in use now") for p in sorted(set(ports) & o.sctp_in_use)])
            if o.proto_mode:
                unhandled = sorted(set(range(256)) - o.handled4 - o.exclude)
                self.lifecycle(R.Event.LISTEN,
                               "Going into IP protocol stealth listen mode on protocols without a handler: "
                               f"{ranges_text(unhandled)}; handled (IPv4): {ranges_text(sorted(o.handled4))}; "
                               f"(IPv6): {ranges_text(sorted(o.handled6))}",
                               PS_MODE="aproto", PS_PROTO="ip", PS_PORTS=str(len(unhandled)),
                               PS_IFACE=self.cfg.interface)

    def _listen_record(self, mode: str, proto: str, ports: list[int],
                       skipped: list[tuple[int, str]]) -> None:
        kind = {"tcp": "listen", "udp": "listen", "stcp": "stealth listen", "sudp": "stealth listen",
                "ssctp": "stealth listen", "atcp": "advanced stealth listen", "audp": "advanced stealth listen",
                "asctp": "advanced stealth listen"}[mode]
        msg = (f"Going into {kind} mode on {proto.upper()} ports: {ranges_text(ports) or '(none)'}"
               + (f"; not watched now: {ranges_text([p for p, _ in skipped])}" if skipped else ""))
        self.lifecycle(R.Event.LISTEN, msg, PS_MODE=mode, PS_PROTO=proto, PS_PORTS=str(len(ports)),
                       PS_IFACE=self.cfg.interface if mode[0] in "sa" else "")

    def _close_sentries(self) -> None:
        for cap in self.captures:
            self.sel.unregister(cap.sock)
            cap.close()
        self.captures.clear()
        for lst in self.listeners:
            self.sel.unregister(lst.sock)
        L.close_all(self.listeners)
        self.listeners.clear()

    # ----------------------------------------------------------------- re-arm (docs/responder.md)
    def _open_rearm(self) -> None:
        """Bind the re-arm socket. Failing that, the detector runs without it (it still reports every new
        source) and says so in its start record: a returning scanner is then reported only after a quiet window."""
        self._rearm_problem = ""
        if not self.cfg.rearm_socket:
            return
        try:
            self.rearm_sock = RearmSocket(self.cfg.rearm_socket, max_size=rearm_msg.MAX_DATAGRAM)
        except OSError as exc:
            self._rearm_problem = f"{self.cfg.rearm_socket}: {exc.strerror or exc}"
            log.error("re-arm socket %s", self._rearm_problem)
            return
        self.sel.register(self.rearm_sock, selectors.EVENT_READ, self.rearm_sock)

    def _close_rearm(self) -> None:
        if self.rearm_sock is not None:
            self.sel.unregister(self.rearm_sock)
            self.rearm_sock.close()
            self.rearm_sock = None

    def on_rearm(self, sock: RearmSocket) -> None:
        """The responder says bans ended: forget those sources (their next probe is a new scan record) and
        write the final summary of what they sent while banned. Refused messages are counted."""
        c = self.counters
        for data, why in sock.receive():
            msg = None
            if data is not None:
                try:
                    msg = rearm_msg.decode(data)
                except rearm_msg.RearmError as exc:
                    why = str(exc)
            if msg is None:
                c.rearm_bad += 1
                self._rearm_problem = why
                continue
            c.rearm_msgs += 1
            states: list[SourceState] = []
            for addr in msg.addresses:  # the source is tracked by its network (ipv4_prefix, ipv6_prefix)
                states += self.tracker.rearm(self.netof(addr))
                if len(addr) == 4:  # the same host seen through IPv6 as a v4-mapped address
                    states += self.tracker.rearm(self.netof(b"\0" * 10 + b"\xff\xff" + addr))
            for size, lo, _hi in msg.networks:  # a network narrower than the one the detector counts by
                states += self.tracker.rearm(self.netof(lo.to_bytes(size, "big")))
            if msg.networks or msg.everything:
                states += self.tracker.rearm_networks(msg.networks, everything=msg.everything)
            c.rearmed += len(states)
            if states:
                for rec in self.decider.rearmed(states, time.monotonic(), time.time()):
                    self.emit(rec)

    # ----------------------------------------------------------------- the hot path
    def on_packet(self, buf: bytes | bytearray | memoryview | object, start: int, length: int,
                  ifoff: int) -> None:
        """One captured packet (``buf`` is the capture ring): the per-packet form of :meth:`on_ring`, for a
        ``RingCapture.drain`` handler. The run loop uses :meth:`on_ring`, which does the same per batch."""
        c = self.counters
        c.packets += 1
        res = parse(buf, start, length)  # type: ignore[arg-type]
        whole = None
        if res is Bad.FRAGMENT:
            whole = self.frags.feed(buf, start, length, time.monotonic())  # type: ignore[arg-type]
            if whole is None:
                return
            res = parse(whole)
        if not isinstance(res, Probe):
            if res not in self._other_bads:
                oth: OtherTuple | Bad = res
            else:
                oth = parse_other(buf, start, length) if whole is None else parse_other(whole)  # type: ignore[arg-type]
            if isinstance(oth, Bad):
                c.bad[res.name.lower()] += 1
            else:
                self.on_other(oth, ifindex_at(buf, ifoff), time.monotonic(), res)  # type: ignore[arg-type]
            return
        src, dst, proto, port, flags = res
        mode = self.watch[proto].get(port)
        if mode is None:
            c.bad["unwatched"] += 1
            return
        scan = "udp" if proto == UDP else _TCP_KINDS[flags]  # == classify(proto, flags); parse gives 6 or 17
        if scan is None:
            return
        now = time.monotonic()
        if dst not in self.local:
            if now - self._local_at < 1.0:
                c.not_local += 1
                return
            self.refresh_local(now)
            if dst not in self.local:
                c.not_local += 1
                return
        if port in self.in_use[proto]:
            c.in_use += 1
            return
        if now - self._in_use_at[proto] > 0.05:  # a listener may have appeared since the last look
            self.refresh_in_use(proto, now, listening_only=True)
            if port in self.in_use[proto]:
                c.in_use += 1
                return
        if (scan == "ack" or scan == "maimon") and self._eph_lo <= port <= self._eph_hi:
            c.late_ack += 1  # a late or duplicate segment of one of this host's own (closed) connections
            return
        if (scan == "ack" or scan == "maimon") and now - self._full_at > 0.05:
            # ACK and FIN/ACK may belong to a connection opened since the last full read: look at all sockets.
            self.refresh_in_use(proto, now)
            if port in self.in_use[proto]:
                c.in_use += 1
                return
        ignored = self._ignore_cache.get(src)
        if ignored is None:
            ignored = self.ignored(src)
        if ignored:
            c.ignored += 1
            return
        c.probes += 1
        c.kinds[256 if proto == UDP else flags] += 1
        # Tracker.hit stores the interface index only on the probe that crosses the trigger: read it then.
        net = src if self._full4 and len(src) == 4 else self.netof(src)
        st = self.tracker.hit(net + (b"\x06" if proto == TCP else b"\x11"), dst, proto, port, scan, mode,
                              0, False, now)
        if st is not None:
            st.src = src
            st.ifindex = ifindex_at(buf, ifoff)  # type: ignore[arg-type]
            rec = self.decider.on_trigger(st, now, time.time())
            if rec is not None:
                self.emit(rec)

    def on_ring(self, cap: RingCapture, budget: int = BATCH) -> int:
        """Every packet waiting in ``cap``'s ring, at most ``budget`` of them: what :meth:`on_packet` does for
        each, in one function. Returns how many. This is the hot path (bench/hotpath.py measures it).

        What is done once per batch instead of once per packet:

        - The time: one ``time.monotonic()`` for the batch (4,096 frames take a few ms), read again after
          anything slow (a refresh of the host's sockets or addresses, a record).
        - Counters: local ints, added to ``self.counters`` at the end. Bound to locals: the watch dicts, the
          in-use dicts and the ignore cache's ``get`` (refreshes assign their items or clear them in place, so
          the bindings stay valid), the local-address set (re-bound after a refresh).
        - The tracker: a probe from the same source as the previous one, already triggered, goes through
          ``Tracker.hit_again`` (no lookup; the source is already the most recently seen, so the order is as
          ``hit`` leaves it). Nothing else touches the tracker during a batch: ``tick`` runs between batches.

        Each frame goes back to the kernel as soon as it is parsed: ``parse_tuple`` copies what is needed and
        the interface index is read with the frame header, so a slow step does not hold ring space.
        """
        ring, status, fs, nframes = cap.ring, cap.status, cap.frame_size, cap.nframes
        frag_feed = self.frags.feed
        frame, v4_l4, size = FRAME.unpack_from, V4_L4.unpack_from, len(ring)
        watch_tcp, watch_udp = self.watch[TCP], self.watch[UDP]
        in_use, in_use_at = self.in_use, self._in_use_at
        ignore_get = self._ignore_cache.get
        other_bads = self._other_bads
        kinds = _TCP_KINDS
        kinds_n = self.counters.kinds
        tracker = self.tracker
        hit, hit_again, tracker_get = tracker.hit, tracker.hit_again, tracker.get
        netof, full4 = self.netof, self._full4
        local = self.local
        now = time.monotonic()
        # The source the previous hit counted: (address, protocol) and its state.
        prev_src, prev_proto = b"", 0
        prev_st: SourceState | None = None
        i = cap.index
        # Over half the ring waiting: fragments are shed (counted) until it drains, so that a fragment flood the
        # loop cannot keep up with costs frames of itself, not the kernel dropping whole probes with it.
        shed = status[((i + (nframes >> 1)) % nframes) * fs >> 2] & TP_STATUS_USER
        n = probes = not_local = busy = ignored = 0
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
                if dst not in local:
                    if now - self._local_at < 1.0:
                        not_local += 1
                        continue
                    self.refresh_local(now)
                    local = self.local
                    now = time.monotonic()
                    if dst not in local:
                        not_local += 1
                        continue
                if port in in_use[proto]:
                    busy += 1
                    continue
                if now - in_use_at[proto] > 0.05:  # a listener may have appeared since the last look
                    self.refresh_in_use(proto, now, listening_only=True)
                    now = time.monotonic()
                    if port in in_use[proto]:
                        busy += 1
                        continue
                if (scan == "ack" or scan == "maimon") and self._eph_lo <= port <= self._eph_hi:
                    self.counters.late_ack += 1  # the late end of one of this host's own connections
                    continue
                if (scan == "ack" or scan == "maimon") and now - self._full_at > 0.05:
                    # ACK and FIN/ACK may belong to a connection opened since the last full read.
                    self.refresh_in_use(proto, now)
                    now = time.monotonic()
                    if port in in_use[proto]:
                        busy += 1
                        continue
                ign = ignore_get(src)
                if ign is None:
                    ign = self.ignored(src)
                if ign:
                    ignored += 1
                    continue
                probes += 1
                kinds_n[flags] += 1
                if prev_st is not None and src == prev_src and proto == prev_proto and prev_st.triggered:
                    hit_again(prev_st, port + 65536 if proto == UDP else port, now)
                    continue
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
            cap.index = i
            c = self.counters
            c.packets += n
            c.probes += probes
            c.not_local += not_local
            c.in_use += busy
            c.ignored += ignored
        return n

    def on_other(self, pkt: OtherTuple, ifindex: int, now: float, reason: Bad = Bad.OTHER_PROTO) -> None:
        """A packet that is neither TCP nor UDP, read by ``parse_other``: the SCTP and IP-protocol sentries.
        ``reason`` is what ``parse`` said of it, counted when the packet is no probe of these sentries either
        (a TCP header cut short stays ``truncated``)."""
        c = self.counters
        if now - self._other_at > 1.0:  # a listener, a raw socket or a tunnel may have appeared
            self.refresh_other(now)
        probes = self.other.probes(pkt)
        if not probes:
            c.bad[reason.name.lower()] += 1
            return
        src, dst = pkt[0], pkt[1]
        if dst not in self.local:
            if now - self._local_at >= 1.0:
                self.refresh_local(now)
            if dst not in self.local:
                c.not_local += 1
                return
        ignored = self._ignore_cache.get(src)
        if ignored is None:
            ignored = self.ignored(src)
        if ignored:
            c.ignored += 1
            return
        net = src if self._full4 and len(src) == 4 else self.netof(src)  # tracked by network, as TCP and UDP
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

    def on_listener(self, lst: L.Listener) -> None:
        for _ in range(64):
            got = L.accept_one(lst, self._banner)
            if got is None:
                return
            peer, local = got
            try:
                src = ipaddress.ip_address(R.canonical_address(peer)).packed
                dst = ipaddress.ip_address(R.canonical_address(local)).packed
            except ValueError:
                continue
            self.counters.packets += 1
            if self.ignored(src):
                self.counters.ignored += 1
                continue
            self.counters.probes += 1
            self.counters.other_kinds[("tcp", "connect") if lst.proto == "tcp" else ("udp", "udp")] += 1
            now = time.monotonic()
            tcp = lst.proto == "tcp"
            st = self.tracker.hit(self.netof(src) + (b"\x06" if tcp else b"\x11"), dst, TCP if tcp else UDP,
                                  lst.port, "connect" if tcp else "udp", lst.proto, 0, tcp, now)
            if st is not None:
                st.src = src
                rec = self.decider.on_trigger(st, now, time.time())
                if rec is not None:
                    self.emit(rec)

    # ----------------------------------------------------------------- loop
    def _on_signal(self, signum: int, _frame: object) -> None:
        if signum == signal.SIGHUP:
            self._hup = True
        else:
            self._stop = True

    def tick(self, now: float) -> None:
        for rec in self.decider.tick(now, time.time()):
            self.emit(rec)
        for cap in self.captures:
            _, drops = cap.stats()
            self.counters.drops += drops
        for proto in (TCP, UDP):
            if now - self._in_use_at[proto] > 2.0:
                self.refresh_in_use(proto, now)
        if self.other.active and now - self._other_at > 2.0:
            self.refresh_other(now)
        if now - self._local_at > 10.0:
            self.refresh_local(now)
        self.frags.expire(now)
        fc = self.frags.counters
        over = (self.tracker.evictions, self.decider.suppressed, fc.evicted + fc.shed)
        if over != self._last_overload and now - self._last_overload_at >= self.cfg.summary_interval:
            self.lifecycle(R.Event.OVERLOAD,
                           f"overload: {over[0]} sources evicted from the tracker (cap {self.cfg.max_sources}), "
                           f"{over[1]} scan records deferred by the record cap "
                           f"({self.cfg.max_records_per_second}/s), {self.counters.drops} packets dropped "
                           f"by the kernel, {fc.evicted} fragment queues evicted (cap {self.frags.max_entries}), "
                           f"{fc.shed} fragments shed under load",
                           PS_DETAIL=f"evicted={over[0]} deferred={over[1]} drops={self.counters.drops} "
                           f"frag_evicted={fc.evicted} frag_shed={fc.shed}")
            self._last_overload = over
            self._last_overload_at = now
        if self.counters.rearm_bad != self._rearm_bad_logged:
            log.warning("%d re-arm message(s) refused in all; the last: %s", self.counters.rearm_bad,
                        self._rearm_problem)
            self._rearm_bad_logged = self.counters.rearm_bad
        if self.metrics is not None:
            self.metrics.tick(now)
        if self.notifier.watchdog:
            self.notifier.ping()

    def do_reload(self) -> None:
        self._hup = False
        self.sink.reopen()
        if self._reload is None:
            return
        try:
            new = self._reload()
        except (ValueError, OSError) as exc:
            log.error("reload failed, keeping the running configuration: %s", exc)
            self.lifecycle(R.Event.START, f"reload failed, keeping the running configuration: {exc}",
                           PS_DETAIL="reload-failed")
            return
        self._close_sentries()
        old_out = (self.cfg.output, self.cfg.jsonl_path)
        old_metrics = (self.cfg.metrics_listen, self.cfg.metrics_textfile, self.cfg.metrics_interval)
        self.cfg = new
        if (new.metrics_listen, new.metrics_textfile, new.metrics_interval) != old_metrics:
            self._reopen_metrics()
        if (new.output, new.jsonl_path) != old_out:
            self.sink.close()
            self.sink = open_sink(new.output, new.jsonl_path)
        t = self.tracker
        t.trigger, t.window, t.summary_interval, t.max_sources = (new.scan_trigger, new.window,
                                                                  new.summary_interval, new.max_sources)
        t.proto_trigger = new.proto_trigger
        self.decider.window = new.window
        if (new.ipv4_prefix, new.ipv6_prefix) != self.decider.prefixes:  # keys of another shape: start afresh
            self.decider.prefixes = (new.ipv4_prefix, new.ipv6_prefix)
            self.netof, self._full4 = masker(new.ipv4_prefix, new.ipv6_prefix, self._near), new.ipv4_prefix == 32
            self.refresh_local(time.monotonic())  # the host's own networks for the new prefixes
            self.tracker = self.decider.tracker = Tracker(trigger=new.scan_trigger, window=new.window,
                                                          summary_interval=new.summary_interval,
                                                          max_sources=new.max_sources,
                                                          proto_trigger=new.proto_trigger)
        self.waker.path = new.wake_socket
        if self.rearm_sock is None or self.rearm_sock.path != new.rearm_socket:
            self._close_rearm()
            self._open_rearm()
        self.decider.resolve = self._resolver(new)
        self._banner = new.port_banner.encode("utf-8", "replace")
        self._ignore_cache.clear()
        self._ignore_int = self._ignore_ranges(new)
        self._open_sentries()
        self.lifecycle(R.Event.START, f"configuration reloaded: modes {','.join(new.modes)}",
                       PS_DETAIL="reloaded")

    def _reopen_metrics(self) -> None:
        if self.metrics is not None:
            self.metrics.close()
            self.metrics = None
        try:
            self.metrics = metrics_exporter(self)
        except (OSError, ValueError) as exc:
            log.error("metrics off after the reload: %s", exc)

    def run(self) -> None:
        next_tick = time.monotonic() + 1.0
        on_ring = self.on_ring
        while not self._stop:
            timeout = max(0.0, next_tick - time.monotonic())
            short = False
            for key, _ in self.sel.select(timeout):
                obj = key.data
                if obj is None:
                    try:
                        while self._wake_r.recv(64):
                            pass
                    except BlockingIOError:
                        pass
                elif isinstance(obj, RingCapture):
                    got = on_ring(obj)
                    while got == BATCH:  # a short batch emptied the ring: the next select says when to look
                        got = on_ring(obj)
                    short = short or 0 < got < COALESCE_BELOW
                elif isinstance(obj, RearmSocket):
                    self.on_rearm(obj)
                else:
                    self.on_listener(obj)
            if self._hup:
                self.do_reload()
            elif short and not self._stop:
                time.sleep(COALESCE)
            now = time.monotonic()
            if now >= next_tick:
                self.tick(now)
                next_tick = now + 1.0
        self.shutdown()

    def shutdown(self) -> None:
        self.notifier.stopping()
        now = time.monotonic()
        self.tracker.window = -1.0  # everything is quiet now: final summaries
        for rec in self.decider.tick(now, time.time()):
            self.emit(rec)
        for cap in self.captures:  # the kernel's drops since the last tick belong in the stop record too
            self.counters.drops += cap.stats()[1]
        c = self.counters
        self.lifecycle(R.Event.STOP,
                       f"portsentinel-detector stopping: {c.packets} packets, {c.probes} probes, "
                       f"{c.records} records, {sum(c.bad.values())} bad packets skipped, {c.drops} kernel drops",
                       PS_DETAIL=" ".join([f"packets={c.packets} probes={c.probes} records={c.records} "
                                           f"drops={c.drops} not_local={c.not_local} in_use={c.in_use} "
                                           f"late_ack={c.late_ack} "
                                           f"ignored={c.ignored} evicted={self.tracker.evictions} "
                                           f"deferred={self.decider.suppressed} rearm_msgs={c.rearm_msgs} "
                                           f"rearmed={c.rearmed} rearm_refused={c.rearm_bad}",
                                           self.frags.counters.detail()]
                                          + [f"bad_{k}={v}" for k, v in sorted(c.bad.items())]))
        self._close_sentries()
        self._close_rearm()
        if self.metrics is not None:  # after the stop record: the textfile's last write counts it
            self.metrics.close()
        self.sink.close()
