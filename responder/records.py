"""The responder's own records: every decision (ban, unban, ignored, failed, start, stop) written through one
:meth:`Reporter.report`, to journald or JSON lines (responder.adapters.decisions), counted by the metrics, and
every ban that ends told to the detector (its re-arm socket) so a returning scanner is a new scan."""

from __future__ import annotations

import logging
import time

from portsentinel import record as R
from portsentinel.common.wake import send_wake
from portsentinel.responder.adapters.decisions import DecisionLog
from portsentinel.responder.adapters.rearm import RearmSender
from portsentinel.responder.core.bans import Ban, src_fields
from portsentinel.responder.core.engine import Decision
from portsentinel.responder.core.forgery import ForgeryTally, Report, describe, writer_of
from portsentinel.responder.metrics import ResponderMetrics

log = logging.getLogger("portsentinel.responder")


def priority(event: R.Event) -> int:
    if event in (R.Event.BAN, R.Event.FAILED):
        return R.PRIORITY_WARNING
    return R.PRIORITY_NOTICE if event in (R.Event.UNBAN, R.Event.IGNORED) else R.PRIORITY_INFO


class Reporter:
    def __init__(self, decisions: DecisionLog, rearm: RearmSender, metrics: ResponderMetrics, *,
                 fleet_wake: str = "") -> None:
        self.decisions = decisions
        #: The fleet daemon's wake socket: nudged at the end of a turn that wrote a shared decision (PS_SHARE=1).
        self.fleet_wake = fleet_wake
        self.shared = False
        self.rearm = rearm
        self.metrics = metrics
        self.forgeries = ForgeryTally()  # forged records: one record per writer per interval (core.forgery)
        self.rearmed: set[str] = set()  # targets re-armed in this loop turn

    def report(self, event: R.Event, message: str, **fields: str) -> None:
        if (event is R.Event.UNBAN and fields.get(R.F_SRC)
                and not fields.get(R.F_DETAIL, "").startswith("covered by")):
            # Every ban that ends is written as an unban record, whatever ended it (expiry, unban, a tarpit, a
            # jail removed): the detector hears of each, so what it re-arms never differs from the audit trail.
            # Bans lifted through lift() were re-armed just before their actions ran (ban_ends); others now.
            target = fields.get(R.F_SRC_NET) or fields[R.F_SRC]  # a network ban: every source inside
            if target not in self.rearmed:
                self.rearm.queue(target)
                self.rearm.flush()
        prio = priority(event)
        src = fields.get(R.F_SRC, "")
        if "/" in src:  # a network ban: PS_SRC stays an address, PS_SRC_NET names the network
            fields = {**fields, **src_fields(src)}
        rec = {R.F_MESSAGE: message, R.F_MSGID: R.MESSAGE_IDS[event], R.F_PRIORITY: str(prio),
               R.F_IDENT: R.RESPONDER_IDENTIFIER, R.F_EVENT: event.value,
               R.F_TIME: f"{time.time():.6f}", **{k: v for k, v in fields.items() if v != ""}}
        self.metrics.on_record(rec)
        if rec.get(R.F_SHARE) == "1":
            self.shared = True
        if event in (R.Event.BAN, R.Event.UNBAN, R.Event.IGNORED) and self.decisions.name == "journal":
            level = logging.DEBUG  # the record itself is in the journal: no second copy on stderr
        else:
            level = logging.WARNING if prio <= R.PRIORITY_WARNING else logging.INFO
        if log.isEnabledFor(level):
            log.log(level, "%s", message)
        try:
            self.decisions.write(R.validate(rec))
        except (OSError, R.RecordError) as exc:
            log.error("cannot write decision record: %s", exc)

    def ban_ends(self, ban: Ban) -> None:
        """A ban is about to be lifted: tell the detector first (docs/responder.md, "A scanner that comes back").
        A probe that arrives before the unban actions have run is still dropped but already a new scan, which
        the loop bans again once the unban is done; none can get through uncounted."""
        self.rearm.queue(ban.ip)
        self.rearm.flush()
        self.rearmed.add(ban.ip)

    def decision(self, d: Decision) -> None:
        """A decision that is not a ban: a forged record (counted per writer), an invalid one, or a refusal."""
        if d.kind == "ban":
            return
        if d.kind == "forged":
            first = self.forgeries.add(writer_of(d.fields, f"jail {d.jail}: {d.reason}"), d.jail, d.ip, d.reason,
                                       time.time())
            if first is not None:
                self._forgery(first)
        elif d.kind == "invalid":
            self.report(R.Event.IGNORED, f"jail {d.jail}: {d.reason}", PS_JAIL=d.jail, PS_DETAIL=d.reason, **d.extra)
        else:
            self.report(R.Event.IGNORED, f"jail {d.jail}: {d.ip} not banned: {d.reason}", PS_JAIL=d.jail,
                        PS_SRC=d.ip, PS_DETAIL=d.reason, **d.extra)

    def _forgery(self, r: Report) -> None:
        message, fields = describe(r, self.forgeries.interval)
        self.report(R.Event.IGNORED, message, **fields)

    def forgeries_due(self, *, flush: bool = False) -> None:
        now = time.time()
        for r in self.forgeries.flush(now) if flush else self.forgeries.due(now):
            self._forgery(r)

    def turn_done(self) -> None:
        """End of a loop turn: decisions made durable (JSON lines: one fdatasync), the fleet daemon woken when
        one of them is to be shared (it reads them now, not at journald's next notification), re-arms sent."""
        self.decisions.flush()
        if self.shared:
            self.shared = False
            send_wake(self.fleet_wake)
        self.rearm.flush()
        self.rearmed.clear()
