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
    def apply_bans(self, bans: list[Ban], cursors: dict[str, str] | None = None, *, more: bool = False) -> None: ...
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


def unban(r: Daemon, ip: str | None, why: str = "manual", **fields: str) -> dict[str, Any]:
    """``ip`` lifted from every jail (and the kernel trap's tarpit); None lifts everything. ``fields`` go on the
    tarpits' unban records (a fleet-wide unban's origin)."""
    lifted = r.engine.unban(ip)
    r.lift(lifted, why)
    done = [{"jail": b.jail, "ip": b.ip} for b in lifted]
    for jail, addr in r.traps.unban(None if ip is None else R.canonical_network(ip)):
        if {"jail": jail, "ip": addr} not in done:
            done.append({"jail": jail, "ip": addr})
            r.report(R.Event.UNBAN, f"jail {jail}: kernel trap tarpit of {addr} lifted ({why})",
                     PS_JAIL=jail, PS_SRC=addr, PS_ACTION="kernel-trap", PS_DETAIL=why, **fields)
    return {"ok": True, "unbanned": done}


# ------------------------------------------------------------------ the fleet (docs/responder.md, "The fleet")
def fleet_unban(r: Daemon, ip: str) -> dict[str, Any]:
    """``portsentinel unban --fleet ADDR``: lifted here from every jail, then a decision record (PS_FLEET=1,
    PS_SHARE=1, no PS_JAIL) that the fleet daemon turns into the bucket's fleet-wide unban marker."""
    target = R.canonical_network(ip.strip())  # ValueError: refused with its reason
    out = unban(r, target, "fleet-wide unban")
    r.report(R.Event.UNBAN, f"fleet-wide unban of {target} asked (lifted here from {len(out['unbanned'])} "
                            "jail(s))", PS_SRC=target, PS_FLEET="1", PS_SHARE="1", PS_DETAIL="fleet-wide unban")
    return {**out, "fleet": target}


def remote_unban(r: Daemon, d: Decision) -> None:
    """The fleet jail's unban of a remote ban (``d.lifts``, already out of the book), or a fleet-wide unban
    (PS_FLEET=1 in ``d.extra``: the engine lifted the address from every jail; the tarpits go here)."""
    if d.lifts:
        r.lift(d.lifts, d.reason)
    tarpits = []
    if d.extra.get(R.F_FLEET) == "1":
        for jail, addr in r.traps.unban(d.ip):
            tarpits.append(jail)
            r.report(R.Event.UNBAN, f"jail {jail}: kernel trap tarpit of {addr} lifted ({d.reason})",
                     PS_JAIL=jail, PS_SRC=addr, PS_ACTION="kernel-trap", PS_DETAIL=d.reason, **d.extra)


def handle(r: Daemon, req: dict[str, Any]) -> dict[str, Any]:
    cmd = req.get("cmd")
    try:
        if cmd == "status":
            return status(r, req.get("jail") or None)
        if cmd == "banned":
            return views.banned(r.book, r.traps)
        if cmd == "ban":
            return ban(r, str(req.get("jail", "")), str(req.get("ip", "")))
        if cmd == "unban" and req.get("fleet"):
            return fleet_unban(r, str(req.get("ip", "")))
        if cmd == "unban":
            return unban(r, None if req.get("all") else str(req.get("ip", "")))
        if cmd == "reload":
            return r.reload()
    except (KeyError, ValueError) as exc:
        return {"ok": False, "error": str(exc).strip("'\"")}
    return {"ok": False, "error": f"unknown command {cmd!r}"}
