"""Keeps the bans: new ones committed then applied, unbans pending until every action lifted them, bans
restored at start and re-applied when the firewall lost them. The one place that orders store writes and actions.

Order of effects: a ban and the cursor of the entry that made it are committed in one transaction, then the
actions run (bans that the kernel lifts on its own, set elements with a timeout, go in force first: see
Keeper.apply); an unban is committed as pending, then its actions run, and the pending row goes only when all of
them succeeded (responder.core.unbans retries it, and a restart runs it again). Actions are idempotent, so a crash
at any step leaves nothing doubled and nothing in force that nothing will lift.

``PORTSENTINEL_TEST_CRASH=POINT`` (tests only, docs/testing.md) makes the process kill itself with SIGKILL at
one step: ``ban-committed``, ``ban-applied``, ``unban-committed``, ``unban-applied``.
"""

from __future__ import annotations

import gc
import logging
import os
import signal
import time
from collections.abc import Callable, Collection

from portsentinel import record as R
from portsentinel.responder.actions.action import Action
from portsentinel.responder.actions.executor import Executor
from portsentinel.responder.actions.restore import CHUNK, Restorer, Row
from portsentinel.responder.adapters.store import Store, bans_of_rows
from portsentinel.responder.config.reload import Plan
from portsentinel.responder.core.bans import FOREVER, Ban, BanBook, src_fields
from portsentinel.responder.core.share import record_fields
from portsentinel.responder.core.unbans import PendingUnbans

log = logging.getLogger("portsentinel.responder")


def _by_jail(rows: list[Row]) -> dict[str, list[Row]]:
    out: dict[str, list[Row]] = {}
    for r in rows:
        group = out.get(r[0])
        if group is None:
            out[r[0]] = [r]
        else:
            group.append(r)
    return out

#: A backlog's bans in force wait for their rows (Keeper.apply with ``more``) up to this many bans...
HOLD_BANS = 131_072
#: ... or this many seconds since the first of them.
HOLD_SECONDS = 5.0


