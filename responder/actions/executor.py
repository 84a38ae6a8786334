"""Carry out bans: each jail's actions, in order; each action's plan (responder.actions.action) sent to the
runner (commands) or to one nft batch per table (set elements: one transaction for many bans).

A failing command is reported (PS_EVENT=failed with its status and stderr) and retried with back-off
(1, 2, 4, 8, 16 s); it never stops the jail's other actions. ``!try`` commands may fail without that.
The clock is passed in: ``now`` (wall clock) renders the ban variables, ``mono`` (monotonic) schedules retries.
"""

from __future__ import annotations

import heapq
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from portsentinel import record as R
from portsentinel.responder.actions import bulkban
from portsentinel.responder.actions.action import Action, Plan, SetElement, load_action
from portsentinel.responder.actions.early import EarlyCommits
from portsentinel.responder.actions.variables import BanVars, VarError
from portsentinel.responder.adapters.libnft import NftRunner
from portsentinel.responder.adapters.nftbatch import CommitResult, NftBatch
from portsentinel.responder.adapters.runner import Result, Runner, SubprocessRunner
from portsentinel.responder.config.jailconf import JailConfig
from portsentinel.responder.core.bans import BACKOFF, FOREVER, Ban, src_fields

log = logging.getLogger("portsentinel.responder")

Report = Callable[..., None]
#: Ban records of many applied bans at once: (ban, names of the actions that hold it) each.
ReportBans = Callable[[list[tuple[Ban, list[str]]]], None]


@dataclass
class _Planned:
    """The plans of one ban_many: its bans, the set elements queued per table (and whose they are), the actions
    done per ban."""

    bans: list[Ban]
    now: float
    batches: dict[str, NftBatch]
    done: dict[tuple[str, str], list[str]]
    batched: dict[str, list[tuple[Ban, Action]]]


@dataclass(order=True)
class _Retry:
    due: float
    attempt: int = field(compare=False)
    jail: str = field(compare=False)
    action: str = field(compare=False)
    phase: str = field(compare=False)
    ban: Ban | None = field(compare=False, default=None)


