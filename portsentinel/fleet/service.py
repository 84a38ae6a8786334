"""portsentinel-fleet's wiring: one asyncio loop, thin adapters around the pure halves (docs/fleet.md).

    decisions (wake-up datagram, journal / file) --publish.from_decision--> store.spool --Sender (puts in flight,
                                  Link.put/delete)--> bucket
    bucket --Link.watch (own push consumer: lists of entries)--> (buffered) applier.entry --lines.to_json_line-->
                                  output (JSON lines + responder wake)
                                  then, in a worker thread, fdatasync --durable--> store.commit_watch (sequence and
                                  remote bans, one transaction)

Every operation this host owes the bucket goes through the sqlite spool and leaves it only when the cluster
acknowledged it, so an unreachable cluster, a stream-leader election or a restart loses nothing. The watch resumes
after the last applied stream sequence. Once a second: expiry, the audit's records, the status file, the watchdog.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import time
from typing import Any

from portsentinel import record as R
from portsentinel.common.heap import HeapFreezer
from portsentinel.common.sdnotify import Notifier
from portsentinel.common.systemd import JournalWriter, journal_available

from . import status as S
from .applier import Applier
from .audit import Audit
from .config import FleetConfig
from .durable import DurableCommits
from .inputs import open_input
from .keys import encode_addr
from .lines import json_lines
from .link import Entry, Link, LinkDown, PushWatch
from .output import RemoteOutput
from .publish import Early, Op, carried, decided_at, from_decision
from .sender import Sender
from .store import Store
from .wakein import DecisionWake

log = logging.getLogger("portsentinel.fleet")

#: Entries are applied in batches of at most this many (or when the watch has caught up): one tight loop over the
#: batch, one write and fdatasync of its lines, one sqlite transaction for its sequence and remote bans.
APPLY_BATCH = 2000
#: After a wake-up that found no new decision yet, read again after these delays (seconds): journald notifies
#: readers up to ~250 ms late, the ticker polls once a second (docs/performance.md, "Fleet").
SETTLE = (0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128)
#: An entry stored this recently is a live update (the per-origin rate cap applies); older ones are catch-up.
LIVE_AGE = 60.0
#: Entries in one applied batch from which what is alive afterwards is frozen (portsentinel.common.heap).
FREEZE_MIN = 500


class FleetService:
    def __init__(self, cfg: FleetConfig) -> None:
        self.cfg = cfg
        self.store = Store(cfg.state, cfg.spool_max)
        self.applier = Applier(cfg)
        self.applier.load(self.store.remote_bans(), time.time())
        self.output = RemoteOutput(cfg.output, cfg.output_size, cfg.responder_wake)
        self.durable = DurableCommits(self.output, self.store)
        self.audit = Audit()
        self.sink: JournalWriter | None = JournalWriter() if journal_available() else None
        self.link = Link(cfg, self._link_event)
        self.sender = Sender(self.link, self.store, self.audit)
        self.input = open_input(cfg.decisions, cfg.responder_uid, self.store.cursor())
        self.wake = DecisionWake(cfg.wake, cfg.responder_uid)
        self.early = Early()
        self.notifier = Notifier()
        self.seq = self.store.last_seq()
        self.watch: PushWatch | None = None
        self.watch_restarts = 0
        #: Entries received and not applied yet (applied by :meth:`flush_applied`), and the last one's sequence.
        self._entries: list[Entry] = []
        self._activity = time.monotonic()
        self._stop = asyncio.Event()
        self._flush_soon = False
        self.heap = HeapFreezer()
        #: Lines applied but not yet written to the output (its write failed: a full disk): written again, first,
        #: at each flush; the watch position is not committed past them until they are (a restart replays them).
        self._unwritten: list[str] = []
        self.output_error: str | None = None

    # ------------------------------------------------------------------ records
    def _emit(self, records: list[R.Record]) -> None:
        for rec in records:
            if self.sink is not None:
                try:
                    self.sink.write(rec)
                    continue
                except OSError as exc:
                    log.error("cannot write to the journal: %s", exc)
            log.info("%s", rec.get(R.F_MESSAGE))

    def _link_event(self, what: str, detail: str) -> None:
        self.audit.event(R.Event.SUMMARY, f"fleet: {what}" + (f" ({detail})" if detail else ""), time.time(),
                         PS_DETAIL=what)
        self.sender.kick()

    # ------------------------------------------------------------------ publishing
    def read_decisions(self) -> int:
        """Read and spool the responder's new shared decisions; returns how many entries were read."""
        now = time.time()
        total = seen = 0
        while True:
            batch = self.input.read()
            if not batch:
                break
            seen += len(batch)
            ops = []
            for fields, _ in batch:
                op = from_decision(fields, self.cfg.host, now, self.cfg.maxtime)
                at = decided_at(fields)
                if op is not None and not self.early.seen(op.key, at):  # not published from a wake-up already
                    if at is not None:
                        self.early.note(op.key, at)  # (nor will its wake-up, should that come after)
                    ops.append(op)
            total += self._spool(ops)
            self.store.set_cursor(batch[-1][1])
        self._spooled(total)
        return seen

    def _spool(self, ops: list[Op]) -> int:
        dropped = self.store.spool((op.key, op.value) for op in ops)
        if dropped:
            self.audit.count("dropped (spool full)", dropped)
        return len(ops)

    def _spooled(self, total: int) -> None:
        if total:
            if not self.link.connected:
                self.sender.spooled_offline += total
                self.audit.count("spooled", total)
            self.sender.send_spooled()  # now: not after the puts in flight are acknowledged
            self.sender.kick()

    def publish_carried(self, payloads: list[bytes]) -> int:
        """The shared decisions a wake-up carried (the responder's, already in its journal): spooled for the
        publisher now, remembered so the journal's copy is not published again. Returns how many."""
        now = time.time()
        ops = []
        for fields in (f for payload in payloads for f in carried(payload)):
            op, at = from_decision(fields, self.cfg.host, now, self.cfg.maxtime), decided_at(fields)
            if op is not None and at is not None and not self.early.seen(op.key, at):
                self.early.note(op.key, at)
                ops.append(op)
        total = self._spool(ops)
        self._spooled(total)
        return total

    def _on_wake(self) -> None:
        payloads = self.wake.drain()
        if payloads and self.publish_carried(payloads):
            # the journal read all the same (its cursor moves on, anything not carried is published), after the
            # puts just started have gone out (nats-py writes them a few loop turns later)
            asyncio.get_running_loop().call_later(SETTLE[0], self._settle, 1)
        else:
            self._settle(0)

    def _settle(self, step: int) -> None:
        """Read now; while nothing is there yet, look again after each of SETTLE's delays (then journald's own
        notification and the ticker's poll remain). The responder wakes us right after writing its record, and
        journald makes the record readable a little later, under load tens of milliseconds."""
        if self.read_decisions() or step >= len(SETTLE):
            return
        asyncio.get_running_loop().call_later(SETTLE[step], self._settle, step + 1)

    # ------------------------------------------------------------------ applying
    def on_entries(self, entries: list[Entry]) -> None:
        """Entries of the watch, in order, as the watch hands them over (one list per read of the connection):
        buffered, and applied in batches of :data:`APPLY_BATCH` or once the watch has caught up."""
        self._activity = time.monotonic()
        if entries[0].seq <= self.seq:  # delivered again after a consumer reset
            entries = [e for e in entries if e.seq > self.seq]
            if not entries:
                return
        last = entries[-1]
        self.seq = last.seq
        self._entries += entries
        if len(self._entries) >= APPLY_BATCH:
            self.flush_applied()
        elif last.pending == 0 and not self._flush_soon:
            # Caught up: flush once the client has handed over what it already received (the loop runs this when
            # the watch's task waits for more), not per entry: a burst of live bans is one write, one fdatasync,
            # one commit and one wake of the responder, so the responder takes it as one batch.
            self._flush_soon = True
            asyncio.get_running_loop().call_soon(self._flush_caught_up)

    def _flush_caught_up(self) -> None:
        self._flush_soon = False
        self.flush_applied()

    def _apply_entries(self) -> list[str]:
        """The buffered entries through the applier, in order, in one loop; their lines for the responder."""
        entries, self._entries = self._entries, []
        now = time.time()
        paused = gc.isenabled()
        if paused:  # the batch makes thousands of lasting objects (bans, index entries) and no garbage cycle: the
            gc.disable()  # collector's passes over them would cost as much as the checks (bench/fleet_apply_bench)
        try:
            lines = self._apply_loop(entries, now)
        finally:
            if paused:
                gc.enable()
                if len(entries) >= FREEZE_MIN:  # a catch-up's bans: out of later collections' way
                    self.heap.batch_done()
        return lines

    def _apply_loop(self, entries: list[Entry], now: float) -> list[str]:
        done = self.applier.apply_many(entries, now, LIVE_AGE)
        for key, exc in done.errors:  # a remote entry never stops the watch (a crash would replay it at every start)
            log.error("fleet: entry %.120r from the bucket skipped: %s: %s", key, type(exc).__name__, exc)
            self.audit.refuse(key.split(".", 1)[0][:64], f"unexpected {type(exc).__name__}")
        for origin, reason in done.refused:
            self.audit.refuse(origin, reason)
        for addr in done.delete_own:
            keys = self.store.own_keys(encode_addr(addr))
            self.store.spool((key, None) for key in keys)
            self.sender.kick()
        unbanned = sum(1 for line in done.lines if line.event != "ban")
        counts = (("applied", len(done.lines) - unbanned), ("unbanned", unbanned), ("expired", done.expired))
        for what, n in counts:
            if n:
                self.audit.count(what, n)
        return json_lines(done.lines, now)

    def flush_applied(self) -> None:
        """The buffered entries applied; their lines written and the responder woken now, the position committed
        once the lines are durable (:class:`.durable.DurableCommits`)."""
        if self._entries:
            self._unwritten += self._apply_entries()
        if self._unwritten:
            try:
                self.output.write_lines(self._unwritten)
            except OSError as exc:
                if self.output_error is None:
                    log.error("fleet: cannot write %s (%s): %d remote bans and unbans held, the watch position "
                              "not committed past them; trying again every second", self.cfg.output, exc,
                              len(self._unwritten))
                self.output_error = str(exc)
                return
            if self.output_error is not None:
                log.warning("fleet: %s written again (%d lines held)", self.cfg.output, len(self._unwritten))
                self.output_error = None
            self._unwritten = []
        self.durable.add(self.seq, self.applier.take_changes())

    async def watcher(self) -> None:
        """Keep a watch running: connect, resume after the last sequence, restart a watch that went blind."""
        hb = self.cfg.heartbeat
        last_progress = (self.seq, time.monotonic())
        while not self._stop.is_set():
            if not await self.link.ensure():
                await self._sleep(1.0)
                continue
            if self.watch is None:
                try:
                    last = await self.link.last_seq()
                    self.flush_applied()  # what the old stream delivered is applied and committed first
                    await self.durable.wait()
                    if last < self.seq:
                        self.audit.event(R.Event.SUMMARY, f"fleet: the bucket's stream ends at {last}, before our "
                                         f"sequence {self.seq}: it was made anew; catching up from scratch",
                                         time.time(), PS_DETAIL="reset")
                        self.store.reset_watch()
                        self.applier = Applier(self.cfg)
                        self.seq = 0
                    self.watch = await self.link.watch(self.seq, self.on_entries)
                except LinkDown as exc:
                    log.debug("watch: %s", exc)
                    await self._sleep(1.0)
                    continue
                self._activity = time.monotonic()
                how = f"resumed after sequence {self.seq}" if self.seq else "catching up from the bucket's start"
                self.audit.event(R.Event.SUMMARY, f"fleet: watch {how}", time.time(), PS_DETAIL="watch")
            await self._sleep(hb)
            if self.watch is None or time.monotonic() - self._activity < 2 * hb:
                continue
            healthy = self.link.connected and await self.watch.healthy(hb)
            stalled = healthy and self.watch.pending > 0 and last_progress[0] == self.seq
            last_progress = (self.seq, time.monotonic())
            if healthy and not stalled:
                self._activity = time.monotonic()
                continue
            if not self.link.connected:
                continue  # nats-py reconnects; the check runs again then
            self.watch_restarts += 1
            self.audit.event(R.Event.SUMMARY, f"fleet: watcher blind for {2 * hb:.0f}s "
                             f"({'stalled' if stalled else 'consumer gone'}); restarted after sequence {self.seq}",
                             time.time(), PS_DETAIL="watch-restart")
            await self.watch.stop()
            self.watch = None

    async def _sleep(self, seconds: float) -> None:
        try:
            await asyncio.wait_for(self._stop.wait(), seconds)
        except TimeoutError:
            pass

    # ------------------------------------------------------------------ housekeeping
    def status(self) -> dict[str, Any]:
        lag = self.watch.pending if self.watch is not None else 0
        return {"time": time.time(), "host": self.cfg.host, "servers": list(self.cfg.servers),
                "connected": self.link.connected, "server": self.link.server, "last_error": self.link.last_error,
                "last_seq": self.seq, "lag": lag, "watcher": "running" if self.watch else "stopped",
                "watch_restarts": self.watch_restarts, "spool": self.store.spool_size(),
                "spool_dropped": self.store.dropped, "published": self.sender.published,
                "bans_by_origin": dict(self.applier.active), "refused": self.audit.totals["refused"],
                "wake_refused": self.wake.refused, "output_error": self.output_error,
                "output_held": len(self._unwritten)}

    async def ticker(self) -> None:
        while not self._stop.is_set():
            await self._sleep(1.0)
            now = time.time()
            self.read_decisions()  # a poll besides the wake socket (journald's own wake-ups come late)
            self.applier.expire(now)
            self.flush_applied()
            self.heap.tick()
            self._emit(self.audit.due(now))
            try:
                S.write(self.cfg.status, self.status())
            except OSError as exc:
                log.error("cannot write %s: %s", self.cfg.status, exc)
            self.notifier.ping()

    # ------------------------------------------------------------------ run
    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stop.set)
        loop.add_reader(self.wake.fileno(), self._on_wake)
        if self.input.fileno() >= 0:
            loop.add_reader(self.input.fileno(), self.read_decisions)
        self.audit.event(R.Event.START, f"fleet: portsentinel-fleet {self.cfg.host} started; decisions from "
                         f"{self.input.name}, remote bans to {self.cfg.output}; {len(self.applier.bans)} remote "
                         f"ban(s) kept, resuming after sequence {self.seq}", time.time())
        self.read_decisions()
        self._emit(self.audit.due(time.time()))
        self.notifier.ready(f"host {self.cfg.host}")
        tasks = [asyncio.create_task(t) for t in (self.sender.run(self._stop), self.watcher(), self.ticker())]
        await self._stop.wait()
        self.notifier.stopping()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self.watch is not None:
            await self.watch.stop()
        self.flush_applied()
        await self.durable.wait()
        await self.sender.stop()
        await self.link.close()
        self.audit.event(R.Event.STOP, f"fleet: stopped after sequence {self.seq}; {self.store.spool_size()} "
                         "operation(s) left in the spool", time.time())
        self._emit(self.audit.due(time.time(), force=True))
        loop.remove_reader(self.wake.fileno())
        if self.input.fileno() >= 0:
            loop.remove_reader(self.input.fileno())
        self.close()

    def close(self) -> None:
        self.durable.close()
        self.input.close()
        self.wake.close()
        self.output.close()
        self.store.close()
