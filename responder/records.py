"""The responder's own records: every decision (ban, unban, ignored, failed, start, stop) written through one
:meth:`Reporter.report`, to journald or JSON lines (responder.adapters.decisions), counted by the metrics, and
every ban that ends told to the detector (its re-arm socket) so a returning scanner is a new scan.

Ban records are held until the end of the loop turn (or the next record of another kind, which keeps the order).
When journald takes them and a turn banned :data:`AGGREGATE_MIN` addresses or more (a catch-up, a restart, a
flood), the bans that share their fields are written as one entry per :data:`AGGREGATE_MAX` addresses (half as
many networks), PS_SRC repeated once per address and PS_BATCH their number: ``journalctl PS_SRC=ADDR`` still finds
each, and 100,000 bans are 400 entries (of networks 800), far below journald's rate limit (10,000 per 30 s by
default). Fields that differ between
such bans (bantime, hits, port, until, offence) are left out of the entry and summarised in its MESSAGE. Network
bans whose PS_SRC is the network's own address (a remote one, a manual one) are aggregated apart from address bans,
PS_SRC_NET repeated too; one made by a record of another address keeps its own entry, which says which address
it was. A shared ban (PS_SHARE=1: the fleet daemon reads one address per record) is always written on its own.
"""

from __future__ import annotations

import logging
import operator
import time
from collections.abc import Callable, Iterable
from typing import Any

from portsentinel import record as R
from portsentinel.common.wake import records_payload, send_wake
from portsentinel.responder.actions.bulkban import add_ban_fields, ban_message
from portsentinel.responder.adapters.decisions import DecisionLog
from portsentinel.responder.adapters.rearm import RearmSender
from portsentinel.responder.core.bans import Ban, src_fields
from portsentinel.responder.core.engine import Decision
from portsentinel.responder.core.forgery import ForgeryTally, Report, describe, writer_of
from portsentinel.responder.core.share import add_record_fields
from portsentinel.responder.metrics import ResponderMetrics

log = logging.getLogger("portsentinel.responder")

#: A turn with at least this many ban records writes them aggregated (journald only).
AGGREGATE_MIN = 16
#: At most this many addresses in one aggregated entry, half as many networks (PS_SRC and PS_SRC_NET repeated):
#: journald's entry stays well under its size limits, and under ~510 fields, beyond which sd_journal_sendv needs
#: more than the kernel's 1,024 iovecs of one message and fails (EINVAL: 256 network bans were 530 fields).
AGGREGATE_MAX = 256
#: Fields that may differ between the bans of one aggregated entry: left out of it, summarised in MESSAGE.
VARYING = frozenset({R.F_MESSAGE, R.F_TIME, R.F_SRC, R.F_SRC_NET, R.F_BANTIME, R.F_HITS, R.F_PORT, R.F_UNTIL,
                     R.F_OFFENCE, R.F_ORIGINS})
#: Bounds the ban records held in one turn (written, aggregated, when reached).
HOLD_MAX = 65_536


def priority(event: R.Event) -> int:
    if event in (R.Event.BAN, R.Event.FAILED):
        return R.PRIORITY_WARNING
    return R.PRIORITY_NOTICE if event in (R.Event.UNBAN, R.Event.IGNORED) else R.PRIORITY_INFO


