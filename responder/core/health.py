"""Keep the bans in force when the firewall loses them: check, and re-apply what is missing.

A check runs each started action's ``actioncheck`` (fail2ban's meaning: the action's chain, jump rule or set is
there) and looks for each kernel trap's base chain. It runs within ``DEBOUNCE`` of a netlink notification that
an nftables table, chain, rule or set was deleted (``nft flush ruleset``, ``systemctl restart nftables``,
``iptables -F`` with Debian's iptables-nft; responder.adapters.nlmonitor), and every ``INTERVAL`` seconds anyway
(iptables-legacy and ipset send no notification). An action whose check fails is started again (its actionstart is
idempotent) and gets every ban of its jail in force, with the remaining time; a trap whose chain is gone is
re-installed and its jail's escalated bans re-added. A deleted host route to a banned address re-applies that ban
through the jail's actions marked ``watch = routes`` (the route action). ``portsentinel status`` shows when the
last re-apply happened and what it was.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection
from typing import Any, Protocol

from portsentinel import record as R
from portsentinel.responder.actions.executor import Executor
from portsentinel.responder.adapters.nlmonitor import NetlinkMonitor
from portsentinel.responder.adapters.trapkernel import KernelTraps
from portsentinel.responder.core.bans import BanBook

log = logging.getLogger("portsentinel.responder")

class HasFileno(Protocol):
    def fileno(self) -> int: ...


INTERVAL = 5.0
DEBOUNCE = 0.05
WATCH_ROUTES = "routes"


class Health:
    def __init__(self, executor: Executor, book: BanBook, traps: KernelTraps, report: Callable[..., None],
                 *, interval: float = INTERVAL) -> None:
        self.executor = executor
        self.book = book
        self.traps = traps
        self.report = report
        self.interval = interval
        self.monitor: NetlinkMonitor | None = None
        self._join_nft = False
        self.due = time.monotonic() + interval
        self.routes: set[str] = set()
        self.checks = 0
        self.reapplied_total = 0
        self.last_reapply: float | None = None
        self.last_detail = ""

    def open(self) -> list[HasFileno]:
        """The netlink sockets for the selector (none when netlink refuses: the periodic check remains). The
        nftables notifications are joined by the first :meth:`run`, after the restore: a listener makes the kernel
        build a notification per set element (1,000,000 restored bans took twice as long), and a check then
        covers what happened before."""
        self.monitor = NetlinkMonitor(nft=False)
        self._join_nft = True
        self.due = time.monotonic()  # the first loop turn joins and checks
        self._warn()
        return list(self.monitor.sockets)

    def _warn(self) -> None:
        if self.monitor is not None:
            for err in self.monitor.errors:
                log.warning("%s: only the periodic check (every %gs) will notice a flushed firewall", err,
                            self.interval)
            self.monitor.errors.clear()

    def close(self) -> None:
        if self.monitor is not None:
            self.monitor.close()

    def readable(self, sock: object) -> None:
        if self.monitor is None:
            return
        ch = self.monitor.read(sock)
        if ch.routes:  # one pass over the bans per drained batch (our own unbans delete routes too)
            banned = {ip for _, ip in self.book.active}
            self.routes |= ch.routes & banned
        if ch.nft or self.routes:
            self.due = min(self.due, time.monotonic() + DEBOUNCE)

    def next_due(self) -> float:
        return self.due

    def run(self, jails: Collection[str]) -> None:
        """Check now if it is time; re-apply what is missing."""
        if self._join_nft and self.monitor is not None:
            self._join_nft = False
            self.monitor.listen_nft()
            self._warn()
        if time.monotonic() < self.due:
            return
        self.due = time.monotonic() + self.interval
        self.checks += 1
        routes, self.routes = self.routes, set()
        trapped = set(self.traps.repair())
        done: list[str] = []
        for jail in jails:
            acts = self.executor.actions.get(jail, [])
            broken = {a.name: "actioncheck failed" for a in self.executor.check(jail)}
            if jail in trapped:
                broken.update({a.name: "kernel trap re-installed" for a in acts if a.options.get("kerneltrap")})
            for name in broken:
                self.executor.started.discard((jail, name))
            self.executor.start(jail, now=time.time())
            # An action whose actionstart failed again (nft gone, a module missing) gets no bans this time: its
            # start failure is reported and retried, and the next check tries again (no per-ban storm).
            for a in acts:
                if (a.name in broken and a.has("actionstart") and not a.start_on_demand
                        and (jail, a.name) not in self.executor.started):
                    del broken[a.name]
            bans = self.book.in_jail(jail)
            if broken:
                self.executor.ban_many(bans, now=time.time(), restoring=True, only=set(broken))
                done.append(f"jail {jail}: {', '.join(f'{n} ({why})' for n, why in broken.items())}: "
                            f"{len(bans)} ban(s) re-applied")
            lost = [b for b in bans if b.ip in routes]
            watch = {a.name for a in acts if a.options.get("watch", "").strip() == WATCH_ROUTES}
            if lost and watch:
                self.executor.ban_many(lost, now=time.time(), restoring=True, only=watch)
                done.append(f"jail {jail}: {', '.join(sorted(watch))} (route deleted): "
                            f"{', '.join(b.ip for b in lost)} re-applied")
        if done:
            self.reapplied_total += 1
            self.last_reapply = time.time()
            self.last_detail = "; ".join(done)
            self.report(R.Event.BAN, "firewall lost bans, re-applied: " + self.last_detail, PS_ACTION="reapply",
                        PS_DETAIL=self.last_detail[:2000])

    def status(self) -> dict[str, Any]:
        return {"checks": self.checks, "reapplied_total": self.reapplied_total, "last_reapply": self.last_reapply,
                "last_reapply_detail": self.last_detail,
                "notifications": "netlink" if self.monitor is not None and self.monitor.sockets else "none",
                "check_interval": self.interval}
