"""Wiring: sources → engine → store → actions, in one selector loop, with every decision written back.

Order of effects for a ban: the ban and the source cursor are committed to sqlite in one transaction first,
then the actions run. After a crash the ban is in the database and is re-applied at start (actions are
idempotent), and the entry is never acted on twice. An unban is committed as pending first and stays so until
every action has lifted it (responder.core.keeper). One entry or ban that raises is logged with itself and skipped.
"""

from __future__ import annotations

import gc
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
from portsentinel.common.heap import HeapFreezer
from portsentinel.common.metrics import Exporter
from portsentinel.common.sdnotify import watchdog_interval
from portsentinel.common.systemd import journal_available
from portsentinel.responder import commands, deciding
from portsentinel.responder.actions.action import Action
from portsentinel.responder.actions.executor import Executor
from portsentinel.responder.adapters import facts
from portsentinel.responder.adapters.control import ControlServer
from portsentinel.responder.adapters.decisions import DecisionLog
from portsentinel.responder.adapters.hostwatch import HostWatch
from portsentinel.responder.adapters.rearm import RearmSender
from portsentinel.responder.adapters.store import Store
from portsentinel.responder.config.jailconf import ResponderConfig
from portsentinel.responder.config.reload import plan
from portsentinel.responder.core import shield, views
from portsentinel.responder.core.bans import Ban, BanBook
from portsentinel.responder.core.engine import Decision, Engine, JailRuntime
from portsentinel.responder.core.guard import NeverBan
from portsentinel.responder.core.health import Health
from portsentinel.responder.core.keeper import Keeper
from portsentinel.responder.core.share import record_fields
from portsentinel.responder.core.sources import Source
from portsentinel.responder.loading import Built, build, open_sources
from portsentinel.responder.metrics import ResponderMetrics
from portsentinel.responder.metrics import exporter as metrics_exporter
from portsentinel.responder.records import Reporter
from portsentinel.responder.trap import turn as trap_turn

log = logging.getLogger("portsentinel.responder")

#: Entries read from a source and decided together: their bans are one sqlite transaction and one nft batch per
#: table (the bulk path: a fleet catch-up or a flood of records is applied in a few transactions).
READ_BATCH = 16_384
#: A batch of at least this many entries is decided with the garbage collector paused.
GC_PAUSE_MIN = 256


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
    #: The fleet daemon's wake socket, nudged after each turn that wrote a shared decision (docs/responder.md,
    #: "The fleet"); empty: off.
    fleet_wake: str = paths.FLEET_WAKE_SOCKET
    #: Prometheus metrics (docs/metrics.md): endpoint HOST:PORT and/or node_exporter textfile; both off by default.
    metrics_listen: str = ""
    metrics_textfile: str = ""
    metrics_interval: float = 10.0


