"""The control socket's commands (status, banned, ban, unban, reload) against the running responder.
The client side is portsentinel.client; the socket itself is responder.adapters.control."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Protocol

from portsentinel import record as R
from portsentinel.responder.core import views
from portsentinel.responder.core.bans import Ban, BanBook
from portsentinel.responder.core.engine import Decision, Engine
from portsentinel.responder.core.health import Health
from portsentinel.responder.core.unbans import PendingUnbans
from portsentinel.responder.records import Reporter

if TYPE_CHECKING:
    from portsentinel.responder.adapters.hostwatch import HostWatch
    from portsentinel.responder.adapters.trapkernel import KernelTraps


class Daemon(Protocol):
    """What the commands use of the responder (responder.service)."""

    engine: Engine
    book: BanBook
    traps: KernelTraps
    health: Health
    pending: PendingUnbans
    errors: list[str]
    started: float
    host: HostWatch
    reporter: Reporter

    def report(self, event: R.Event, message: str, **fields: str) -> None: ...
    def apply_bans(self, bans: list[Ban], cursors: dict[str, str] | None = None) -> None: ...
    def lift(self, bans: list[Ban], reason: str) -> None: ...
    def lift_covered(self, d: Decision) -> None: ...
    def reload(self) -> dict[str, Any]: ...


def status(r: Daemon, jail: str | None = None) -> dict[str, Any]:
    out = views.status(r.engine, r.book, r.traps, r.health, r.pending, errors=r.errors, started=r.started,
                       jail=jail)
    if out["ok"]:
        out.update(forged=r.reporter.forgeries.total, never_ban=r.engine.never.reasons,
                   facts_updated=round(r.host.updated, 3))
    return out


def ban(r: Daemon, jail: str, ip: str) -> dict[str, Any]:
    d = r.engine.manual_ban(jail, ip, time.time())
    if d.kind == "ban" and d.ban is not None:
        r.lift_covered(d)
        r.apply_bans([d.ban])
        return {"ok": True, "banned": d.ip, "jail": d.jail}
    r.reporter.decision(d)
    return {"ok": False, "error": f"{d.ip} not banned: {d.reason}"}


def unban(r: Daemon, ip: str | None) -> dict[str, Any]:
    """``ip`` lifted from every jail (and the kernel trap's tarpit); None lifts everything."""
    lifted = r.engine.unban(ip)
    r.lift(lifted, "manual")
    done = [{"jail": b.jail, "ip": b.ip} for b in lifted]
    for jail, addr in r.traps.unban(None if ip is None else R.canonical_address(ip)):
        if {"jail": jail, "ip": addr} not in done:
            done.append({"jail": jail, "ip": addr})
            r.report(R.Event.UNBAN, f"jail {jail}: kernel trap tarpit of {addr} lifted (manual)",
                     PS_JAIL=jail, PS_SRC=addr, PS_ACTION="kernel-trap", PS_DETAIL="manual")
    return {"ok": True, "unbanned": done}


def handle(r: Daemon, req: dict[str, Any]) -> dict[str, Any]:
    cmd = req.get("cmd")
    try:
        if cmd == "status":
            return status(r, req.get("jail") or None)
        if cmd == "banned":
            return views.banned(r.book, r.traps)
        if cmd == "ban":
            return ban(r, str(req.get("jail", "")), str(req.get("ip", "")))
        if cmd == "unban":
            return unban(r, None if req.get("all") else str(req.get("ip", "")))
        if cmd == "reload":
            return r.reload()
    except (KeyError, ValueError) as exc:
        return {"ok": False, "error": str(exc).strip("'\"")}
    return {"ok": False, "error": f"unknown command {cmd!r}"}
