"""Wiring: sources → engine → store → actions, in one selector loop, with every decision written back.

Order of effects for a ban: the ban and the source cursor are committed to sqlite in one transaction first,
then the actions run. After a crash the ban is in the database and is re-applied at start (actions are
idempotent), and the entry is never acted on twice. An unban is committed as pending first and stays so until
every action has lifted it (responder.core.keeper). One entry or ban that raises is logged with itself and skipped.
"""

from __future__ import annotations

import logging
import selectors
import signal
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from portsentinel import record as R
from portsentinel.common import paths
from portsentinel.common.metrics import Exporter
from portsentinel.common.sdnotify import watchdog_interval
from portsentinel.common.systemd import journal_available
from portsentinel.responder.actions.action import Action
from portsentinel.responder.actions.executor import Executor
from portsentinel.responder.adapters import facts
from portsentinel.responder.adapters.control import ControlServer
from portsentinel.responder.adapters.decisions import DecisionLog
from portsentinel.responder.adapters.hostwatch import HostWatch
from portsentinel.responder.adapters.rearm import RearmSender
from portsentinel.responder.adapters.store import Store
from portsentinel.responder.config.jailconf import JailConfig, ResponderConfig, load
from portsentinel.responder.config.reload import plan
from portsentinel.responder.core import views
from portsentinel.responder.core.bans import Ban, BanBook, src_fields
from portsentinel.responder.core.engine import Decision, Engine, JailRuntime
from portsentinel.responder.core.forgery import ForgeryTally, Report, describe, writer_of
from portsentinel.responder.core.guard import NeverBan, PerMinuteCap
from portsentinel.responder.core.health import Health
from portsentinel.responder.core.jail import Jail
from portsentinel.responder.core.keeper import Keeper
from portsentinel.responder.core.sources import Source
from portsentinel.responder.core.trust import pushed_down
from portsentinel.responder.metrics import ResponderMetrics
from portsentinel.responder.metrics import exporter as metrics_exporter

log = logging.getLogger("portsentinel.responder")

DETECTOR_JSONL = paths.ALERTS_JSONL


@dataclass
class Options:
    config_dir: Path
    state_dir: Path
    socket: str
    backend: str = "auto"
    wake: str = paths.WAKE_SOCKET
    control_group: str = ""
    decisions_jsonl: str = paths.DECISIONS_JSONL
    rearm: str = paths.REARM_SOCKET
    #: Prometheus metrics (docs/metrics.md): endpoint HOST:PORT and/or node_exporter textfile; both off by default.
    metrics_listen: str = ""
    metrics_textfile: str = ""
    metrics_interval: float = 10.0


