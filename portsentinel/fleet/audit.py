"""The fleet daemon's own records: lifecycle at once, everything per entry aggregated. Pure (clock passed in).

journald rate-limits a service (10,000 records per 30 s by default) and would drop what matters, so a catch-up
of 100,000 keys is a handful of records: per interval one ``summary`` of what was applied, published and
spooled, and one ``ignored`` record per origin whose values were refused (count and the first reasons), at most
:data:`MAX_ORIGINS` of them (the rest folded into one). Lifecycle records (connected, disconnected, spooled N,
resumed at seq, watcher restarted) are written as they happen.
"""

from __future__ import annotations

from collections import Counter

from portsentinel import record as R

INTERVAL = 10.0
MAX_ORIGINS = 20
MAX_REASONS = 3


def record(event: R.Event, message: str, now: float, **fields: str) -> R.Record:
    prio = R.PRIORITY_WARNING if event in (R.Event.FAILED, R.Event.OVERLOAD) else (
        R.PRIORITY_NOTICE if event is R.Event.IGNORED else R.PRIORITY_INFO)
    return R.validate({R.F_IDENT: R.FLEET_IDENTIFIER, R.F_MESSAGE: message, R.F_MSGID: R.MESSAGE_IDS[event],
                       R.F_PRIORITY: str(prio), R.F_EVENT: event.value, R.F_TIME: f"{now:.6f}",
                       **{k: v for k, v in fields.items() if v != ""}})


class Audit:
    def __init__(self, interval: float = INTERVAL) -> None:
        self.interval = interval
        self.counts: Counter[str] = Counter()
        self.refused: Counter[str] = Counter()
        self.reasons: dict[str, list[str]] = {}
        self.pending: list[R.Record] = []
        self._next = 0.0
        #: Totals since start (for the status file).
        self.totals: Counter[str] = Counter()

    def event(self, event: R.Event, message: str, now: float, **fields: str) -> None:
        """A lifecycle record, written at the next :meth:`due`."""
        self.pending.append(record(event, message, now, **fields))

    def count(self, what: str, n: int = 1) -> None:
        """applied, unbanned, expired, published, spooled, dropped …"""
        if n:
            self.counts[what] += n
            self.totals[what] += n

    def refuse(self, origin: str, reason: str) -> None:
        self.refused[origin] += 1
        self.totals["refused"] += 1
        reasons = self.reasons.setdefault(origin, [])
        if len(reasons) < MAX_REASONS:
            reasons.append(reason[:200])

    def due(self, now: float, *, force: bool = False) -> list[R.Record]:
        """Lifecycle records so far, and the aggregates once an interval has passed (or ``force``)."""
        out, self.pending = self.pending, []
        if not force and now < self._next:
            return out
        self._next = now + self.interval
        if self.counts:
            parts = ", ".join(f"{what} {n}" for what, n in sorted(self.counts.items()))
            out.append(record(R.Event.SUMMARY, f"fleet: {parts}", now, PS_DETAIL=parts))
            self.counts.clear()
        ranked = self.refused.most_common()
        for origin, n in ranked[:MAX_ORIGINS]:
            reasons = "; ".join(self.reasons.get(origin, []))
            out.append(record(R.Event.IGNORED, f"fleet: refused {n} value(s) from {origin}: {reasons}", now,
                              PS_ORIGIN=origin, PS_HITS=str(n), PS_DETAIL=reasons))
        rest = ranked[MAX_ORIGINS:]
        if rest:
            total = sum(n for _, n in rest)
            out.append(record(R.Event.IGNORED, f"fleet: refused {total} value(s) from {len(rest)} more origin(s)",
                              now, PS_HITS=str(total)))
        self.refused.clear()
        self.reasons.clear()
        return out