class Reporter:
    def __init__(self, decisions: DecisionLog, rearm: RearmSender, metrics: ResponderMetrics, *,
                 fleet_wake: str = "") -> None:
        self.decisions = decisions
        #: The fleet daemon's wake socket: nudged at the end of a turn that wrote a shared decision (PS_SHARE=1),
        #: the datagram carrying those decisions (already in the journal) so it need not wait for journald.
        self.fleet_wake = fleet_wake
        self.shared: list[dict[str, str]] = []
        self.rearm = rearm
        self.metrics = metrics
        self.forgeries = ForgeryTally()  # forged records: one record per writer per interval (core.forgery)
        self.rearmed: set[str] = set()  # targets re-armed in this loop turn
        self._bans: list[dict[str, str]] = []  # ban records of this turn, not written yet
        #: id of a held ban record whose MESSAGE is not made yet -> its ban and actions (_ban_records)
        self._later: dict[int, tuple[Ban, list[str]]] = {}
        #: Aggregated entries written (each standing for 2 to AGGREGATE_MAX bans), for the tests and the bench.
        self.aggregated = 0

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
        self._emit(event, prio, rec)

    def report_applied(self, applied: list[tuple[Ban, list[str]]]) -> None:
        """The ban records of bans applied together (Executor.ban_many), with a shared or remote ban's fleet
        fields (responder.core.share), as :meth:`report` would write each; counted by the metrics at once."""
        if not applied:
            return
        head = {R.F_MSGID: R.MESSAGE_IDS[R.Event.BAN], R.F_PRIORITY: str(R.PRIORITY_WARNING),
                R.F_IDENT: R.RESPONDER_IDENTIFIER, R.F_EVENT: R.Event.BAN.value, R.F_TIME: f"{time.time():.6f}"}
        head = {R.F_MESSAGE: "", **head}
        recs = []
        for ban, names in applied:
            rec = head.copy()
            if ban.info:
                add_record_fields(ban, rec)
            add_ban_fields(ban, names, rec)
            recs.append(rec)
        self._ban_records(recs, applied)  # (each MESSAGE made there, or once the record is written on its own)

    def report_bans(self, bans: list[tuple[str, dict[str, str]]]) -> None:
        """Ban records of many bans applied together: (message, fields) each, no field empty, PS_SRC an address
        (a network in PS_SRC_NET), as :meth:`report` would write each; counted by the metrics at once."""
        if not bans:
            return
        head = {R.F_MSGID: R.MESSAGE_IDS[R.Event.BAN], R.F_PRIORITY: str(R.PRIORITY_WARNING),
                R.F_IDENT: R.RESPONDER_IDENTIFIER, R.F_EVENT: R.Event.BAN.value, R.F_TIME: f"{time.time():.6f}"}
        self._ban_records([{R.F_MESSAGE: message, **head, **fields} for message, fields in bans])

    def _ban_records(self, recs: list[dict[str, str]], bans: list[tuple[Ban, list[str]]] | None = None) -> None:
        """Ban records counted, then held (journald: maybe aggregated) or written. ``bans``: the ban and actions of
        each record whose MESSAGE is still to be made: a held one gets it only if it is written on its own (an
        aggregated entry has a MESSAGE of its own), the others now."""
        self.metrics.on_ban_records(recs)
        journal = self.decisions.name == "journal"  # (what _emit decides for each ban record, decided once)
        level = logging.DEBUG if journal else logging.WARNING
        logged = log.isEnabledFor(level)
        held = self._bans
        later = self._later
        for i, rec in enumerate(recs):
            if bans is not None and (logged or not journal):
                rec[R.F_MESSAGE] = ban_message(*bans[i])
            shared = rec.get(R.F_SHARE) == "1"
            if shared:
                self.shared.append(rec)
            if logged:
                log.log(level, "%s", rec[R.F_MESSAGE])
            net = rec.get(R.F_SRC_NET)
            if (journal and not shared and R.F_DETAIL not in rec
                    and (net is None or net.partition("/")[0] == rec[R.F_SRC])):
                held.append(rec)
                if bans is not None and not logged:
                    later[id(rec)] = bans[i]
                if len(held) >= HOLD_MAX:
                    self.write_bans()
                    held, later = self._bans, self._later
                continue
            if bans is not None and not rec[R.F_MESSAGE]:
                rec[R.F_MESSAGE] = ban_message(*bans[i])
            self.write_bans()
            held, later = self._bans, self._later
            self._write(rec)

    def _emit(self, event: R.Event, prio: int, rec: dict[str, str]) -> None:
        """A record made and counted: logged, then held (a ban record for journald) or written."""
        if rec.get(R.F_SHARE) == "1":
            self.shared.append(rec)
        journal = self.decisions.name == "journal"
        if event in (R.Event.BAN, R.Event.UNBAN, R.Event.IGNORED) and journal:
            level = logging.DEBUG  # the record itself is in the journal: no second copy on stderr
        else:
            level = logging.WARNING if prio <= R.PRIORITY_WARNING else logging.INFO
        if log.isEnabledFor(level):
            log.log(level, "%s", rec[R.F_MESSAGE])
        net = rec.get(R.F_SRC_NET)
        if (journal and event is R.Event.BAN and R.F_SRC in rec and R.F_DETAIL not in rec
                and rec.get(R.F_SHARE) != "1" and (net is None or net.partition("/")[0] == rec[R.F_SRC])):
            # (a network ban is held when its PS_SRC is the network's own address: each pair can be told again)
            self._bans.append(rec)  # held to the end of the turn, maybe aggregated
            if len(self._bans) >= HOLD_MAX:
                self.write_bans()
            return
        self.write_bans()  # what was held goes first: records stay in order
        self._write(rec)

    def _write(self, rec: dict[str, str]) -> None:
        if self._later:  # a held ban record written on its own: its MESSAGE now
            ban = self._later.pop(id(rec), None)
            if ban is not None:
                rec[R.F_MESSAGE] = ban_message(*ban)
        try:
            self.decisions.write(R.validate(rec))
        except (OSError, R.RecordError) as exc:
            log.error("cannot write decision record: %s", exc)

    def write_bans(self) -> None:
        """The ban records held in this turn written: one by one when they are few, else aggregated."""
        held, self._bans = self._bans, []
        try:
            self._write_held(held)
        finally:
            self._later.clear()  # (each was held: written now, on its own or aggregated)

    def _write_held(self, held: list[dict[str, str]]) -> None:
        if len(held) < AGGREGATE_MIN:
            for rec in held:
                self._write(rec)
            return
        # grouped by the names and values of their fields outside VARYING (address bans and network bans apart:
        # PS_SRC_NET is one of the names); the names of one shape of record are worked out once
        shapes: dict[tuple[str, ...], tuple[tuple[str, ...], Callable[[dict[str, str]], Any], bool]] = {}
        groups: dict[tuple[tuple[str, ...], Any, bool], list[dict[str, str]]] = {}
        for rec in held:
            shape = tuple(rec)
            known = shapes.get(shape)
            if known is None:
                names = tuple(sorted(k for k in shape if k not in VARYING))
                known = shapes[shape] = (names, operator.itemgetter(*names) if names else lambda r: (),
                                         R.F_SRC_NET in shape)
            groups.setdefault((known[0], known[1](rec), known[2]), []).append(rec)
        for (names, values, _network), recs in groups.items():
            if len(recs) == 1:
                self._write(recs[0])
                continue
            common = dict(zip(names, values if len(names) != 1 else (values,), strict=True))
            step = AGGREGATE_MAX // 2 if _network else AGGREGATE_MAX  # two repeated fields per network ban
            for i in range(0, len(recs), step):
                self._write_aggregate(dict(common), recs[i:i + step])

    def _write_aggregate(self, common: dict[str, str], recs: list[dict[str, str]]) -> None:
        """One entry for ``recs``, bans that agree on ``common``: PS_SRC (and for network bans PS_SRC_NET) repeated,
        PS_BATCH their number."""
        srcs = [r[R.F_SRC] for r in recs]
        nets = [r[R.F_SRC_NET] for r in recs if R.F_SRC_NET in r]
        varying = []
        for name in sorted(VARYING - {R.F_MESSAGE, R.F_TIME, R.F_SRC, R.F_SRC_NET}):
            values = {r.get(name, "") for r in recs}
            if len(values) == 1:
                if (value := values.pop()) != "":
                    common[name] = value
            else:
                varying.append(f"{name} {_span(values)}")
        targets, what = (nets, "networks") if nets else (srcs, "addresses")
        shown = ", ".join(targets[:16]) + (f" and {len(targets) - 16} more" if len(targets) > 16 else "")
        bantime = common.get(R.F_BANTIME)
        length = "" if bantime is None else " forever" if bantime == "-1" else f" for {bantime}s"
        message = (f"jail {common.get(R.F_JAIL, '')}: banned {len(srcs)} {what}{length} by "
                   f"{common.get(R.F_ACTION) or 'no action'} (one record for the batch): {shown}"
                   + (f"; {'; '.join(varying)}" if varying else ""))
        fields = {**common, R.F_MESSAGE: message, R.F_TIME: recs[-1][R.F_TIME], R.F_SRC: srcs[0],
                  R.F_BATCH: str(len(srcs))}
        if nets:
            fields[R.F_SRC_NET] = nets[0]
        try:
            record = R.validate(fields)  # once for the batch; each address is canonical (the engine made it so)
            self.decisions.write_aggregate(record, {R.F_SRC: srcs[1:], R.F_SRC_NET: nets[1:]})
            self.aggregated += 1
        except (OSError, R.RecordError, ValueError) as exc:
            log.error("cannot write an aggregated decision record (%d bans; writing them one by one): %s",
                      len(recs), exc)
            for rec in recs:
                self._write(rec)

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
        """End of a loop turn: held ban records written, decisions made durable (JSON lines: one fdatasync),
        the fleet daemon woken when one of them is to be shared (the datagram carries them: it publishes them now,
        not once journald shows them), re-arms sent."""
        self.write_bans()
        self.decisions.flush()
        if self.shared:
            send_wake(self.fleet_wake, records_payload(self.shared))
            self.shared = []
        self.rearm.flush()
        self.rearmed.clear()


def _span(values: Iterable[str]) -> str:
    """``min..max`` of numeric texts (e.g. bantimes of one batch), else how many distinct values."""
    nums = []
    for v in values:
        try:
            nums.append(float(v))
        except ValueError:
            return f"{len(set(values))} values"
    lo, hi = min(nums), max(nums)
    return f"{lo:g}..{hi:g}"
