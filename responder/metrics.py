"""The responder's metrics: its decisions (every record it writes passes :meth:`ResponderMetrics.on_record`) and
its state (bans in force, failures, forged records, read lag) as Prometheus families.

Labels are bounded by the configuration: the jail, the action, the source a jail reads, and small fixed sets
(the unban reason, the action phase). No address anywhere. Names and meanings: docs/metrics.md.
"""

from __future__ import annotations

import bisect
import time
from collections import Counter
from collections.abc import Iterable
from typing import Protocol

from prometheus_client import ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from portsentinel import record as R
from portsentinel.common.metrics import Exporter
from portsentinel.responder.core.bans import Ban, BanBook
from portsentinel.responder.core.engine import Engine
from portsentinel.responder.core.forgery import ForgeryTally


class Responder(Protocol):
    """What the collector reads of the responder (the service imports this module, never the reverse)."""

    @property
    def engine(self) -> Engine: ...
    @property
    def book(self) -> BanBook: ...
    @property
    def forgeries(self) -> ForgeryTally: ...
    @property
    def errors(self) -> list[str]: ...

P = "portsentinel_responder_"
#: Latency buckets (seconds): a ban is in force in milliseconds when all is well, seconds when journald lags.
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
#: Bans whose record time waits for their ban record (bounded: a ban whose record never comes is dropped).
MAX_PENDING = 10_000

NAMES = tuple(P + n for n in (
    "failures_total", "bans_total", "bans_in_force", "unbans_total", "action_runs_total",
    "action_failures_total", "ban_latency_seconds", "records_forged_total", "never_ban_refusals_total",
    "cap_refusals_total", "kernel_trap_bans_total", "entries_read_total", "read_lag_seconds", "ignored_total",
    "config_errors"))
#: Series names a histogram adds to its family name.
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


def unban_reason(detail: str) -> str:
    """PS_DETAIL of an unban record → a bounded label: expiry, manual, reload, covered, or other."""
    if detail.startswith("expired"):
        return "expiry"
    if detail == "manual":
        return "manual"
    if detail.startswith("covered by"):
        return "covered"
    if "reload" in detail or detail == "jail removed":  # a reload that dropped the jail
        return "reload"
    return "other"