class Responder:
    def __init__(self, opts: Options) -> None:
        self.opts = opts
        self.sel = selectors.DefaultSelector()
        self.book = BanBook()
        self.heap = HeapFreezer()
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
        self.metrics = ResponderMetrics()  # fed by report(); exported when the options ask (start())
        self.reporter = Reporter(self.decisions, self.rearm, self.metrics, fleet_wake=opts.fleet_wake)
        self.executor.report_bans = self.reporter.report_applied  # the bulk path's ban records, all at once
        self.forgeries = self.reporter.forgeries
        from portsentinel.responder.adapters.trapkernel import KernelTraps  # kernel trap (docs/kernel-trap.md)

        self.traps = KernelTraps(self.executor.runner, self.report)
        self.engine: Engine = Engine([], NeverBan(), self.book, self.store)
        self.keeper = Keeper(self.store, self.book, self.executor, self.report)
        self.pending = self.keeper.pending
        self.health = Health(self.executor, self.book, self.traps, self.report)
        self.config: ResponderConfig | None = None
        self.host = HostWatch(self.sel, follow=False)  # start() follows the host (netlink, resolver files)
        self._watchdog = watchdog_interval()
        self._next_ping = 0.0
        self.exporter: Exporter | None = None
        self._applying: dict[tuple[str, str], Ban] = {}  # bans being applied, for their records (report())

    @staticmethod
    def _journal_socket() -> bool:
        return journal_available()

    # ------------------------------------------------------------------ records (responder.records)
    def report(self, event: R.Event, message: str, **fields: str) -> None:
        if event is R.Event.BAN and fields.get(R.F_JAIL) and fields.get(R.F_ACTION) != "kernel-trap":
            key = (fields[R.F_JAIL], fields.get(R.F_SRC_NET) or fields.get(R.F_SRC, ""))
            ban = self._applying.get(key) or self.book.get(*key)
            if ban is not None:  # a shared ban, or a remote one (responder.core.share)
                fields = {**record_fields(ban), **fields}
        self.reporter.report(event, message, **fields)

    def forgeries_due(self, *, flush: bool = False) -> None:
        self.reporter.forgeries_due(flush=flush)

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

    def build(self) -> Built:
        """The configuration on disk parsed, validated and bound, touching nothing that runs (responder.loading)."""
        return build(self.opts.config_dir, self.executor, self.opts.backend, self.use_journal)

    def load(self) -> None:
        b = self.build()
        for err in b.errors:
            log.error("%s (jail left out)", err)
        self._install(b.config, b.runtimes, b.actions, b.errors)

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
        open_sources(self.sources, runtimes, self.sel, self.store)

    def restore(self) -> None:
        """Bans from the database re-applied, the expired ones and the pending unbans lifted (responder.core.keeper)."""
        jails, never = self.engine.jails, self.engine.never
        self.keeper.restore(jails, lambda b: shield.why_protected(b, jails, never),
                            lambda jail, ips: shield.suspects(jail, ips, jails, never))

    def apply_bans(self, bans: list[Ban], cursors: dict[str, str] | None = None, *, more: bool = False) -> None:
        self._applying = {(b.jail, b.ip): b for b in bans}
        try:
            self.keeper.apply(bans, cursors, more=more)
        finally:
            self._applying = {}

    def lift(self, bans: list[Ban], reason: str) -> None:
        if not reason.startswith("covered by"):  # (a covered ban goes on as part of the network ban)
            for b in bans:
                self.reporter.ban_ends(b)
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
        self.executor.early.ready()
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
        try:
            while True:
                entries = src.read(READ_BATCH)
                if entries:
                    total += len(entries)
                    full = len(entries) >= READ_BATCH
                    self._apply(name, entries, more=full)
                    if full:
                        continue
                    break
                if total or time.monotonic() >= deadline:
                    break
                time.sleep(0.0001)
        finally:
            self.keeper.settle()  # (a full batch's bans, when nothing or an error came after it)
        return total

    def _apply(self, source: str, entries: list[Any], *, more: bool = False) -> None:
        """One batch decided and applied; ``more``: another full one follows (a backlog), its bans' rows,
        cursor and records may wait for a later batch's (Keeper.apply)."""
        self.engine.prefetch(source, entries)  # offence counts of the batch at once
        paused = len(entries) >= GC_PAUSE_MIN and gc.isenabled()
        if paused:  # thousands of lasting objects (bans, records), no garbage cycle: no collection pass midway
            gc.disable()
        decided = False
        try:
            deciding.decide(self, source, entries, time.time(), more=more)
            decided = True
        finally:
            if not (decided and more):
                self.keeper.settle()  # (after an exception: the bans in force committed, without the cursor)
            self.engine.end_batch()
            if paused:
                gc.enable()
                self.heap.batch_done()  # the batch's bans: out of later collections' way (common/heap.py)

    def lift_covered(self, d: Decision) -> None:
        """Before a network ban: lift the bans of the same jail inside it (it covers them; nft interval sets
        refuse overlapping elements)."""
        if d.replaces:
            renewed = any(b.ip == d.ip for b in d.replaces)  # the fleet jail renews a remote ban
            self.lift(list(d.replaces), f"covered by {d.ip}" + (" (renewed from the fleet)" if renewed else ""))

    def expire(self) -> None:
        self.lift(self.book.due(time.time()), "expired")

    def timeout(self) -> float:
        nxt = self.book.next_expiry()
        t = 5.0 if nxt is None else max(0.0, min(5.0, nxt - time.time()))
        if self._watchdog:
            t = min(t, max(0.0, self._next_ping - time.monotonic()))
        r = self.executor.next_retry()
        if r is not None:
            t = min(t, max(0.0, r - time.time()))
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
                    self.wake.drain()  # only the detector's (empty) wake-up waits for journald to show its record
                    for sname in list(self.sources):
                        self.pump(sname, settle=0.02 if sname == "journal" and self.wake.plain else 0.0)
                elif kind == "trap":
                    trap_turn.events(self, int(name))
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
            self.executor.retry_due(time.time())
            trap_turn.tick(self)  # kernel trap (docs/kernel-trap.md)
            self.health.run(self.engine.jails)
            self.heap.tick()
            self.reporter.turn_done()  # one fdatasync for what this turn decided (JSON lines only), re-arms sent
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
            b = self.build()
            cfg, runtimes, actions, errors = b.config, b.runtimes, b.actions, b.errors
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
        self.executor.early.close()
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

    # ------------------------------------------------------------------ control (responder.commands)
    def status(self, jail: str | None = None) -> dict[str, Any]:
        return commands.status(self, jail)

    def banned(self) -> dict[str, Any]:
        return views.banned(self.book, self.traps)

    def control_request(self, req: dict[str, Any]) -> dict[str, Any]:
        return commands.handle(self, req)
