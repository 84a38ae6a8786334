"""Wiring: the sentries' sockets → ``pipeline.Pipeline`` (parse, admit, tracker, decide) → sink, in one
selector loop.

SIGTERM/SIGINT stop cleanly, SIGHUP reloads the configuration (a bad new one is reported and the old one
kept) and reopens the JSON-lines file. A timer tick each second writes due summaries, pings the watchdog
and refreshes the host's sockets and addresses.
"""

from __future__ import annotations

import ipaddress
import logging
import selectors
import signal
import socket
import time
from collections.abc import Callable

from portsentinel import __version__
from portsentinel import record as R
from portsentinel.common import rearm as rearm_msg
from portsentinel.common.metrics import Exporter
from portsentinel.common.sdnotify import Notifier
from portsentinel.common.wake import Waker

from .adapters import listeners as L
from .adapters.capture import CaptureError, RingCapture
from .adapters.history import HistoryFile
from .adapters.rearm import RearmSocket
from .adapters.sinks import Sink, open_sink
from .bpf import build as build_bpf
from .bpf import port_ranges
from .config.model import DetectorConfig
from .decide import Decider
from .metrics import exporter as metrics_exporter
from .metrics import tally_record
from .pipeline import BATCH, TCP, UDP, Counters, Pipeline
from .reassembly import Reassembler
from .tracker import Tracker

log = logging.getLogger("portsentinel.detector")

#: After a short batch (fewer than COALESCE_BELOW frames), the loop waits COALESCE seconds before it looks
#: again, so that a steady flood is read in batches of a few hundred frames rather than a wake-up every few
#: packets (each wake-up costs several µs: epoll, the selector, a context switch). This is what TPACKET_V3's
#: block timeout does in the kernel. It delays a probe's processing by at most COALESCE; the ring holds
#: 16,384 frames, 65 ms at 250,000 pps.
COALESCE = 0.0005
COALESCE_BELOW = 256


def ranges_text(ports: frozenset[int] | list[int]) -> str:
    return ",".join(f"{a}" if a == b else f"{a}-{b}" for a, b in port_ranges(ports))


class Detector:
    """One detector process: every configured sentry in one loop."""

    def __init__(self, cfg: DetectorConfig, *, reload: Callable[[], DetectorConfig] | None = None,
                 sink: Sink | None = None) -> None:
        self.cfg = cfg
        self._reload = reload
        self.sink = sink or open_sink(cfg.output, cfg.jsonl_path)
        self.waker = Waker(cfg.wake_socket)
        self.history = HistoryFile(cfg.history_file) if cfg.history_file else None
        self.pipe = Pipeline(cfg, self.emit)
        self.notifier = Notifier()
        self.sel = selectors.DefaultSelector()
        self.captures: list[RingCapture] = []
        self.listeners: list[L.Listener] = []
        self._stop = False
        self._hup = False
        self._last_overload = (0, 0, 0)
        self._last_overload_at = 0.0
        self._banner = cfg.port_banner.encode("utf-8", "replace")
        self.rearm_sock: RearmSocket | None = None
        self._rearm_problem = ""  # why the re-arm socket is not open, or why the last message was refused
        self._rearm_bad_logged = 0
        self.metrics: Exporter | None = None

    # What the metrics read (detector/metrics.py's Detector): the pipeline's.
    @property
    def counters(self) -> Counters:
        return self.pipe.counters

    @property
    def tracker(self) -> Tracker:
        return self.pipe.tracker

    @property
    def decider(self) -> Decider:
        return self.pipe.decider

    @property
    def frags(self) -> Reassembler:
        return self.pipe.frags

    # ----------------------------------------------------------------- records
    def emit(self, record: R.Record) -> None:
        c = self.pipe.counters
        try:
            self.sink.write(record)
            c.records += 1
            tally_record(c, record)
            if record.event in ("scan", "summary"):
                self.waker.send()
        except OSError as exc:  # a full disk must not kill the sentry; the failure goes to stderr
            log.error("cannot write record to %s: %s", self.sink.name, exc)
        if self.history is not None:
            self.history.write(record, time.time())

    def lifecycle(self, event: R.Event, message: str, **extra: str) -> None:
        fields = {R.F_MESSAGE: message, R.F_MSGID: R.MESSAGE_IDS[event], R.F_PRIORITY: str(R.PRIORITY_INFO),
                  R.F_IDENT: R.DETECTOR_IDENTIFIER, R.F_EVENT: event.value, **extra}
        log.info("%s", message)
        self.emit(R.validate({k: v for k, v in fields.items() if v != ""}))

    # ----------------------------------------------------------------- sentries
    def start(self) -> None:
        self.pipe.refresh_local(time.monotonic())
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
        cfg, pipe = self.cfg, self.pipe
        pipe.set_watch(cfg)
        watch = pipe.watch
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
            pipe.refresh_in_use(proto, now)
        pipe.refresh_other(now)
        o = pipe.other
        if watch[TCP] or watch[UDP] or o.active:
            program = build_bpf(watch[TCP], watch[UDP], o.sctp_watch,
                                (o.handled4 | o.exclude) if o.proto_mode else None)
            try:
                cap = RingCapture(cfg.interface, program)
            except CaptureError as exc:
                raise SystemExit(f"portsentinel-detector: {exc.strerror or exc}") from exc
            self.captures.append(cap)
            self.sel.register(cap.sock, selectors.EVENT_READ, cap)
            for mode in ("stcp", "sudp", "atcp", "audp"):
                if mode in cfg.modes:
                    proto = TCP if mode[1:] == "tcp" else UDP
                    ports = [p for p, m in watch[proto].items() if m == mode]
                    busy = sorted(set(ports) & pipe.view.in_use[proto])
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
            c.rearmed += self.pipe.rearm(msg)

    # ----------------------------------------------------------------- classic sentries
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
            self.pipe.on_connection(lst.proto, lst.port, src, dst)

    # ----------------------------------------------------------------- loop
    def _on_signal(self, signum: int, _frame: object) -> None:
        if signum == signal.SIGHUP:
            self._hup = True
        else:
            self._stop = True

    def tick(self, now: float) -> None:
        self.pipe.tick(now)
        for cap in self.captures:
            _, drops = cap.stats()
            self.counters.drops += drops
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
        self.pipe.reconfigure(new)
        self.waker.path = new.wake_socket
        self.history = HistoryFile(new.history_file) if new.history_file else None
        if self.rearm_sock is None or self.rearm_sock.path != new.rearm_socket:
            self._close_rearm()
            self._open_rearm()
        self._banner = new.port_banner.encode("utf-8", "replace")
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
        on_ring = self.pipe.on_ring
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
