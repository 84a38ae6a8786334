"""Carry out bans: each jail's actions, in order, through a Runner; nft set bans batched into one transaction.

A failing command is reported (PS_EVENT=failed with its status and stderr) and retried with back-off
(1, 2, 4, 8, 16 s); it never stops the jail's other actions. ``!try`` commands may fail without that.
"""

from __future__ import annotations

import heapq
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from portsentinel import record as R
from portsentinel.responder.actions.action import Action, load_action
from portsentinel.responder.actions.render import VarError, validate_vars
from portsentinel.responder.adapters.libnft import NftRunner
from portsentinel.responder.adapters.nftbatch import NftBatch
from portsentinel.responder.adapters.runner import Result, Runner, SubprocessRunner
from portsentinel.responder.config.jailconf import JailConfig
from portsentinel.responder.core.bans import BACKOFF, FOREVER, Ban, src_fields

log = logging.getLogger("portsentinel.responder")

Report = Callable[..., None]
#: Seconds an nft set element outlives the ban's own expiry: the responder lifts the ban first (and tells the
#: detector, docs/responder.md "A scanner that comes back"); the kernel's timeout stays the safety net for a
#: responder that is not running. Without it the kernel and the responder's timer race by a few ms, and probes
#: in between would get through and count as probes of the ban that was ending.
KERNEL_GRACE = 1


@dataclass(order=True)
class _Retry:
    due: float
    attempt: int = field(compare=False)
    jail: str = field(compare=False)
    action: str = field(compare=False)
    phase: str = field(compare=False)
    ban: Ban | None = field(compare=False, default=None)


def ban_vars(ban: Ban, now: float, *, remaining: bool = False) -> dict[str, object]:
    """Template variables of a ban (documented in docs/actions.md)."""
    if ban.expires == FOREVER:
        bantime = -1
    else:
        bantime = max(1, int(round((ban.expires - now) if remaining else ban.bantime)))
    out: dict[str, object] = {"ip": ban.ip, "bantime": bantime, "failures": ban.failures, "time": int(ban.banned_at)}
    port = ban.info.get("port", "")
    if port.isdigit():
        out["port"] = int(port)
    for key in ("proto", "scan", "mode"):
        if ban.info.get(key):
            out[key] = ban.info[key]
    if ban.matches:
        out["matches"] = ban.matches
    return out