class Keeper:
    def __init__(self, store: Store, book: BanBook, executor: Executor, report: Callable[..., None],
                 clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.book = book
        self.executor = executor
        self.report = report
        #: The wall clock (the scenario tests pass the time their records carry: tests/scenarios).
        self.clock = clock
        self.pending = PendingUnbans()
        #: Parts of the batch being decided whose set elements are being applied (apply_early), each with the
        #: function that waits for them; with a backlog, the parts of the batches decided before it too.
        self._early: list[tuple[list[Ban], Callable[[], list[tuple[Ban, list[str]]]]]] = []
        #: The cursors of the batches whose early bans wait to be committed (apply with ``more``), the number of
        #: those bans, and since when (monotonic seconds) the first of them waits.
        self._held: dict[str, str] = {}
        self._held_bans = 0
        self._held_since = 0.0

    def restore(self, jails: Collection[str], protected: Callable[[Ban], str | None] = lambda b: None,
                screen: Callable[[str, list[str]], Collection[str] | None] | None = None) -> None:
        """Bans from the database: the others re-applied first, then the expired ones moved to the pending unbans
        in one statement and lifted (after, as the move writes a page or three per row: 0.3-0.8 s for 10,000 rows
        scattered among 1,000,000), the ones ``protected`` names a reason for (an address that became never-ban
        while stopped; ``screen``, given a jail and a chunk's addresses, names those ``protected`` must be asked
        about, None for all: the others it passes for certain) lifted, never re-applied; unbans that were pending
        when the responder stopped (or died) run again. The store is only changed by the moves to the pending
        unbans, so a crash during the restore leaves it to the next start.

        In force first: the rows' set elements (plain set actions: responder.actions.restore) go in chunked nft
        transactions committed by a worker while the next rows are read, before any Ban is made; then the rows
        become bans for the ban book and for the jails' other actions. The garbage collector is paused meanwhile
        (1,000,000 objects that live on: the collector would pass over them again and again, ~2/3 of the time),
        and the bans are frozen out of its later passes (gc.freeze)."""
        now = self.clock()
        for jail in jails:
            self.executor.start(jail, now=now)
        shielded: dict[str, list[Ban]] = {}
        kept = 0
        restorer = Restorer(self.executor, jails, now)
        collecting = gc.isenabled()
        gc.disable()
        infos: dict[str, dict[str, str]] = {}

        def ban_of(row: Row) -> Ban:
            return bans_of_rows([row], infos)[0]

        try:
            names = set(jails)
            live: list[list[Row]] = []
            for rows in self.store.ban_rows(CHUNK // 4):
                fresh = [r for r in rows if r[0] in names and not (r[3] <= now and r[3] != FOREVER)]
                if len(fresh) < len(rows):  # expired while stopped (Store.expire below), or its jail is gone
                    kept += sum(1 for r in rows if r[0] not in names)  # (a broken jail: kept, nothing to run)
                for jail, jrows in _by_jail(fresh).items():
                    asked = None if screen is None else screen(jail, [r[1] for r in jrows])
                    barred: set[str] = set()
                    for r in jrows if asked is None else [r for r in jrows if r[1] in asked] if asked else []:
                        b = ban_of(r)
                        why = protected(b)
                        if why is not None:
                            shielded.setdefault(why, []).append(b)
                            barred.add(r[1])
                    if barred:
                        jrows = [r for r in jrows if r[1] not in barred]
                    restorer.add_rows(jail, jrows, ban_of)
                    live.append(jrows)
            restorer.submit_open()  # every element on its way to the kernel: the bans follow
            keep: list[Ban] = []
            for i, jrows in enumerate(live):  # (while the kernel takes the last chunks)
                keep += bans_of_rows(jrows, infos)
                live[i] = []  # (each chunk's rows go once they are bans)
            restorer.add_rest(keep)
            self.book.add_many(keep)
        except BaseException:
            restorer.abort()
            raise
        else:
            restorer.finish()
        finally:
            if collecting:
                gc.enable()
        gc.freeze()
        expired = self.store.expire(jails, now, "expired while stopped")
        pending = [(b, why, since) for b, why, since in self.store.unbans() if b.jail in jails]
        earlier = max(0, len(pending) - expired)  # pending before this start (the expired ones are pending now)
        lifted = sum(len(v) for v in shielded.values())
        restored = len(keep) + kept
        if restored or expired or pending or lifted:
            self.report(R.Event.BAN, f"restored {restored} ban(s) from {self.store.path}; "
                                     f"{expired} expired while stopped; {lifted} now never banned; "
                                     f"{earlier} unban(s) pending",
                        PS_ACTION="restore",
                        PS_DETAIL=f"restored={restored} expired={expired} protected={lifted} "
                                  f"pending={earlier} elements={restorer.elements} "
                                  f"transactions={restorer.transactions}")
        for b, why, since in pending:
            self.pending.add(b, why, now, since=since)
        for why, bans in shielded.items():
            self.lift(bans, f"never banned now: {why}")
        self.unban_due()

    def _crash_point(self, point: str) -> None:
        """Fault injection for the kill -9 tests (docs/testing.md); nothing unless the variable names ``point``."""
        if os.environ.get("PORTSENTINEL_TEST_CRASH") == point:
            os.kill(os.getpid(), signal.SIGKILL)

    def apply(self, bans: list[Ban], cursors: dict[str, str] | None = None, *, more: bool = False) -> None:
        """Commit new bans (and the cursor that made them) first, then run their actions; bans that the kernel
        lifts on its own (Executor.kernel_expires: set elements with a timeout, the nftables action's) are put
        in force first and committed right after, their records written once both are done.

        The second order keeps the first's promise: a crash between the two leaves set elements that expire
        by themselves, and neither the bans nor the cursor committed, so the entries are read and decided again
        at the next start (adding an element that is already there changes nothing).

        ``more``: another batch of the same source waits to be read (a backlog: a fleet catch-up, a flood). Such
        bans go in force now and their rows, the cursor and their records wait for a later batch's, so that the
        backlog's bans are in force before the first of those rows is written (:meth:`settle`: at the end of
        the backlog, before any other step of the keeper, or at :data:`HOLD_BANS` bans or :data:`HOLD_SECONDS`)."""
        if self._early or more:  # the batch's first parts are in force already (apply_early), or a backlog
            if self.apply_early(bans):
                bans = []
            if more and not bans and not self._hold_full():
                if cursors:
                    if not self._early and not self._held:
                        self._held_since = time.monotonic()
                    self._held.update(cursors)
                return
            self.settle(None if bans else cursors)
            if not bans:
                return
        self._cancel_unbans(bans)
        if bans and self.executor.kernel_expires(bans):
            self._commit_applied(bans, self.executor.ban_many(bans, now=self.clock(), report=False), cursors)
            return
        self.store.commit(added=bans, cursors=cursors)
        if bans:
            self._crash_point("ban-committed")
            self.executor.ban_many(bans, now=self.clock())
            self._crash_point("ban-applied")

    def apply_early(self, bans: list[Ban]) -> bool:
        """A part of a batch being decided: when the kernel lifts its bans on its own (as in :meth:`apply`),
        their set elements go in force now, committed by the executor's worker thread while the next part is
        decided, and True; the batch's :meth:`apply` (or any other step first: :meth:`settle`) then commits them
        and writes their records. False (nothing done) for other bans, or none."""
        if not bans or not self.executor.kernel_expires(bans):
            return False
        self._cancel_unbans(bans)
        if not self._early and not self._held:
            self._held_since = time.monotonic()
        self._early.append((bans, self.executor.ban_many_later(bans, now=self.clock())))
        self._held_bans += len(bans)
        return True

    def _hold_full(self) -> bool:
        """Whether the bans waiting for their rows (a backlog's, :meth:`apply` with ``more``) must be settled
        now: :data:`HOLD_BANS` of them, or the first waiting for :data:`HOLD_SECONDS`."""
        return (self._held_bans >= HOLD_BANS
                or (bool(self._early or self._held) and time.monotonic() - self._held_since >= HOLD_SECONDS))

    def settle(self, cursors: dict[str, str] | None = None) -> None:
        """The early bans (apply_early): their transactions waited for, then committed with the cursors of the
        batches decided whole (``cursors``: the batch's end, when they are the whole batch) and their records
        written. Nothing when there are none."""
        held = {**self._held, **cursors} if cursors and self._held else (cursors or self._held)
        if not self._early and not held:
            return
        early, self._early, self._held, self._held_bans = self._early, [], {}, 0
        bans: list[Ban] = []
        applied: list[tuple[Ban, list[str]]] = []
        for part, wait in early:
            bans += part
            applied += wait()
        self._commit_applied(bans, applied, held or None)

    def _cancel_unbans(self, bans: list[Ban]) -> None:
        """A pending unban must not lift a new ban (none pending, the usual case: no look-up per ban)."""
        if self.pending.pending:
            for b in bans:
                self.pending.cancel(b.jail, b.ip)

    def _commit_applied(self, bans: list[Ban], applied: list[tuple[Ban, list[str]]],
                        cursors: dict[str, str] | None) -> None:
        """Bans already in force (set elements the kernel lifts on its own) committed, then their records."""
        if bans:
            self._crash_point("ban-applied")
        self.store.commit(added=bans, cursors=cursors)
        if bans:
            self._crash_point("ban-committed")
            self.executor.report_applied(applied)

    def lift(self, bans: list[Ban], reason: str) -> None:
        """Unban: pending in the store first, then the actions; pending until every one of them succeeded."""
        self.settle()  # (a ban of the batch may be among them: its row and its element first)
        if not bans:
            return
        now = self.clock()
        self.store.commit(unbanning=[(b, reason) for b in bans], now=now)
        self._crash_point("unban-committed")
        for b in bans:
            self.pending.add(b, reason, now)
        self.unban_due()

    def unban_due(self) -> None:
        """Run the pending unbans whose time has come (set elements of many in one nft batch:
        Executor.lift_many), then drop the rows of those that all actions lifted, in one transaction."""
        self.settle()
        due = list(self.pending.due(self.clock()))
        if not due:
            return
        results = self.executor.lift_many([p.ban for p in due], now=self.clock(), attempts=[p.attempts for p in due])
        lifted = []
        for p, (done, failed) in zip(due, results, strict=True):
            b = p.ban
            if failed:
                delay = self.pending.failed(p, self.clock())
                log.warning("jail %s: unban of %s pending (%s failed); next try in %gs", b.jail, b.ip,
                            ", ".join(failed), delay)
                continue
            lifted.append((p, done))
        if not lifted:
            return
        self._crash_point("unban-applied")
        self.store.commit(unbanned=[(p.ban.jail, p.ban.ip) for p, _ in lifted])
        for p, done in lifted:
            b = p.ban
            self.pending.done(p)
            retried = f", after {p.attempts} retr{'y' if p.attempts == 1 else 'ies'}" if p.attempts else ""
            self.report(R.Event.UNBAN, f"jail {b.jail}: unbanned {b.ip} ({p.reason}) by "
                                       f"{', '.join(done) or 'no action'}{retried}",
                        PS_JAIL=b.jail, **src_fields(b.ip, b.info), PS_ACTION=",".join(done), PS_DETAIL=p.reason,
                        **record_fields(b))

    # ------------------------------------------------------------------ reload
    def move(self, plan: Plan, actions: dict[str, list[Action]], jails: Collection[str]) -> None:
        """Carry out a reload plan: a removed jail's bans are lifted and its actions stopped; a changed jail's bans
        go to its new actions (an action replaced by one of the same name goes first, as they share kernel
        objects; one simply gone goes after the new ones hold the bans); an added jail gets its bans that the
        store kept while it was absent."""
        self.settle()
        ex = self.executor
        now = self.clock()
        for jail in plan.removed:
            bans = self.book.in_jail(jail)
            for b in bans:
                self.book.remove(b.jail, b.ip)
            self.lift(bans, "jail removed")
            ex.stop(jail)
        for jail, ch in plan.changed.items():
            bans = self.book.in_jail(jail)
            for a in ch.replaced:
                ex.retire(jail, a, bans, now=now)
            ex.actions[jail] = actions[jail]
            ex.start(jail, now=now)
            ex.ban_many(bans, now=now, restoring=True, only={a.name for a in ch.fresh})
            for a in ch.gone:
                ex.retire(jail, a, bans, now=now)
        back = [b for b in self.store.bans() if b.jail in plan.added and b.jail in jails
                and (b.expires == FOREVER or b.expires > now)]
        for jail in plan.added:
            ex.actions[jail] = actions[jail]
            ex.start(jail, now=now)
        for b in back:
            self.book.add(b)
        ex.ban_many(back, now=now, restoring=True)
