"""What ``portsentinel status`` and ``banned`` show: read-only views of the running responder's parts."""

from __future__ import annotations

import time
from typing import Any

from portsentinel.responder.adapters.trapkernel import KernelTraps
from portsentinel.responder.core.bans import BanBook
from portsentinel.responder.core.engine import Engine
from portsentinel.responder.core.health import Health
from portsentinel.responder.core.unbans import PendingUnbans


def status(engine: Engine, book: BanBook, traps: KernelTraps, health: Health, pending: PendingUnbans, *,
           errors: list[str], started: float, jail: str | None = None) -> dict[str, Any]:
    now = time.time()
    jails = {}
    for name, rt in engine.jails.items():
        if jail and name != jail:
            continue
        jails[name] = {"source": rt.source, "filter": rt.cfg.filter, "actions": [a.name for a in rt.cfg.actions],
                       "failures": rt.jail.failures_total, "tracked": rt.jail.tracked(),
                       "banned": len(book.in_jail(name)), "bans_total": rt.bans_total,
                       "ignored_total": rt.ignored_total, "cap_refused": rt.cap.refused}
    for name in jails:
        if name in traps.traps:
            jails[name]["kernel_trap"] = traps.counters(name)
    if jail and jail not in jails:
        return {"ok": False, "error": f"no such jail: {jail}"}
    return {"ok": True, "uptime": round(now - started, 1), "jails": jails, "errors": errors,
            "banned": len(book), "pending_unbans": len(pending), "health": health.status()}


def banned(book: BanBook, traps: KernelTraps) -> dict[str, Any]:
    now = time.time()
    rows = [{"jail": b.jail, "ip": b.ip, "since": b.banned_at, "remaining": round(b.remaining(now), 1),
             "count": b.count, **b.info} for b in sorted(book.active.values(), key=lambda b: b.banned_at)]
    rows += [t for t in traps.banned(now) if book.covering(str(t["jail"]), str(t["ip"])) is None]  # or its network
    return {"ok": True, "bans": rows}