class Responder:
    def __init__(self, opts: Options) -> None:
        self.opts = opts
        self.sel = selectors.DefaultSelector()
        self.book = BanBook()
        self.sources: dict[str, Source] = {}
        self.store = Store(str(opts.state_dir / "responder.sqlite3"))
        self._stop = False
        self._hup = False
        self.started = time.time()
        self.errors: list[str] = []
        from portsentinel.responder.adapters.journal_source import journal_readable

        self.use_journal = journal_readable() if opts.backend == "auto" else opts.backend == "systemd"
        self.decisions = DecisionLog(opts.decisions_jsonl, use_journal=self._journal_socket())
        self.executor = Executor(opts.config_dir / "actions.d", self.report)
        #: Bans that end are told to the detector, so a returning scanner is a new scan (docs/responder.md).
        self.rearm = RearmSender(opts.rearm)
        self._rearmed: set[str] = set()  # targets re-armed in this loop turn
        from portsentinel.responder.adapters.trapkernel import KernelTraps  # kernel trap (docs/kernel-trap.md)

        self.traps = KernelTraps(self.executor.runner, self.report)
        self.engine: Engine = Engine([], NeverBan(), self.book, self.store)
        self.keeper = Keeper(self.store, self.book, self.executor, self.report)
        self.pending = self.keeper.pending
        self.health = Health(self.executor, self.book, self.traps, self.report)
        self.config: ResponderConfig | None = None
        self.host = HostWatch(self.sel, follow=False)  # start() follows the host (netlink, resolver files)
        self.forgeries = ForgeryTally()  # forged records: one record per writer per interval (responder.core.forgery)
        self._watchdog = watchdog_interval()
        self._next_ping = 0.0
        self.metrics = ResponderMetrics()  # fed by report(); exported when the options ask (start())
        self.exporter: Exporter | None = None

    @staticmethod
    def _journal_socket() -> bool:
        return journal_available()

    # ------------------------------------------------------------------ records
    def report(self, event: R.Event, message: str, **fields: str) -> None:
        if (event is R.Event.UNBAN and fields.get(R.F_SRC)
                and not fields.get(R.F_DETAIL, "").startswith("covered by")):
            # Every ban that ends is written as an unban record, whatever ended it (expiry, unban, a tarpit, a
            # jail removed): the detector hears of each, so what it re-arms never differs from the audit trail.
            # Bans lifted through lift() were re-armed just before their actions ran (_ban_ends); others now.
            target = fields.get(R.F_SRC_NET) or fields[R.F_SRC]  # a network ban: every source inside
            if target not in self._rearmed:
                self.rearm.queue(target)
                self.rearm.flush()
        prio = R.PRIORITY_WARNING if event in (R.Event.BAN, R.Event.FAILED) else (
            R.PRIORITY_NOTICE if event in (R.Event.UNBAN, R.Event.IGNORED) else R.PRIORITY_INFO)
        src = fields.get(R.F_SRC, "")
        if "/" in src:  # a network ban: PS_SRC stays an address, PS_SRC_NET names the network
            fields = {**fields, **src_fields(src)}
        rec = {R.F_MESSAGE: message, R.F_MSGID: R.MESSAGE_IDS[event], R.F_PRIORITY: str(prio),
               R.F_IDENT: R.RESPONDER_IDENTIFIER, R.F_EVENT: event.value,
               R.F_TIME: f"{time.time():.6f}", **{k: v for k, v in fields.items() if v != ""}}
        self.metrics.on_record(rec)
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

    def _ban_ends(self, ban: Ban) -> None:
        """A ban is about to be lifted: tell the detector first (docs/responder.md, "A scanner that comes back").
        A probe that arrives before the unban actions have run is still dropped but already a new scan, which
        this loop bans again once the unban is done; none can get through uncounted."""
        self.rearm.queue(ban.ip)
        self.rearm.flush()
        self._rearmed.add(ban.ip)

    def _decision(self, d: Decision) -> None:
        if d.kind == "ban":
            return
        if d.kind == "forged":
            first = self.forgeries.add(writer_of(d.fields, f"jail {d.jail}: {d.reason}"), d.jail, d.ip, d.reason,
                                       time.time())
            if first is not None:
                self._forgery_report(first)
        elif d.kind == "invalid":
            self.report(R.Event.IGNORED, f"jail {d.jail}: {d.reason}", PS_JAIL=d.jail, PS_DETAIL=d.reason)
        else:
            self.report(R.Event.IGNORED, f"jail {d.jail}: {d.ip} not banned: {d.reason}", PS_JAIL=d.jail,
                        PS_SRC=d.ip, PS_DETAIL=d.reason)

    def _forgery_report(self, r: Report) -> None:
        message, fields = describe(r, self.forgeries.interval)
        self.report(R.Event.IGNORED, message, **fields)

    def forgeries_due(self, *, flush: bool = False) -> None:
        now = time.time()
        for r in self.forgeries.flush(now) if flush else self.forgeries.due(now):
            self._forgery_report(r)

    # ------------------------------------------------------------------ setup
    def _never_ban(self) -> NeverBan:
        return NeverBan(own=facts.own_addresses(), gateways=facts.gateways(), resolvers=facts.resolvers())

    def refresh_never_ban(self) -> None:
        """Own addresses, gateways and resolvers read again (after a netlink or resolver-file event)."""
        never = self._never_ban()
        if never.reasons != self.engine.never.reasons:
            log.info("never-ban facts changed: %s", ", ".join(f"{a} ({r})" for a, r in sorted(never.reasons.items())))
            self.engine.never = never
            self.traps.facts_changed()

    def _source_for(self, jail: JailConfig) -> tuple[str, bool]:
        """The source a jail reads ("journal" or "file:PATH") and whether it is the journal."""
        backend = self.opts.backend if self.opts.backend != "auto" else jail.backend
        if backend == "auto":
            backend = "systemd" if self.use_journal else "pyinotify"
        if backend == "systemd":
            return "journal", True
        path = jail.logpath or DETECTOR_JSONL
        return f"file:{path}", False

    def build(self) -> tuple[ResponderConfig, list[JailRuntime], dict[str, list[Action]], list[str]]:
        """The configuration on disk parsed, validated and bound (filters, actions), touching nothing that runs.
        Raises IniError (a ValueError) when jail.conf itself cannot be read."""
        from portsentinel.responder.filter.filters import load_filter

        cfg = load(self.opts.config_dir)
        errors = list(cfg.errors)
        runtimes: list[JailRuntime] = []
        actions: dict[str, list[Action]] = {}
        for jc in cfg.jails:
            try:
                filt = load_filter(self.opts.config_dir / "filter.d", jc.filter, jc.filter_args)
                actions[jc.name] = self.executor.load(jc)
            except ValueError as exc:  # IniError, FilterError and ActionError are ValueErrors
                errors.append(str(exc))
                continue
            source, journal = self._source_for(jc)
            runtimes.append(JailRuntime(jc, filt, Jail(jc), PerMinuteCap(jc.maxbans_per_minute), source, journal))
        return cfg, runtimes, actions, errors

    def load(self) -> None:
        cfg, runtimes, actions, errors = self.build()
        for err in errors:
            log.error("%s (jail left out)", err)
        self._install(cfg, runtimes, actions, errors)

    def _install(self, cfg: ResponderConfig, runtimes: list[JailRuntime], actions: dict[str, list[Action]],
                 errors: list[str]) -> None:
        self.config = cfg
        self.errors = list(errors)
        old = self.engine.jails
        for rt in runtimes:  # an unchanged jail keeps its failure window and counters
            prev = old.get(rt.cfg.name)
            if prev is not None and prev.cfg == rt.cfg:
                rt.jail, rt.cap = prev.jail, prev.cap
                rt.bans_total, rt.ignored_total = prev.bans_total, prev.ignored_total
        self.executor.actions = dict(actions)
        self.engine = Engine(runtimes, self._never_ban(), self.book, self.store)
        self.errors += self.traps.configure({j: a for j, a in self.executor.actions.items() if j in self.engine.jails},
                                            {rt.cfg.name: rt.cfg.ignoreip for rt in runtimes}, self.sel,
                                            {rt.cfg.name: (rt.cfg.ban_prefix_v4, rt.cfg.ban_prefix_v6)
                                             for rt in runtimes})
        from portsentinel.responder.trap.escalation import (
            strikes,  # trap hits counted apart when the trap has its own maxretry
        )

        self.traps.strikes = {j: c for j, tr in self.traps.traps.items() if j in self.engine.jails
                              and (c := strikes(tr.settings, self.engine.jails[j].cfg)) is not None}
        self._open_sources(runtimes)

    def _open_sources(self, runtimes: list[JailRuntime]) -> None:
        wanted: dict[str, list[JailRuntime]] = {}
        for rt in runtimes:
            wanted.setdefault(rt.source, []).append(rt)
        for name in list(self.sources):
            if name not in wanted:
                self.sel.unregister(self.sources[name])
                self.sources.pop(name).close()
        for name, rts in wanted.items():
            if name in self.sources:
                continue
            if name == "journal":
                from portsentinel.responder.adapters.journal_source import JournalSource

                matches: list[dict[str, str | tuple[str, ...]]] = []
                for rt in rts:
                    # A jail without journalmatch needs every entry: an empty group matches all.
                    # …and the jail's trusted _UIDs pushed down: journald never hands over other users' forgeries.
                    matches.extend(pushed_down(getattr(rt.matcher, "journalmatch", []) or [{}], rt.cfg))
                src: Source = JournalSource(matches, name=name)
            else:
                from portsentinel.responder.adapters.file_source import FileSource

                path = name.split(":", 1)[1]
                uids = rts[0].cfg.trusted_uids
                src = FileSource(path, kind="jsonl" if path.endswith(".jsonl") else "text",
                                 expected_uid=uids[0] if uids else None, name=name)
            src.seek(self.store.cursor(name))
            self.sources[name] = src
            if src.fileno() >= 0:
                self.sel.register(src, selectors.EVENT_READ, ("source", name))

    def restore(self) -> None:
        """Bans from the database re-applied, the expired ones and the pending unbans lifted (responder.core.keeper)."""
        self.keeper.restore(self.engine.jails)

    def apply_bans(self, bans: list[Ban], cursors: dict[str, str] | None = None) -> None:
        self.keeper.apply(bans, cursors)

    def lift(self, bans: list[Ban], reason: str) -> None:
        if not reason.startswith("covered by"):  # (a covered ban goes on as part of the network ban)
            for b in bans:
                self._ban_ends(b)
        self.keeper.lift(bans, reason)

    def start(self) -> None:
        self.load()
        self.host = HostWatch(self.sel)
        self.refresh_never_ban()  # what changed between load() and the watches being set up
        self.control = ControlServer(self.opts.socket, self.control_request, self.opts.control_group)
        self.sel.register(self.control, selectors.EVENT_READ, ("control", ""))
        from portsentinel.common.wake import WakeSocket

        self.wake = WakeSocket(self.opts.wake)
        self.sel.register(self.wake, selectors.EVENT_READ, ("wake", ""))
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        signal.set_wakeup_fd(self._wake_w.fileno(), warn_on_full_buffer=False)
        self.sel.register(self._wake_r, selectors.EVENT_READ, ("signal", ""))
        for nl in self.health.open():
            self.sel.register(nl, selectors.EVENT_READ, ("health", ""))
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)
        signal.signal(signal.SIGHUP, self._on_signal)
        try:
            self.exporter = metrics_exporter(self, self.metrics, self.opts.metrics_listen,
                                             self.opts.metrics_textfile, self.opts.metrics_interval)
        except (OSError, ValueError) as exc:
            raise SystemExit(f"portsentinel-responder: {exc}") from exc
        self.restore()
        jails = ", ".join(f"{n} ({rt.source})" for n, rt in self.engine.jails.items()) or "none"
        self.report(R.Event.START, f"portsentinel-responder started: jails {jails}; decisions to "
                                   f"{self.decisions.name}", PS_DETAIL=f"errors={len(self.errors)}")
        from portsentinel.common.sdnotify import notify

        notify("READY=1", f"STATUS=jails: {jails}")

    def _on_signal(self, signum: int, _frame: object) -> None:
        if signum == signal.SIGHUP:
            self._hup = True
        else:
            self._stop = True

    # ------------------------------------------------------------------ work
    def pump(self, name: str, *, settle: float = 0.0) -> int:
        """Read what the source has; with ``settle`` keep looking that many seconds while nothing came yet."""
        src = self.sources.get(name)
        if src is None:
            return 0
        if self.host.check():  # a change the kernel reported before these entries were read counts for them
            self.refresh_never_ban()
        src.process()
        deadline = time.monotonic() + settle
        total = 0
        while True:
            entries = src.read(1024)
            if entries:
                total += len(entries)
                self._apply(name, entries)
                if len(entries) >= 1024:
                    continue
                break
            if total or time.monotonic() >= deadline:
                break
            time.sleep(0.0001)
        return total

    def _apply(self, source: str, entries: list[Any]) -> None:
        now = time.time()
        bans: list[Ban] = []
        for e in entries:
            if e.error:
                self.report(R.Event.IGNORED, f"unreadable entry in {source}: {e.error}", PS_DETAIL=e.error[:500])
                continue
            try:
                decisions = self.engine.entry(source, e, now)
            except Exception as exc:  # noqa: BLE001 - one bad entry is logged and skipped, never a crash loop
                log.exception("entry skipped: %s", e)
                what = (e.line or repr(e.fields))[:500]
                self.report(R.Event.FAILED, f"entry in {source} skipped: {type(exc).__name__}: {exc}: {what}",
                            PS_DETAIL=f"entry={what}", PS_STDERR=f"{type(exc).__name__}: {exc}"[:2000])
                continue
            for d in decisions:
                if d.kind == "ban" and d.ban is not None:
                    self._lift_covered(d)
                    bans.append(d.ban)
                    self.metrics.ban_from(d.ban, e.fields)
                else:
                    self._decision(d)
        self.metrics.entries(source, entries[-1].fields, len(entries), now)
        self.apply_bans(bans, {source: entries[-1].cursor})

    def _lift_covered(self, d: Decision) -> None:
        """Before a network ban: lift the bans of the same jail inside it (it covers them; nft interval sets
        refuse overlapping elements)."""
        if d.replaces:
            self.lift(list(d.replaces), f"covered by {d.ip}")

    def expire(self) -> None:
        self.lift(self.book.due(time.time()), "expired")

    # ------------------------------------------------------------------ kernel trap (docs/kernel-trap.md)
    def trap_events(self, group: int) -> None:
        """Kernel bans reported by NFLOG: each one logged, then counted by its jail (which may escalate)."""
        from portsentinel.responder.trap.escalation import escalate

        bans: list[Ban] = []
        for jail, hit in self.traps.read(group):
            tarpit = self.traps.traps[jail].settings.tarpit if jail in self.traps.traps else 0
            self.report(R.Event.BAN, f"jail {jail}: kernel trap banned {hit.ip} for {tarpit}s ({hit.proto} port "
                                     f"{hit.port})", PS_JAIL=jail, PS_SRC=hit.ip, PS_ACTION="kernel-trap",
                        PS_BANTIME=str(tarpit), PS_PROTO=hit.proto, PS_PORT=str(hit.port),
                        PS_DETAIL=f"kernel_time={hit.time:.6f}")
            d = escalate(self.engine, jail, hit, time.time(), self.traps.strikes.get(jail))
            if d is not None and d.kind == "ban" and d.ban is not None:
                self._lift_covered(d)
                bans.append(d.ban)
            elif d is not None:
                self._decision(d)
        if bans:
            self.apply_bans(bans)

    def trap_tick(self) -> None:
        """Listening ports and never-ban facts into the trap's sets; tarpits that ran out, logged."""
        self.traps.tick()
        for jail, hit in self.traps.expired(time.time()):
            if self.book.covering(jail, hit.ip) is None:  # nor a network that holds it
                self.report(R.Event.UNBAN, f"jail {jail}: kernel trap tarpit of {hit.ip} expired",
                            PS_JAIL=jail, PS_SRC=hit.ip, PS_ACTION="kernel-trap", PS_DETAIL="expired")

    def timeout(self) -> float:
        nxt = self.book.next_expiry()
        t = 5.0 if nxt is None else max(0.0, min(5.0, nxt - time.time()))
        if self._watchdog:
            t = min(t, max(0.0, self._next_ping - time.monotonic()))
        r = self.executor.next_retry()
        if r is not None:
            t = min(t, max(0.0, r - time.monotonic()))
        u = self.pending.next_due()
        if u is not None:
            t = min(t, max(0.0, u - time.time()))
        t = min(t, max(0.0, self.health.next_due() - time.monotonic()))
        sync, tarpit = self.traps.next_due(), self.traps.tarpit.next_expiry()  # kernel trap timers
        if sync is not None:
            t = min(t, max(0.0, sync - time.monotonic()))
        if tarpit is not None:
            t = min(t, max(0.0, tarpit - time.time()))
        forged = self.forgeries.next_due()
        if forged is not None:
            t = min(t, max(0.0, forged - time.time()))
        if self.rearm.pending:  # the detector's queue was full: try again soon
            t = min(t, 0.005)
        return t

    def run(self) -> None:
        while not self._stop:
            for key, _ in self.sel.select(self.timeout()):
                kind, name = key.data
                if kind == "source":
                    self.pump(name)
                elif kind == "wake":
                    self.wake.drain()
                    for sname in list(self.sources):
                        self.pump(sname, settle=0.02 if sname == "journal" else 0.0)
                elif kind == "trap":
                    self.trap_events(int(name))
                elif kind == "control":
                    self.control.serve_one()
                elif kind == "host":
                    if self.host.check():
                        self.refresh_never_ban()
                elif kind == "health":
                    self.health.readable(key.fileobj)
                else:
                    try:
                        while self._wake_r.recv(64):
                            pass
                    except BlockingIOError:
                        pass
            if self._hup:
                self.reload()
            self.expire()
            self.forgeries_due()
            self.keeper.unban_due()
            self.executor.retry_due()
            self.trap_tick()
            self.decisions.flush()  # one fdatasync for what this turn decided (JSON lines only)
            self.rearm.flush()
            self.health.run(self.engine.jails)
            self._rearmed.clear()
            if self.exporter is not None:
                self.exporter.tick(time.monotonic())
            if self._watchdog and time.monotonic() >= self._next_ping:
                from portsentinel.common.sdnotify import notify

                notify("WATCHDOG=1")
                self._next_ping = time.monotonic() + self._watchdog
        self.shutdown()

    def reload(self) -> dict[str, Any]:
        """The new configuration is built and checked in full first; any error refuses the reload and nothing
        running changes. Else every ban in force stays, moved to the jails' new actions (responder.config.reload)."""
        self._hup = False
        try:
            cfg, runtimes, actions, errors = self.build()
        except (ValueError, OSError) as exc:
            errors = [str(exc)]
        if errors:
            msg = f"reload refused, nothing changed ({len(errors)} error(s)): " + "; ".join(errors)
            self.report(R.Event.FAILED, msg[:4000], PS_DETAIL="reload")
            return {"ok": False, "error": msg, "errors": errors}
        p = plan(self.executor.actions, actions)
        self.keeper.move(p, actions, {rt.cfg.name for rt in runtimes})
        self._install(cfg, runtimes, actions, [])
        self.report(R.Event.START, "configuration reloaded: " + p.describe(), PS_DETAIL="reloaded")
        return {"ok": True, "errors": self.errors, "changes": p.as_dict()}

    def shutdown(self) -> None:
        from portsentinel.common.sdnotify import notify

        notify("STOPPING=1")
        for jail in list(self.engine.jails):
            self.executor.stop(jail)
        self.traps.stop()
        self.forgeries_due(flush=True)
        self.report(R.Event.STOP,
                    f"portsentinel-responder stopping: {len(self.book)} ban(s) kept in {self.store.path}")
        for src in self.sources.values():
            src.close()
        self.control.close()
        self.wake.close()
        self.host.close()
        self.rearm.flush()
        self.rearm.close()
        self.health.close()
        self.store.close()
        if self.exporter is not None:  # after the stop record: the textfile's last write counts everything
            self.exporter.close()
        self.decisions.close()

    # ------------------------------------------------------------------ control
    def status(self, jail: str | None = None) -> dict[str, Any]:
        out = views.status(self.engine, self.book, self.traps, self.health, self.pending, errors=self.errors,
                           started=self.started, jail=jail)
        if out["ok"]:
            out.update(forged=self.forgeries.total, never_ban=self.engine.never.reasons,
                       facts_updated=round(self.host.updated, 3))
        return out

    def banned(self) -> dict[str, Any]:
        return views.banned(self.book, self.traps)

    def control_request(self, req: dict[str, Any]) -> dict[str, Any]:
        cmd = req.get("cmd")
        try:
            if cmd == "status":
                return self.status(req.get("jail") or None)
            if cmd == "banned":
                return self.banned()
            if cmd == "ban":
                d = self.engine.manual_ban(str(req.get("jail", "")), str(req.get("ip", "")), time.time())
                if d.kind == "ban" and d.ban is not None:
                    self._lift_covered(d)
                    self.apply_bans([d.ban])
                    return {"ok": True, "banned": d.ip, "jail": d.jail}
                self._decision(d)
                return {"ok": False, "error": f"{d.ip} not banned: {d.reason}"}
            if cmd == "unban":
                ip = None if req.get("all") else str(req.get("ip", ""))
                lifted = self.engine.unban(ip)
                self.lift(lifted, "manual")
                done = [{"jail": b.jail, "ip": b.ip} for b in lifted]
                for jail, addr in self.traps.unban(None if ip is None else R.canonical_address(ip)):
                    if {"jail": jail, "ip": addr} not in done:
                        done.append({"jail": jail, "ip": addr})
                        self.report(R.Event.UNBAN, f"jail {jail}: kernel trap tarpit of {addr} lifted (manual)",
                                    PS_JAIL=jail, PS_SRC=addr, PS_ACTION="kernel-trap", PS_DETAIL="manual")
                return {"ok": True, "unbanned": done}
            if cmd == "reload":
                return self.reload()
        except (KeyError, ValueError) as exc:
            return {"ok": False, "error": str(exc).strip("'\"")}
        return {"ok": False, "error": f"unknown command {cmd!r}"}