class Executor:
    def __init__(self, actions_dir: Path, report: Report, runner: Runner | None = None) -> None:
        self.actions_dir = actions_dir
        self.report = report
        #: When set (the service), the bans a ban_many applied are reported through it in one call.
        self.report_bans: ReportBans | None = None
        self.runner: Runner = runner or SubprocessRunner()
        #: nft batches: in-process libnftables for the real runner (no process start per batch).
        self.nft_runner: Runner = NftRunner(self.runner) if runner is None else self.runner
        self.actions: dict[str, list[Action]] = {}
        self.started: set[tuple[str, str]] = set()
        self._retries: list[_Retry] = []
        self.failures = 0
        #: The worker thread of ban_many_later (started at its first use).
        self.early = EarlyCommits(self.nft_runner, self.runner)

    # -------------------------------------------------------------- configuration
    def load(self, jail: JailConfig) -> list[Action]:
        """The jail's actions, loaded and checked but not installed (raises ActionError naming file:line:key)."""
        loaded = [load_action(self.actions_dir, (ref.name, ref.args), jail.name) for ref in jail.actions]
        return sorted(loaded, key=lambda a: a.order)

    def configure(self, jail: JailConfig) -> None:
        """Load the jail's actions (raises ActionError, a ValueError naming file:line:key)."""
        self.actions[jail.name] = self.load(jail)

    def retire(self, jail: str, action: Action, bans: list[Ban], *, now: float) -> None:
        """Take one action out of a jail (reload): lift its bans where they are its own objects (routes, lines,
        rules; an nft set goes with actionstop anyway), then run its actionstop."""
        if action.batchset is None and action.has("actionunban"):
            for ban in bans:
                res = self._ban_phase(jail, action, "actionunban", ban, now)
                if res is not None:
                    self._report_failed(jail, action, "actionunban", ban, res, "(reload)")
        if (jail, action.name) in self.started and action.has("actionstop"):
            res = self._phase(jail, action, "actionstop")
            if res is not None:
                self._report_failed(jail, action, "actionstop", None, res, "(reload)")
        self.started.discard((jail, action.name))

    def _report_failed(self, jail: str, action: Action, phase: str, ban: Ban | None, res: Result, note: str) -> None:
        self.failures += 1
        what = f"{phase} {ban.ip}" if ban else phase
        self.report(R.Event.FAILED, f"jail {jail}: action {action.name} {what} failed {note} (exit {res.status}): "
                                    f"{res.stderr.strip()[:300]}", PS_JAIL=jail, PS_ACTION=action.name,
                    **(src_fields(ban.ip, ban.info) if ban else {}), PS_STATUS=str(max(res.status, 0)),
                    PS_STDERR=res.stderr.strip()[:2000], PS_DETAIL=f"phase={phase}")

    def reset(self) -> None:
        """Before a reload: stop every jail's actions and forget them."""
        for jail in list(self.actions):
            self.stop(jail)
        self.actions.clear()
        self._retries.clear()

    # -------------------------------------------------------------- running plans
    def send(self, plan: Plan) -> Result | None:
        """Carry out one plan: its commands through the runner (the first failing checked one's Result), or its
        set element as a batch of one. None when all went well."""
        if isinstance(plan, SetElement):
            nb = NftBatch(self.nft_runner, table=plan.table)
            nb.add(plan.set, plan.element, plan.timeout)
            res = nb.commit()
            return None if res.ok else Result((), 1, stderr=res.failed[0][1])
        for step in plan.steps:
            out = self.nft_runner.run(step.argv)  # an `nft WORDS…` command in-process, anything else as is
            if not out.ok:
                if step.check:
                    return out
                log.debug("%s (ignored, !try): %s", step.where, out.stderr.strip())
        return None

    def _phase(self, jail: str, action: Action, phase: str) -> Result | None:
        """Run a phase that takes no ban (start, stop, check)."""
        try:
            plan = action.plan(phase)
        except ValueError as exc:
            return self._unplannable(jail, action, phase, None, exc)
        return self.send(plan)

    def _ban_phase(self, jail: str, action: Action, phase: str, ban: Ban, now: float, *,
                   remaining: bool = False, batch: bool = False) -> Result | None:
        """Run actionban or actionunban of one ban on its own (not batched unless ``batch``)."""
        try:
            plan = action.plan(phase, BanVars.of(ban, now, remaining=remaining), batch=batch)
        except ValueError as exc:
            return self._unplannable(jail, action, phase, ban, exc)
        return self.send(plan)

    def _unplannable(self, jail: str, action: Action, phase: str, ban: Ban | None, exc: ValueError) -> Result:
        self.report(R.Event.FAILED, f"jail {jail}: action {action.name} {phase}: {exc}", PS_JAIL=jail,
                    PS_ACTION=action.name, PS_SRC=ban.ip if ban and "/" not in ban.ip else "",
                    PS_STDERR=str(exc)[:2000])
        return Result((), 2, stderr=str(exc))

    def _failed(self, jail: str, action: Action, phase: str, ban: Ban | None, res: Result, attempt: int,
                now: float) -> None:
        self.failures += 1
        final = attempt >= len(BACKOFF)
        what = f"{phase} {ban.ip}" if ban else phase
        self.report(R.Event.FAILED,
                    f"jail {jail}: action {action.name} {what} failed (exit {res.status})"
                    + (": giving up" if final else f"; retry {attempt + 1} in {BACKOFF[attempt]:g}s")
                    + f": {res.stderr.strip()[:300]}",
                    PS_JAIL=jail, PS_ACTION=action.name, PS_SRC=ban.ip if ban and "/" not in ban.ip else "",
                    PS_STATUS=str(max(res.status, 0)), PS_STDERR=res.stderr.strip()[:2000],
                    PS_DETAIL=f"phase={phase} attempt={attempt + 1}")
        if not final:
            heapq.heappush(self._retries, _Retry(now + BACKOFF[attempt], attempt + 1, jail, action.name, phase, ban))

    def _start_one(self, jail: str, action: Action) -> Result | None:
        """Run the action's actionstart once (remembered on success); the failing Result, else None."""
        res = self._phase(jail, action, "actionstart")
        if res is None:
            self.started.add((jail, action.name))
        return res

    def start(self, jail: str, *, now: float) -> None:
        for action in self.actions.get(jail, []):
            if action.start_on_demand or (jail, action.name) in self.started or not action.has("actionstart"):
                continue
            res = self._start_one(jail, action)
            if res is not None:
                self._failed(jail, action, "actionstart", None, res, 0, now)

    def stop(self, jail: str) -> None:
        for action in reversed(self.actions.get(jail, [])):
            if (jail, action.name) in self.started and action.has("actionstop"):
                res = self._phase(jail, action, "actionstop")
                if res is not None:
                    self.report(R.Event.FAILED, f"jail {jail}: action {action.name} actionstop failed: "
                                                f"{res.stderr.strip()[:300]}", PS_JAIL=jail, PS_ACTION=action.name,
                                PS_STATUS=str(max(res.status, 0)), PS_STDERR=res.stderr.strip()[:2000])
            self.started.discard((jail, action.name))

    def _ensure_started(self, jail: str, action: Action) -> None:
        """Start an on-demand (or failed) action before its first ban; a failure shows in the ban itself."""
        if action.has("actionstart") and (jail, action.name) not in self.started:
            self._start_one(jail, action)

    def kernel_expires(self, bans: list[Ban]) -> bool:
        """Every action of every jail of ``bans`` is a plain set action (nftables, kernel-trap: a set element
        carrying its own timeout) and no ban is for ever: the kernel lifts each of them on its own, with or without
        this process (responder.core.keeper may then apply them before their rows are committed)."""
        jails: set[str] = set()
        for b in bans:
            if b.expires == FOREVER or not math.isfinite(b.expires):
                return False
            jails.add(b.jail)
        for jail in jails:
            actions = [a for a in self.actions.get(jail, []) if a.has("actionban")]
            if not actions or not all(bulkban.plain(a) for a in actions):
                return False
        return True

    def ban_many(self, bans: list[Ban], *, now: float, restoring: bool = False,
                 only: set[str] | None = None, report: bool = True) -> list[tuple[Ban, list[str]]]:
        """Apply bans: every action's plan, set elements in one nft batch per table, commands one by one
        (``only``: just these actions). A jail whose actions are all plain set actions (the nftables action)
        has its elements added straight to the batch (responder.actions.bulkban: no variables or plan per ban).
        A ban that cannot be planned is reported with its address and skipped; it never stops the others.
        Returns each ban with the actions that hold it; unless ``restoring`` (or ``report`` is False: the caller
        reports them later with :meth:`report_applied`), each is also reported as a ban record."""
        if not bans:
            return []
        planned = self._plan_many(bans, now, only, self.nft_runner)
        applied = self._applied(planned, {table: nb.commit() for table, nb in planned.batches.items()})
        if report and not restoring:
            self.report_applied(applied)
        return applied

    def ban_many_later(self, bans: list[Ban], *, now: float) -> Callable[[], list[tuple[Ban, list[str]]]]:
        """:meth:`ban_many` (``report=False``) whose nft transactions run on the worker thread while the caller
        goes on (responder.actions.early); the function returned waits for them and returns what ban_many does."""
        planned = self._plan_many(bans, now, None, self.early.runner())
        pending = {table: self.early.submit(nb) for table, nb in planned.batches.items()}
        return lambda: self._applied(planned, {table: wait() for table, wait in pending.items()})

    def _plan_many(self, bans: list[Ban], now: float, only: set[str] | None, runner: Runner) -> _Planned:
        """Each ban's plans: set elements queued in one batch per table (on ``runner``), commands run now."""
        planned = _Planned(bans, now, {}, {(b.jail, b.ip): [] for b in bans}, {})
        batches, batched = planned.batches, planned.batched
        by_jail: dict[str, list[Ban]] = {}
        for ban in bans:
            by_jail.setdefault(ban.jail, []).append(ban)
        for jail, jbans in by_jail.items():
            actions = [a for a in self.actions.get(jail, []) if a.has("actionban")
                       and (only is None or a.name in only)]
            if not actions:
                continue
            if not all(bulkban.plain(a) for a in actions):
                for ban in jbans:
                    self._ban_one(ban, actions, now, planned, runner)
                continue
            for action in actions:
                self._ensure_started(jail, action)
                table = str(action.params.get("table", "portsentinel"))
                nb = batches.get(table)
                if nb is None:
                    nb = batches[table] = NftBatch(runner, table=table)
                for ban in bulkban.add_elements(action, jbans, now, nb, batched.setdefault(table, [])):
                    self._ban_one(ban, [action], now, planned, runner)
        return planned

    def _applied(self, planned: _Planned, results: dict[str, CommitResult]) -> list[tuple[Ban, list[str]]]:
        """After the batches' commits: each failing element reported (and retried), each ban with the actions
        that hold it."""
        done, now = planned.done, planned.now
        for table, result in results.items():
            errors = dict(result.failed)
            for ban, action in planned.batched.get(table, ()):
                err = errors.get(ban.ip) if errors else None
                if err is not None:
                    self._failed(ban.jail, action, "actionban", ban, Result((), 1, stderr=err), 0, now)
                else:
                    done[(ban.jail, ban.ip)].append(action.name)
        return [(ban, done[(ban.jail, ban.ip)]) for ban in planned.bans
                if ban.expires == FOREVER or math.isfinite(ban.bantime)]  # else reported above as failed

    def report_applied(self, applied: list[tuple[Ban, list[str]]]) -> None:
        """The ban records of bans that :meth:`ban_many` applied (all at once through ``report_bans`` when the
        service set it)."""
        if self.report_bans is not None:
            self.report_bans(applied)
        else:
            for ban, names in applied:
                self._report_ban(ban, names)

    def _ban_one(self, ban: Ban, actions: list[Action], now: float, planned: _Planned, runner: Runner) -> None:
        """One ban's variables and each action's plan: a set element into its table's batch, commands run now."""
        batches, batched, done = planned.batches, planned.batched, planned.done
        try:
            ban_vars = BanVars.of(ban, now, remaining=True)  # validated once, for every action
        except VarError as exc:
            for action in actions:
                self._failed(ban.jail, action, "actionban", ban, Result((), 2, stderr=str(exc)), 0, now)
            return
        for action in actions:
            if ban_vars.family not in action.families:
                continue  # not this action's family
            try:
                self._ensure_started(ban.jail, action)
                plan = action.plan("actionban", ban_vars)
                if isinstance(plan, SetElement):
                    nb = batches.get(plan.table)
                    if nb is None:
                        nb = batches[plan.table] = NftBatch(runner, table=plan.table)
                    nb.add(plan.set, plan.element, plan.timeout)
                    batched.setdefault(plan.table, []).append((ban, action))
                    continue
                res = self.send(plan)
            except Exception as exc:  # noqa: BLE001 - one bad ban is logged and skipped, never a crash loop
                log.exception("jail %s: action %s: ban of %s skipped", ban.jail, action.name, ban.ip)
                res = Result((), 2, stderr=f"{type(exc).__name__}: {exc}")
            if res is None:
                done[(ban.jail, ban.ip)].append(action.name)
            else:
                self._failed(ban.jail, action, "actionban", ban, res, 0, now)

    def ensure_started(self, jail: str, action: Action) -> None:
        """Start an on-demand (or failed) action before its first ban (the restore, responder.actions.restore)."""
        self._ensure_started(jail, action)

    def ban_failed(self, jail: str, action: Action, ban: Ban, stderr: str, now: float) -> None:
        """Report a ban that the action could not apply (a set element nft refused) and retry it with back-off."""
        self._failed(jail, action, "actionban", ban, Result((), 1, stderr=stderr), 0, now)

    def _report_ban(self, ban: Ban, names: list[str]) -> None:
        message, fields = bulkban.ban_record(ban, names)
        self.report(R.Event.BAN, message, **fields)

    def lift(self, ban: Ban, *, now: float, attempt: int = 0) -> tuple[list[str], list[str]]:
        """Run actionunban of every action of the jail (reverse order), each failure reported and none retried
        here (responder.core.unbans retries the whole unban). Returns the names that succeeded and that failed."""
        done: list[str] = []
        failed: list[str] = []
        for action in reversed(self.actions.get(ban.jail, [])):
            if not action.has("actionunban"):
                continue
            try:
                ban_vars = BanVars.of(ban, now)
                if ban_vars.family not in action.families:
                    continue
                res = self.send(action.plan("actionunban", ban_vars))
            except Exception as exc:  # noqa: BLE001 - one bad unban is logged, kept pending, never a crash loop
                log.exception("jail %s: action %s: unban of %s", ban.jail, action.name, ban.ip)
                res = Result((), 2, stderr=f"{type(exc).__name__}: {exc}")
            if res is None:
                done.append(action.name)
            else:
                failed.append(action.name)
                self._report_failed(ban.jail, action, "actionunban", ban, res,
                                    f"(unban stays pending, attempt {attempt + 1})")
        return done, failed

    def lift_many(self, bans: list[Ban], *, now: float, attempts: list[int]) -> list[tuple[list[str], list[str]]]:
        """:meth:`lift` for many bans: a ban of a jail whose every unbanning action is a set action (nftables)
        has its elements deleted in one nft batch per table with the others (one transaction, not one per ban:
        each costs tens of ms on a big interval set); any other ban by :meth:`lift`. Same order as ``bans``."""
        out: list[tuple[list[str], list[str]]] = []
        batches: dict[str, NftBatch] = {}
        queued: list[tuple[int, str, Action, Ban]] = []  # (index in out, table, action, ban)
        for i, ban in enumerate(bans):
            acts = [a for a in reversed(self.actions.get(ban.jail, [])) if a.has("actionunban")]
            if not acts or any(a.batchset is None or "ip" in a.set_vars for a in acts):
                out.append(self.lift(ban, now=now, attempt=attempts[i]))
                continue
            out.append(([], []))
            try:
                ban_vars = BanVars.of(ban, now)
            except VarError:
                out[i] = self.lift(ban, now=now, attempt=attempts[i])  # reports what is wrong
                continue
            for action in acts:
                if ban_vars.family not in action.families:
                    continue
                plan = action.plan("actionban", ban_vars)
                if not isinstance(plan, SetElement):
                    out[i][1].append(action.name)
                    continue
                nb = batches.get(plan.table)
                if nb is None:
                    nb = batches[plan.table] = NftBatch(self.nft_runner, table=plan.table)
                nb.delete(plan.set, plan.element)
                queued.append((i, plan.table, action, ban))
        results = {table: nb.commit() for table, nb in batches.items()}
        for i, table, action, ban in queued:
            err = dict(results[table].failed).get(ban.ip)
            if err is None:
                out[i][0].append(action.name)
            else:
                out[i][1].append(action.name)
                self._report_failed(ban.jail, action, "actionunban", ban, Result((), 1, stderr=err),
                                    f"(unban stays pending, attempt {attempts[i] + 1})")
        return out

    def check(self, jail: str) -> list[Action]:
        """Run ``actioncheck`` of every started action of the jail; the actions whose check failed."""
        broken = []
        for action in self.actions.get(jail, []):
            if (jail, action.name) not in self.started or not action.has("actioncheck"):
                continue
            try:
                res = self._phase(jail, action, "actioncheck")
            except Exception:  # noqa: BLE001 - a check that cannot run counts as broken
                log.exception("jail %s: action %s: actioncheck", jail, action.name)
                res = Result((), 2)
            if res is not None:
                broken.append(action)
        return broken

    # -------------------------------------------------------------- retries
    def next_retry(self) -> float | None:
        """When the next retry is due (wall clock)."""
        return self._retries[0].due if self._retries else None

    def retry_due(self, now: float) -> None:
        while self._retries and self._retries[0].due <= now:
            r = heapq.heappop(self._retries)
            action = next((a for a in self.actions.get(r.jail, []) if a.name == r.action), None)
            if action is None:
                continue
            if r.ban is None:
                res = self._phase(r.jail, action, r.phase)
            else:
                res = self._ban_phase(r.jail, action, r.phase, r.ban, now, remaining=True)
            if res is None:
                if r.phase == "actionstart":
                    self.started.add((r.jail, action.name))
                self.report(R.Event.BAN if r.phase != "actionunban" else R.Event.UNBAN,
                            f"jail {r.jail}: action {action.name} {r.phase} succeeded on retry {r.attempt}",
                            PS_JAIL=r.jail, PS_ACTION=action.name, PS_SRC=r.ban.ip if r.ban else "",
                            PS_DETAIL=f"retry={r.attempt}")
            else:
                self._failed(r.jail, action, r.phase, r.ban, res, r.attempt, now)