class Histogram:
    """Cumulative buckets, a sum and a count (what HistogramMetricFamily wants)."""

    def __init__(self, buckets: tuple[float, ...]) -> None:
        self.bounds = buckets
        self.counts = [0] * (len(buckets) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.sum += value
        self.counts[bisect.bisect_left(self.bounds, value)] += 1  # the first bucket whose bound is >= value

    def cumulative(self) -> list[tuple[str, float]]:
        out, total = [], 0
        for bound, n in zip((*[repr(b) for b in self.bounds], "+Inf"), self.counts, strict=True):
            total += n
            out.append((bound, float(total)))
        return out


class ResponderMetrics(Collector):
    """Counters fed by the responder's records, and a collector reading its state when scraped."""

    def __init__(self) -> None:
        self.resp: Responder | None = None
        self.bans: Counter[str] = Counter()
        self.trap_bans: Counter[str] = Counter()
        self.unbans: Counter[str] = Counter()
        self.runs: Counter[tuple[str, str]] = Counter()
        self.failures: Counter[tuple[str, str]] = Counter()
        self.never: Counter[str] = Counter()
        self.capped: Counter[str] = Counter()
        self.ignored: Counter[str] = Counter()
        self.read: Counter[str] = Counter()
        self.lag: dict[str, float] = {}
        self.latency = Histogram(BUCKETS)
        self._pending: dict[tuple[str, str], float] = {}

    # ------------------------------------------------------------------ fed by the service
    def ban_from(self, ban: Ban, fields: dict[str, str]) -> None:
        """A ban decided on an entry: remember when its record was built, for the latency histogram."""
        self.bans_from([(ban, fields)])

    def bans_from(self, decided: list[tuple[Ban, dict[str, str]]]) -> None:
        """:meth:`ban_from` for each of a batch's bans (those decided the short way: responder.core.lean)."""
        pending, time_field, record_time = self._pending, R.F_TIME, R.record_time
        for ban, fields in decided:
            text = fields.get(time_field)
            try:
                t: float | None = float(text) if text else record_time(fields)
            except ValueError:
                t = record_time(fields)
            if t is not None:
                if len(pending) >= MAX_PENDING:
                    pending.clear()
                pending[(ban.jail, ban.ip)] = t

    def entries(self, source: str, fields: dict[str, str], count: int, now: float) -> None:
        """``count`` entries read from ``source``; ``fields``: the last one's (its time gives the lag)."""
        self.read[source] += count
        t = R.record_time(fields)
        if t is not None:
            self.lag[source] = max(0.0, now - t)

    def on_record(self, rec: dict[str, str]) -> None:
        """Every decision record the responder writes."""
        event = rec.get(R.F_EVENT, "")
        jail = rec.get(R.F_JAIL, "")
        action = rec.get(R.F_ACTION, "")
        detail = rec.get(R.F_DETAIL, "")
        if event == R.Event.BAN.value and jail:
            if action == "kernel-trap":
                self.trap_bans[jail] += 1
                return
            if detail.startswith("retry="):
                self.runs[(action, "ban")] += 1
                return
            self.bans[jail] += 1
            for name in filter(None, action.split(",")):
                self.runs[(name, "ban")] += 1
            t = self._pending.pop((jail, rec.get(R.F_SRC_NET) or rec.get(R.F_SRC, "")), None)
            if t is not None:
                self.latency.observe(max(0.0, time.time() - t))
        elif event == R.Event.UNBAN.value and jail:
            if detail.startswith("retry="):
                self.runs[(action, "unban")] += 1
                return
            self.unbans[unban_reason(detail)] += 1
            if action != "kernel-trap":
                for name in filter(None, action.split(",")):
                    self.runs[(name, "unban")] += 1
        elif event == R.Event.FAILED.value and action:
            phase = detail.partition("phase=")[2].split(" ")[0].removeprefix("action") or "other"
            self.failures[(action, phase)] += 1
            self.runs[(action, phase)] += 1
        elif event == R.Event.IGNORED.value and jail:
            if detail.startswith("never banned"):
                self.never[jail] += 1
            elif detail.startswith("ban cap reached"):
                self.capped[jail] += 1
            else:
                self.ignored[jail] += 1

    def on_ban_records(self, recs: list[dict[str, str]]) -> None:
        """Ban records of the bulk path (no retry, no kernel trap among them): :meth:`on_record` for each, counted
        per jail and action at once."""
        per: Counter[tuple[str, str]] = Counter((r.get(R.F_JAIL, ""), r.get(R.F_ACTION, "")) for r in recs)
        for (jail, action), n in per.items():
            if jail:
                self.bans[jail] += n
                for name in filter(None, action.split(",")):
                    self.runs[(name, "ban")] += n
        if self._pending:
            now = time.time()
            for r in recs:
                t = self._pending.pop((r.get(R.F_JAIL, ""), r.get(R.F_SRC_NET) or r.get(R.F_SRC, "")), None)
                if t is not None:
                    self.latency.observe(max(0.0, now - t))

    # ------------------------------------------------------------------ scraped
    def collect(self) -> Iterable[Metric]:
        # The endpoint's thread runs this while the loop decides: each dict is copied first (dict() and list()
        # of a dict copy in C, under the GIL, in one step), never iterated while it may grow.
        r = self.resp
        failures = CounterMetricFamily(P + "failures", "Failures counted by jails (since the last load)",
                                       labels=("jail",))
        in_force = GaugeMetricFamily(P + "bans_in_force", "Bans in force, by jail", labels=("jail",))
        if r is not None:
            jails = dict(r.engine.jails)
            for name, rt in sorted(jails.items()):
                failures.add_metric((name,), rt.jail.failures_total)
            held = Counter(b.jail for b in list(r.book.active.values()))
            for name in sorted(set(held) | set(jails)):
                in_force.add_metric((name,), held.get(name, 0))
        yield failures
        yield in_force
        yield _by(P + "bans", "Bans put in force, by jail", ("jail",), self.bans)
        yield _by(P + "kernel_trap_bans", "Bans the kernel trap made (tarpits), by jail", ("jail",), self.trap_bans)
        yield _by(P + "unbans", "Bans lifted, by reason (expiry, manual, reload, covered, other)", ("reason",),
                  self.unbans)
        yield _by(P + "action_runs", "Action phases run, by action and phase", ("action", "phase"), self.runs)
        yield _by(P + "action_failures", "Action phases that failed, by action and phase", ("action", "phase"),
                  self.failures)
        yield _by(P + "never_ban_refusals", "Bans refused: a never-ban address", ("jail",), self.never)
        yield _by(P + "cap_refusals", "Bans refused: over the jail's per-minute cap", ("jail",), self.capped)
        yield _by(P + "ignored", "Entries ignored for another reason, by jail", ("jail",), self.ignored)
        yield _by(P + "entries_read", "Entries read, by source", ("source",), self.read)
        lag = GaugeMetricFamily(P + "read_lag_seconds", "Age of the last entry read from each source when it "
                                                        "was read", labels=("source",))
        for source, seconds in sorted(dict(self.lag).items()):
            lag.add_metric((source,), seconds)
        yield lag
        hist = HistogramMetricFamily(P + "ban_latency_seconds", "Record built (PS_TIME) to ban in force "
                                                                "(its actions run)")
        hist.add_metric((), self.latency.cumulative(), self.latency.sum)  # a list and a float: read whole
        yield hist
        yield CounterMetricFamily(P + "records_forged", "Records refused as forged (untrusted writer)",
                                  value=0 if r is None else r.forgeries.total)
        yield GaugeMetricFamily(P + "config_errors", "Configuration errors at the last load",
                                value=0 if r is None else len(r.errors))


def _by(name: str, doc: str, labels: tuple[str, ...], counts: Counter[str] | Counter[tuple[str, str]]
        ) -> CounterMetricFamily:
    fam = CounterMetricFamily(name, doc, labels=labels)
    for key, n in sorted(dict(counts).items()):
        fam.add_metric(key if isinstance(key, tuple) else (key,), n)
    return fam


def exporter(resp: Responder, metrics: ResponderMetrics, listen: str, textfile: str,
             interval: float) -> Exporter | None:
    """The responder's exporter (None when both settings are empty); started."""
    if not (listen or textfile):
        return None
    metrics.resp = resp
    exp = Exporter([metrics, ProcessCollector(registry=None)], listen=listen, textfile=textfile, interval=interval)
    exp.start()
    return exp