class Executor:
    def __init__(self, actions_dir: Path, report: Report, runner: Runner | None = None) -> None:
        self.actions_dir = actions_dir
        self.report = report
        self.runner: Runner = runner or SubprocessRunner()
        #: nft batches: in-process libnftables for the real runner (no process start per batch).
        self.nft_runner: Runner = NftRunner(self.runner) if runner is None else self.runner
        self.actions: dict[str, list[Action]] = {}
        self.started: set[tuple[str, str]] = set()
        self._retries: list[_Retry] = []
        self.failures = 0

    # -------------------------------------------------------------- configuration
    def load(self, jail: JailConfig) -> list[Action]:
        """The jail's actions, loaded and checked but not installed (raises ActionError naming file:line:key)."""
        loaded = [load_action(self.actions_dir, (ref.name, ref.args), jail.name) for ref in jail.actions]
        return sorted(loaded, key=lambda a: a.order)

    def configure(self, jail: JailConfig) -> None:
        """Load the jail's actions (raises ActionError, a ValueError naming file:line:key)."""
        self.actions[jail.name] = self.load(jail)

    def retire(self, jail: str, action: Action, bans: list[Ban]) -> None:
        """Take one action out of a jail (reload): lift its bans where they are its own objects (routes, lines,
        rules; an nft set goes with actionstop anyway), then run its actionstop."""
        if action.batchset is None and action.has("actionunban"):
            now = time.time()
            for ban in bans:
                if action.handles(ban.ip):
                    res = self._run(jail, action, "actionunban", ban, now=now)
                    if res is not None:
                        self._report_failed(jail, action, "actionunban", ban, res, "(reload)")
        if (jail, action.name) in self.started and action.has("actionstop"):
            res = self._run(jail, action, "actionstop", None, now=time.time())
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

    # -------------------------------------------------------------- running
    def _run(self, jail: str, action: Action, phase: str, ban: Ban | None, *, now: float,
             remaining: bool = False) -> Result | None:
        """Run one phase of one action; the first failing checked command's Result, else None."""
        try:
            steps = action.steps(phase, ban_vars(ban, now, remaining=remaining) if ban else None)
        except ValueError as exc:
            self.report(R.Event.FAILED, f"jail {jail}: action {action.name} {phase}: {exc}", PS_JAIL=jail,
                        PS_ACTION=action.name, PS_SRC=ban.ip if ban else "", PS_STDERR=str(exc)[:2000])
            return Result((), 2, stderr=str(exc))
        for step in steps:
            res = self.nft_runner.run(step.argv)  # an `nft WORDS…` command in-process, anything else as is
            if not res.ok:
                if step.check:
                    return res
                log.debug("%s (ignored, !try): %s", step.where, res.stderr.strip())
        return None

    def _failed(self, jail: str, action: Action, phase: str, ban: Ban | None, res: Result, attempt: int) -> None:
        self.failures += 1
        final = attempt >= len(BACKOFF)
        what = f"{phase} {ban.ip}" if ban else phase
        self.report(R.Event.FAILED,
                    f"jail {jail}: action {action.name} {what} failed (exit {res.status})"
                    + (": giving up" if final else f"; retry {attempt + 1} in {BACKOFF[attempt]:g}s")
                    + f": {res.stderr.strip()[:300]}",
                    PS_JAIL=jail, PS_ACTION=action.name, PS_SRC=ban.ip if ban else "",
                    PS_STATUS=str(max(res.status, 0)), PS_STDERR=res.stderr.strip()[:2000],
                    PS_DETAIL=f"phase={phase} attempt={attempt + 1}")
        if not final:
            heapq.heappush(self._retries, _Retry(time.monotonic() + BACKOFF[attempt], attempt + 1, jail,
                                                 action.name, phase, ban))

    def _start_one(self, jail: str, action: Action) -> Result | None:
        """Run the action's actionstart once (remembered on success); the failing Result, else None."""
        res = self._run(jail, action, "actionstart", None, now=time.time())
        if res is None:
            self.started.add((jail, action.name))
        return res

    def start(self, jail: str) -> None:
        for action in self.actions.get(jail, []):
            if action.start_on_demand or (jail, action.name) in self.started or not action.has("actionstart"):
                continue
            res = self._start_one(jail, action)
            if res is not None:
                self._failed(jail, action, "actionstart", None, res, 0)

    def stop(self, jail: str) -> None:
        for action in reversed(self.actions.get(jail, [])):
            if (jail, action.name) in self.started and action.has("actionstop"):
                res = self._run(jail, action, "actionstop", None, now=time.time())
                if res is not None:
                    self.report(R.Event.FAILED, f"jail {jail}: action {action.name} actionstop failed: "
                                                f"{res.stderr.strip()[:300]}", PS_JAIL=jail, PS_ACTION=action.name,
                                PS_STATUS=str(max(res.status, 0)), PS_STDERR=res.stderr.strip()[:2000])
            self.started.discard((jail, action.name))

    def _ensure_started(self, jail: str, action: Action) -> None:
        """Start an on-demand (or failed) action before its first ban; a failure shows in the ban itself."""
        if action.has("actionstart") and (jail, action.name) not in self.started:
            self._start_one(jail, action)

    @staticmethod
    def _batch_set(action: Action, vars_: dict[str, object], family: object,
                   cache: dict[tuple[object, ...], Any]) -> str | None:
        """``action.batch_set(vars_)``, memoised on the values of the variables the set template names."""
        if action.batchset is None:
            return None
        names_key = (id(action),)
        names = cache.get(names_key)
        if names is None:
            names = cache[names_key] = tuple(sorted(action.batchset.variables()))
        if "ip" in names:
            return action.batch_set(vars_)
        key = (id(action), family, *(vars_.get(n) for n in names))
        if key not in cache:
            cache[key] = action.batch_set(vars_)
        return cache[key]  # type: ignore[no-any-return]

    def ban_many(self, bans: list[Ban], *, restoring: bool = False, only: set[str] | None = None) -> None:
        """Apply bans: nft-set actions in one batch per table, the others command by command (``only``: just these
        actions). A ban that raises is reported with its address and skipped; it never stops the others."""
        if not bans:
            return
        now = time.time()
        batches: dict[str, NftBatch] = {}
        done: dict[tuple[str, str], list[str]] = {(b.jail, b.ip): [] for b in bans}
        batched: dict[str, list[tuple[Ban, Action]]] = {}
        # The set an address goes to depends only on the variables its template names (and the address's
        # family), so it is rendered once per distinct combination rather than once per ban (100k bans at start).
        set_names: dict[tuple[object, ...], Any] = {}
        for ban in bans:
            try:
                family = validate_vars({"ip": ban.ip})["family"]  # what Action.handles() checks, once per ban
            except VarError:
                family = None
            for action in self.actions.get(ban.jail, []):
                if family not in action.families or not action.has("actionban") or (only is not None
                                                                                      and action.name not in only):
                    continue
                try:
                    self._ensure_started(ban.jail, action)
                    vars_ = ban_vars(ban, now, remaining=True)
                    set_name = self._batch_set(action, vars_, family, set_names)
                    if set_name is not None:
                        table = str(action.params.get("table", "portsentinel"))
                        nb = batches.get(table)
                        if nb is None:
                            nb = batches[table] = NftBatch(self.nft_runner, table=table)
                        nb.add(set_name, ban.ip, None if ban.expires == FOREVER
                               else int(vars_["bantime"]) + KERNEL_GRACE)  # type: ignore[call-overload]
                        batched.setdefault(table, []).append((ban, action))
                        continue
                    res = self._run(ban.jail, action, "actionban", ban, now=now, remaining=True)
                except Exception as exc:  # noqa: BLE001 - one bad ban is logged and skipped, never a crash loop
                    log.exception("jail %s: action %s: ban of %s skipped", ban.jail, action.name, ban.ip)
                    res = Result((), 2, stderr=f"{type(exc).__name__}: {exc}")
                if res is None:
                    done[(ban.jail, ban.ip)].append(action.name)
                else:
                    self._failed(ban.jail, action, "actionban", ban, res, 0)
        for table, nb in batches.items():
            result = nb.commit()
            failed = {ip for ip, _ in result.failed}
            for ban, action in batched[table]:
                if ban.ip in failed:
                    err = next(e for ip, e in result.failed if ip == ban.ip)
                    self._failed(ban.jail, action, "actionban", ban, Result((), 1, stderr=err), 0)
                else:
                    done[(ban.jail, ban.ip)].append(action.name)
        if restoring:
            return
        for ban in bans:
            names = done[(ban.jail, ban.ip)]
            if ban.expires != FOREVER and not math.isfinite(ban.bantime):
                continue  # reported above as failed (its bantime cannot be rendered)
            bantime = "forever" if ban.expires == FOREVER else f"{int(round(ban.bantime))}s"
            note = ban.info.get("note", "")
            self.report(R.Event.BAN,
                        f"jail {ban.jail}: banned {ban.ip} for {bantime} (offence {ban.count}, {ban.failures} "
                        f"failure(s)) by {', '.join(names) or 'no action'}"
                        + (f" (record from {ban.info['src']})" if ban.info.get("src") else "")
                        + (f"; {note}" if note else ""),
                        PS_JAIL=ban.jail, **src_fields(ban.ip, ban.info), PS_ACTION=",".join(names),
                        PS_DETAIL=note,
                        PS_BANTIME=str(-1 if ban.expires == FOREVER else int(round(ban.bantime))),
                        PS_PORT=ban.info.get("port", ""), PS_PROTO=ban.info.get("proto", ""),
                        PS_SCAN=ban.info.get("scan", ""), PS_HITS=str(ban.failures))

    def lift(self, ban: Ban, *, attempt: int = 0) -> tuple[list[str], list[str]]:
        """Run actionunban of every action of the jail (reverse order), each failure reported and none retried
        here (responder.core.unbans retries the whole unban). Returns the names that succeeded and that failed."""
        done: list[str] = []
        failed: list[str] = []
        now = time.time()
        for action in reversed(self.actions.get(ban.jail, [])):
            if not action.has("actionunban") or not action.handles(ban.ip):
                continue
            try:
                res = self._run(ban.jail, action, "actionunban", ban, now=now)
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

    def check(self, jail: str) -> list[Action]:
        """Run ``actioncheck`` of every started action of the jail; the actions whose check failed."""
        broken = []
        for action in self.actions.get(jail, []):
            if (jail, action.name) not in self.started or not action.has("actioncheck"):
                continue
            try:
                res = self._run(jail, action, "actioncheck", None, now=time.time())
            except Exception:  # noqa: BLE001 - a check that cannot run counts as broken
                log.exception("jail %s: action %s: actioncheck", jail, action.name)
                res = Result((), 2)
            if res is not None:
                broken.append(action)
        return broken

    # -------------------------------------------------------------- retries
    def next_retry(self) -> float | None:
        return self._retries[0].due if self._retries else None

    def retry_due(self) -> None:
        now = time.monotonic()
        while self._retries and self._retries[0].due <= now:
            r = heapq.heappop(self._retries)
            action = next((a for a in self.actions.get(r.jail, []) if a.name == r.action), None)
            if action is None:
                continue
            res = self._run(r.jail, action, r.phase, r.ban, now=time.time(), remaining=True)
            if res is None:
                if r.phase == "actionstart":
                    self.started.add((r.jail, action.name))
                self.report(R.Event.BAN if r.phase != "actionunban" else R.Event.UNBAN,
                            f"jail {r.jail}: action {action.name} {r.phase} succeeded on retry {r.attempt}",
                            PS_JAIL=r.jail, PS_ACTION=action.name, PS_SRC=r.ban.ip if r.ban else "",
                            PS_DETAIL=f"retry={r.attempt}")
            else:
                self._failed(r.jail, action, r.phase, r.ban, res, r.attempt)
