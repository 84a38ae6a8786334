"""Re-apply the bans restored at start (issue 13 "Speed": 1,000,000 bans in force within seconds of a restart).

For a *plain set action* — its ban is an element of a set whose name depends on the ban's family and kind alone
(``batchset`` naming no ban variable but ``family`` and ``network``: the nftables action) — the bans go straight
into nft transactions as elements with their remaining time: no ban variables, no plan, no template per ban, the
set's name rendered once per family and kind. A transaction is committed once it holds ``CHUNK`` elements (the
kernel takes 1,000,000 elements faster as ten transactions of 100,000 than as one; the first one holds a quarter, so
the kernel starts sooner), by one worker thread while
the caller reads and checks the next rows: libnftables runs with the GIL released (ctypes), so the kernel's work on
one chunk overlaps Python's on the next. The worker lives only during the restore and uses the executor's second
libnftables context (responder.actions.early's, not the caller's: a context is not shared between threads at
once); everything else (reports, the ban book) stays on the caller's thread. Every other action of the jail gets
the bans through Executor.ban_many (its variables and plan per ban). A failing element is reported like a failing
ban, with its address.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

from portsentinel.responder.actions import bulkban
from portsentinel.responder.actions.action import KERNEL_GRACE, Action, SetElement
from portsentinel.responder.actions.executor import Executor
from portsentinel.responder.actions.variables import BanVars
from portsentinel.responder.adapters.nftbatch import CommitResult, NftBatch
from portsentinel.responder.adapters.runner import Runner
from portsentinel.responder.core.bans import FOREVER, Ban, by_jail

#: Elements per nft transaction (measured: 1,000,000 into a hash set as one transaction 6.0 s, as ten of 100,000
#: 3.5 s; docs/performance.md "Restart").
CHUNK = 100_000
#: One ban of each kind, to render a plain action's set names: (IPv6?, network?) -> a sample target.
_SAMPLES = {(False, False): "192.0.2.1", (False, True): "192.0.2.0/24", (True, False): "2001:db8::1",
            (True, True): "2001:db8::/64"}
#: A ban's row in the store: jail, ip, banned_at, expires, count, failures, info (responder.adapters.store).
Row = tuple[str, str, float, float, int, int, str]
#: Variables a plain action's batchset may name besides its configuration values.
_PLAIN_VARS = frozenset({"family", "network"})


def plain(action: Action) -> bool:
    """Whether the action's ban is an element of a set named by the ban's family and kind alone (the bulk path's
    plain set action, whose set names no other ban variable either: one sample ban per kind gives its sets)."""
    return (action.has("actionban") and bulkban.plain(action)
            and set(action.set_vars) - set(action.params) <= _PLAIN_VARS)


@dataclass
class _Plain:
    """One plain set action of a jail: its table and its set per kind (index: 2 * IPv6 + network; None: the
    action handles the family but its batchset gives no single set name, so those bans take the per-ban path;
    "" : the action does not handle the family)."""

    action: Action
    table: str
    sets: list[str | None]


@dataclass
class _Chunk:
    """A transaction being filled, and whose bans it holds (to report a failing element with its ban)."""

    batch: NftBatch
    #: (jail, action, the bans or rows of its elements, the ban of one of them)
    owners: list[tuple[str, Action, Sequence[Any], Callable[[Any], Ban]]] = field(default_factory=list)


class Restorer:
    """Feed it the restored bans (:meth:`add`, any number of times), then :meth:`finish`."""

    def __init__(self, executor: Executor, jails: Collection[str], now: float, *, chunk: int = CHUNK) -> None:
        self.executor = executor
        self.now = now
        self.chunk = chunk
        self.elements = 0
        self.transactions = 0
        self._plain: dict[str, list[_Plain]] = {}
        self._rest: dict[str, set[str]] = {}
        for jail in jails:
            acts = executor.actions.get(jail, [])
            found = [a for a in acts if plain(a)]
            self._rest[jail] = {a.name for a in acts if a not in found and a.has("actionban")}
            self._plain[jail] = [self._sets_of(jail, a) for a in found]
        self._open: dict[str, _Chunk] = {}
        self._results: list[tuple[_Chunk, CommitResult]] = []
        self._queue: queue.Queue[_Chunk | None] = queue.Queue(maxsize=2)
        self._worker: threading.Thread | None = None
        self._error: BaseException | None = None

    def _sets_of(self, jail: str, action: Action) -> _Plain:
        self.executor.ensure_started(jail, action)
        sets: list[str | None] = []
        for (v6, _net), sample in sorted(_SAMPLES.items()):
            if ("inet6" if v6 else "inet") not in action.families:
                sets.append("")
                continue
            try:
                plan = action.plan("actionban", BanVars.parse({"ip": sample, "bantime": 60}))
            except ValueError:
                plan = None  # the per-ban path reports what is wrong, ban by ban
            sets.append(plan.set if isinstance(plan, SetElement) else None)
        return _Plain(action, str(action.params.get("table", "portsentinel")), sets)

    # ------------------------------------------------------------------ feeding
    def add_rows(self, jail: str, rows: list[Row], ban_of: Callable[[Row], Ban]) -> None:
        """The set elements of a jail's restored rows (jail, ip, banned_at, expires, ...) queued for its plain set
        actions, no Ban made (a full transaction goes to the worker); the rows :meth:`add_rest` must still have
        as bans: those of the jail's other actions (``ban_of`` makes a ban of a row the set path cannot take,
        and of one whose element failed, for its report)."""
        if jail not in self._plain or not rows:
            return
        for p in self._plain[jail]:
            self._add_plain(jail, p, [r[1] for r in rows], [r[3] for r in rows], rows, ban_of)
        self._flush_full()

    def add_rest(self, bans: list[Ban]) -> None:
        """The restored bans (as :meth:`add_rows` took their rows) to the jails' other actions (Executor.ban_many)."""
        for jail, jbans in by_jail(bans).items():
            if self._rest.get(jail):
                self.executor.ban_many(jbans, now=self.now, restoring=True, only=self._rest[jail])

    def add(self, bans: list[Ban]) -> None:
        """Re-apply ``bans`` (of any jails; a jail not given at construction is skipped): set elements queued
        (a full transaction goes to the worker), other actions at once through Executor.ban_many."""
        for jail, jbans in by_jail(bans).items():
            if jail not in self._plain:
                continue
            if self._rest[jail]:
                self.executor.ban_many(jbans, now=self.now, restoring=True, only=self._rest[jail])
            for p in self._plain[jail]:
                self._add_plain(jail, p, [b.ip for b in jbans], [b.expires for b in jbans], jbans, lambda b: b)
        self._flush_full()

    def _flush_full(self) -> None:
        """Each full transaction to the worker."""
        for table, ch in list(self._open.items()):
            # the first transaction a quarter of the others: the kernel starts sooner
            if len(ch.batch) >= (self.chunk if self.transactions else self.chunk // 4):
                del self._open[table]
                self._submit(ch)

    def _add_plain(self, jail: str, p: _Plain, addrs: list[str], exps: list[float], owners: Sequence[Any],
                   ban_of: Callable[[Any], Ban]) -> None:
        """The elements of ``addrs`` (ending at ``exps``) for one plain action; ``owners``: the bans or rows they
        come from, ``ban_of`` the ban of one (for the per-ban path and a failure's report)."""
        now = self.now
        ips: list[list[str]] = [[], [], [], []]
        touts: list[list[int | None]] = [[], [], [], []]
        odd: list[int] = []  # the per-ban path: no set name, or an expiry that is not a time (it reports why)
        sets = p.sets
        if not self._all_v4(p, addrs, exps, ips, touts):
            self._sort(p, addrs, exps, ips, touts, odd)
        if odd:
            self.executor.ban_many([ban_of(owners[i]) for i in odd], now=now, restoring=True, only={p.action.name})
        if not any(ips):
            return
        ch = self._open.get(p.table)
        if ch is None:
            ch = self._open[p.table] = _Chunk(NftBatch(self._batch_runner(), table=p.table))
        for kind, name in enumerate(sets):
            if name and ips[kind]:
                ch.batch.add_stored_many(name, ips[kind], touts[kind])
                self.elements += len(ips[kind])
        ch.owners.append((jail, p.action, owners, ban_of))

    def _all_v4(self, p: _Plain, addrs: list[str], exps: list[float], ips: list[list[str]],
                touts: list[list[int | None]]) -> bool:
        """The common case at C speed, one list at a time: every ban an IPv4 address with an end that is a time
        (no ``:`` or ``/`` in the joined addresses; the sum of the expiries finite, none forever, none absurd).
        False (nothing added) when it is not that case."""
        if not p.sets[0] or not addrs:
            return False
        joined = "\n".join(addrs)
        if ":" in joined or "/" in joined:
            return False
        total = sum(exps)
        if total != total or total in (float("inf"), float("-inf")) or FOREVER in exps \
                or not max(exps) - self.now < 10**10:
            return False
        lefts = [round(e - self.now) for e in exps]
        ips[0] = addrs
        touts[0] = [(t if t > 1 else 1) + KERNEL_GRACE for t in lefts]
        return True

    def _sort(self, p: _Plain, addrs: list[str], exps: list[float], ips: list[list[str]],
              touts: list[list[int | None]], odd: list[int]) -> None:
        """Each ban's element to its kind's list (IPv4/IPv6, address/network), one ban at a time; the index of
        each one the set path cannot take to ``odd``."""
        now = self.now
        sets = p.sets
        for i, (ip, exp) in enumerate(zip(addrs, exps, strict=True)):
            kind = (2 if ":" in ip else 0) + ("/" in ip)
            name = sets[kind]
            if name is None:
                odd.append(i)
                continue
            if not name:
                continue  # a family the action does not handle
            if exp == FOREVER:
                ips[kind].append(ip)
                touts[kind].append(None)
                continue
            left = exp - now
            if not left < 10**10:  # NaN, infinity, absurd
                odd.append(i)
                continue
            ips[kind].append(ip)
            touts[kind].append(max(1, round(left)) + KERNEL_GRACE)

    # ------------------------------------------------------------------ committing
    def _batch_runner(self) -> Runner:
        """The worker's runner: the executor's second libnftables context (responder.actions.early), used by one
        thread at a time (a context is not shared between threads at once; the restore ends before any batch)."""
        return self.executor.early.runner()

    def _submit(self, ch: _Chunk) -> None:
        if self._worker is None:
            self._worker = threading.Thread(target=self._work, name="portsentinel-restore", daemon=True)
            self._worker.start()
        self.transactions += 1
        self._queue.put(ch)

    def _work(self) -> None:
        while True:
            ch = self._queue.get()
            if ch is None:
                return
            if self._error is not None:
                continue  # drained, so the caller never waits on a full queue
            try:
                self._results.append((ch, ch.batch.commit()))
            except BaseException as exc:  # noqa: BLE001 - raised again on the caller's thread by finish()
                self._error = exc

    def abort(self) -> None:
        """Stop the worker after what it holds, reporting nothing (the caller is failing with an exception)."""
        self._open.clear()
        if self._worker is not None:
            self._queue.put(None)
            self._worker.join()
            self._worker = None

    def submit_open(self) -> None:
        """The transactions being filled to the worker now (the last rows are read: their elements go in force
        while the caller goes on)."""
        for ch in self._open.values():
            if len(ch.batch):
                self._submit(ch)
        self._open.clear()

    def finish(self) -> None:
        """Commit what is left, wait for the worker, report every element that failed."""
        self.submit_open()
        if self._worker is not None:
            self._queue.put(None)
            self._worker.join()
            self._worker = None
        error, self._error = self._error, None
        if error is not None:
            raise error
        for ch, result in self._results:
            if result.failed:
                self._report(ch, dict(result.failed))
        self._results.clear()

    def _report(self, ch: _Chunk, errors: dict[str, str]) -> None:
        for jail, action, owners, ban_of in ch.owners:
            for owner in owners:
                ban = ban_of(owner)
                err = errors.get(ban.ip)
                if err is not None:
                    self.executor.ban_failed(jail, action, ban, err, self.now)
