"""The detector's metrics: its existing counters (the stop and overload records' figures) as Prometheus families.

Read when asked (a scrape or a textfile write), never on the packet path: the hot path keeps plain ints (and
one list of per-TCP-flags probe counts) and this collector turns them into families. Labels are bounded: the
protocol (tcp, udp, sctp, ip), the scan kind, the record event, the reason a packet was skipped. No address
anywhere. Names and meanings: docs/metrics.md.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable, Sized
from typing import Protocol

from prometheus_client import ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from portsentinel import record as R
from portsentinel.common.metrics import Exporter

from .classify import classify
from .config.model import DetectorConfig
from .decide import Decider
from .reassembly import Reassembler
from .tracker import Tracker


class Counters(Protocol):
    """What the collector reads of the service's counters (detector/service.py's Counters)."""

    packets: int
    not_local: int
    in_use: int
    ignored: int
    drops: int
    rearm_msgs: int
    rearm_bad: int
    rearmed: int
    bad: Counter[str]
    kinds: list[int]
    other_kinds: Counter[tuple[str, str]]
    events: Counter[str]
    ports: Counter[tuple[str, str]]


class Detector(Protocol):
    """What the collector reads of the detector (the service imports this module, never the reverse)."""

    @property
    def cfg(self) -> DetectorConfig: ...
    @property
    def counters(self) -> Counters: ...
    @property
    def tracker(self) -> Tracker: ...
    @property
    def decider(self) -> Decider: ...
    @property
    def frags(self) -> Reassembler: ...
    @property
    def captures(self) -> Sized: ...

P = "portsentinel_detector_"
#: Protocol codes the tracker uses → the label value.
PROTO_NAMES = {6: "tcp", 17: "udp", 132: "sctp", 256: "ip"}
#: Index 0..255 of Counters.kinds: a TCP flags byte; 256: a UDP probe.
UDP_INDEX = 256
_FLAG_KINDS: tuple[str | None, ...] = tuple(classify(6, f) for f in range(256))

#: Every metric name the detector exports (docs/metrics.md lists them; the dashboard test checks against it).
NAMES = tuple(P + n for n in (
    "packets_total", "probes_total", "records_total", "scan_ports_total", "packets_skipped_total", "bad_packets_total",
    "sources_tracked", "source_evictions_total", "records_deferred_total", "reassembly_entries",
    "reassembly_evictions_total", "reassembly_fragments_total", "reassembly_datagrams_total",
    "kernel_drops_total", "capture_cpu_seconds_total", "rearm_messages_total", "rearmed_sources_total",
    "capture_sockets"))


#: Distinct (protocol, port) label pairs of scan_ports_total; the ports past it are counted as port="other".
MAX_PORTS = 256


def tally_record(c: Counters, record: R.Record) -> None:
    """A record written: counted by event; a scan record also by the port that crossed the trigger (at most
    MAX_PORTS distinct ports, then "other": bounded cardinality)."""
    c.events[record.event] += 1
    if record.event == "scan":
        key = (record.get(R.F_PROTO), record.get(R.F_PORT))
        if key not in c.ports and len(c.ports) >= MAX_PORTS:
            key = (key[0], "other")
        c.ports[key] += 1


def probe_kinds(kinds: list[int], other: dict[tuple[str, str], int]) -> dict[tuple[str, str], int]:
    """(protocol, scan kind) → probes, from the hot path's per-flags list and the other paths' tallies."""
    out: dict[tuple[str, str], int] = dict(other)
    for flags in range(256):
        n = kinds[flags]
        kind = _FLAG_KINDS[flags]
        if n and kind is not None:
            out[("tcp", kind)] = out.get(("tcp", kind), 0) + n
    if kinds[UDP_INDEX]:
        out[("udp", "udp")] = out.get(("udp", "udp"), 0) + kinds[UDP_INDEX]
    return out


class DetectorCollector(Collector):
    def __init__(self, det: Detector) -> None:
        self.det = det

    def collect(self) -> Iterable[Metric]:
        # The endpoint's thread runs this while the loop counts: each dict is copied first (dict() and list()
        # of a dict copy in C, under the GIL, in one step), never iterated while it may grow.
        d = self.det
        c = d.counters
        yield CounterMetricFamily(P + "packets", "Packets the sentries read (captured frames and classic "
                                                 "sentries' connections)", value=c.packets)
        probes = CounterMetricFamily(P + "probes", "Probes counted against a source, by protocol and scan kind",
                                     labels=("protocol", "scan"))
        for (proto, scan), n in sorted(probe_kinds(list(c.kinds), dict(c.other_kinds)).items()):
            probes.add_metric((proto, scan), n)
        yield probes
        records = CounterMetricFamily(P + "records", "Records written, by event", labels=("event",))
        for event, n in sorted(dict(c.events).items()):
            records.add_metric((event,), n)
        yield records
        ports = CounterMetricFamily(P + "scan_ports", "Scan records by protocol and the port that crossed the "
                                                      f"trigger (at most {MAX_PORTS} ports, then port=\"other\")",
                                    labels=("protocol", "port"))
        for (proto, port), n in sorted(dict(c.ports).items()):
            ports.add_metric((proto, port), n)
        yield ports
        skipped = CounterMetricFamily(P + "packets_skipped", "Watched packets not counted as probes, by reason",
                                      labels=("reason",))
        for reason, n in (("not_local", c.not_local), ("in_use", c.in_use), ("ignored", c.ignored)):
            skipped.add_metric((reason,), n)
        yield skipped
        bad = CounterMetricFamily(P + "bad_packets", "Captured packets skipped unread, by reason",
                                  labels=("reason",))
        for reason, n in sorted(dict(c.bad).items()):
            bad.add_metric((reason,), n)
        yield bad
        yield GaugeMetricFamily(P + "sources_tracked", "Sources (networks per protocol) in the tracker",
                                value=len(d.tracker))
        yield CounterMetricFamily(P + "source_evictions", "Sources evicted from the tracker by max_sources",
                                  value=d.tracker.evictions)
        yield CounterMetricFamily(P + "records_deferred", "Scan records deferred by max_records_per_second",
                                  value=d.decider.suppressed)
        fc = d.frags.counters
        yield GaugeMetricFamily(P + "reassembly_entries", "Fragment queues held by the reassembler",
                                value=len(d.frags))
        yield CounterMetricFamily(P + "reassembly_evictions", "Fragment queues evicted by the reassembler's caps",
                                  value=fc.evicted)
        yield CounterMetricFamily(P + "reassembly_fragments", "Fragments fed to the reassembler", value=fc.fragments)
        yield CounterMetricFamily(P + "reassembly_datagrams", "Datagrams the reassembler completed",
                                  value=fc.datagrams)
        yield CounterMetricFamily(P + "kernel_drops", "Packets the kernel dropped before the capture ring "
                                                      "(PACKET_STATISTICS)", value=c.drops)
        times = os.times()
        cpu = CounterMetricFamily(P + "capture_cpu_seconds", "CPU time of the detector process (the capture "
                                                             "loop), by mode", labels=("mode",))
        cpu.add_metric(("user",), times.user)
        cpu.add_metric(("system",), times.system)
        yield cpu
        rearm = CounterMetricFamily(P + "rearm_messages", "Re-arm messages from the responder, by result",
                                    labels=("result",))
        rearm.add_metric(("accepted",), c.rearm_msgs)
        rearm.add_metric(("refused",), c.rearm_bad)
        yield rearm
        yield CounterMetricFamily(P + "rearmed_sources", "Sources forgotten because their ban ended",
                                  value=c.rearmed)
        yield GaugeMetricFamily(P + "capture_sockets", "Capture rings open", value=len(d.captures))


def exporter(det: Detector) -> Exporter | None:
    """The detector's exporter as its configuration asks (None when metrics are off); started."""
    cfg = det.cfg
    if not (cfg.metrics_listen or cfg.metrics_textfile):
        return None
    exp = Exporter([DetectorCollector(det), ProcessCollector(registry=None)], listen=cfg.metrics_listen,
                   textfile=cfg.metrics_textfile, interval=cfg.metrics_interval)
    exp.start()
    return exp
