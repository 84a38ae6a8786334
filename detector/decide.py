"""Tracker transitions → records (docs/records.md), with a cap on records per second.

Pure: time and name lookups come from the caller.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable

from portsentinel import record as R

from .tracker import SourceState, Tracker

PROTO_NAMES = {6: "tcp", 17: "udp", 132: "sctp", 256: "ip"}  # 256: the IP-protocol sentry


def addr_text(raw: bytes) -> str:
    """Canonical text of a raw 4- or 16-byte address (v4-mapped v6 becomes v4)."""
    if len(raw) == 4:
        return str(ipaddress.IPv4Address(raw))
    addr = ipaddress.IPv6Address(raw)
    return str(addr.ipv4_mapped) if addr.ipv4_mapped is not None else str(addr)


class RateLimit:
    """Token bucket: ``rate`` events per second, bursts up to ``rate``."""

    def __init__(self, rate: int) -> None:
        self.rate = float(max(rate, 1))
        self.tokens = self.rate
        self.stamp: float | None = None

    def allow(self, now: float) -> bool:
        if self.stamp is not None:
            self.tokens = min(self.rate, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


class Decider:
    """Turns tracker transitions into scan and summary records."""

    def __init__(self, tracker: Tracker, *, window: float, max_records_per_second: int,
                 ifname: Callable[[int], str], resolve: Callable[[str], str] | None = None,
                 prefixes: tuple[int, int] = (32, 64)) -> None:
        self.tracker = tracker
        #: (IPv4, IPv6) prefix lengths the tracker's keys are masked to (PS_SRC_NET).
        self.prefixes = prefixes
        self.window = window
        self.limit = RateLimit(max_records_per_second)
        self.ifname = ifname
        self.resolve = resolve
        self.suppressed = 0

    def _fields(self, st: SourceState, event: R.Event, wall: float) -> dict[str, str]:
        net_raw = st.key[:-1]
        src = addr_text(st.src or net_raw)
        plen = self.prefixes[0 if len(net_raw) == 4 else 1]
        net = ""
        if plen < 8 * len(net_raw) and net_raw != st.src:  # a source on the host's own network: tracked alone
            base = ipaddress.IPv4Address(net_raw) if len(net_raw) == 4 else ipaddress.IPv6Address(net_raw)
            net = str(ipaddress.ip_network(f"{base}/{plen}", strict=False))
        proto = PROTO_NAMES.get(st.proto, "tcp")
        name = self.resolve(src) if self.resolve else ""
        if event is R.Event.SCAN:
            message = R.alert_message(st.scan, src, proto, st.port, name)
        else:
            message = (f"attacksummary: host: {src}{f' (network {net})' if net else ''} probes: {st.hits} "
                       f"ports: {st.nports}"
                       f"{'' if st.ports_exact else '+'} since first probe")
        fields = {
            R.F_MESSAGE: message,
            R.F_MSGID: R.MESSAGE_IDS[event],
            R.F_PRIORITY: str(R.PRIORITY_WARNING),
            R.F_IDENT: R.DETECTOR_IDENTIFIER,
            R.F_EVENT: event.value,
            R.F_SRC: src,
            R.F_SRC_NET: net,
            R.F_DST: addr_text(st.dst) if st.dst else "",
            R.F_IFACE: self.ifname(st.ifindex),
            R.F_PROTO: proto,
            R.F_PORT: str(st.port),
            R.F_SCAN: st.scan,
            R.F_MODE: st.mode,
            R.F_VERIFIED: "1" if st.verified else "0",
            R.F_HITS: str(st.hits),
            R.F_PORTS: str(st.nports),
            R.F_WINDOW: str(int(self.window)),
            R.F_TIME: f"{wall:.6f}",
        }
        if name and R.safe_hostname(name):
            fields[R.F_SRC_NAME] = name
        return {k: v for k, v in fields.items() if v != ""}

    def on_trigger(self, st: SourceState, now: float, wall: float) -> R.Record | None:
        """A source crossed the trigger: its scan record, or None when the record cap defers it.

        A deferred source stays untriggered, so its next probe tries again.
        """
        if not self.limit.allow(now):
            self.suppressed += 1
            return None
        self.tracker.mark_reported(st, now)
        return R.validate(self._fields(st, R.Event.SCAN, wall))

    def tick(self, now: float, wall: float) -> list[R.Record]:
        """Summary records due now (not rate-limited: there is at most one per source per interval)."""
        return [R.validate(self._fields(st, R.Event.SUMMARY, wall)) for _, st in self.tracker.due(now)]

    def rearmed(self, states: list[SourceState], now: float, wall: float) -> list[R.Record]:
        """Final summaries of sources forgotten because their ban ended (:meth:`Tracker.rearm`) that hold probes
        not yet reported (those seen while banned), written before the source's next probe makes a new scan."""
        out = []
        for st in states:
            if st.hits <= st.reported_hits:
                continue
            fields = self._fields(st, R.Event.SUMMARY, wall)
            fields[R.F_MESSAGE] += "; ban ended, the next probe is a new scan"
            fields[R.F_DETAIL] = "rearmed"
            st.reported_hits = st.hits
            st.last_report = now
            out.append(R.validate(fields))
        return out
