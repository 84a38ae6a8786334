"""The kernel trap's share of the responder's loop (docs/kernel-trap.md): the bans the kernel reported through
NFLOG logged and counted by their jails (which may escalate them to a ban of the responder's own), and the
tarpits that ran out logged. The kernel side itself is responder.adapters.trapkernel; the wiring is
responder.service."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Protocol

from portsentinel import record as R
from portsentinel.responder.core.bans import Ban, BanBook
from portsentinel.responder.core.engine import Decision, Engine
from portsentinel.responder.records import Reporter
from portsentinel.responder.trap.escalation import escalate

if TYPE_CHECKING:
    from portsentinel.responder.adapters.trapkernel import KernelTraps


class TrapDaemon(Protocol):
    """What the trap's turn uses of the responder (responder.service)."""

    engine: Engine
    book: BanBook
    traps: KernelTraps
    reporter: Reporter

    def report(self, event: R.Event, message: str, **fields: str) -> None: ...
    def apply_bans(self, bans: list[Ban], cursors: dict[str, str] | None = None) -> None: ...
    def lift_covered(self, d: Decision) -> None: ...


def events(r: TrapDaemon, group: int) -> None:
    """Kernel bans reported by NFLOG: each one logged, then counted by its jail (which may escalate)."""
    bans: list[Ban] = []
    for jail, hit in r.traps.read(group):
        tarpit = r.traps.traps[jail].settings.tarpit if jail in r.traps.traps else 0
        r.report(R.Event.BAN, f"jail {jail}: kernel trap banned {hit.ip} for {tarpit}s ({hit.proto} port "
                              f"{hit.port})", PS_JAIL=jail, PS_SRC=hit.ip, PS_ACTION="kernel-trap",
                 PS_BANTIME=str(tarpit), PS_PROTO=hit.proto, PS_PORT=str(hit.port),
                 PS_DETAIL=f"kernel_time={hit.time:.6f}")
        d = escalate(r.engine, jail, hit, time.time(), r.traps.strikes.get(jail))
        if d is not None and d.kind == "ban" and d.ban is not None:
            r.lift_covered(d)
            bans.append(d.ban)
        elif d is not None:
            r.reporter.decision(d)
    if bans:
        r.apply_bans(bans)


def tick(r: TrapDaemon) -> None:
    """Listening ports and never-ban facts into the trap's sets; tarpits that ran out, logged."""
    r.traps.tick()
    for jail, hit in r.traps.expired(time.time()):
        if r.book.covering(jail, hit.ip) is None:  # nor a network that holds it
            r.report(R.Event.UNBAN, f"jail {jail}: kernel trap tarpit of {hit.ip} expired",
                     PS_JAIL=jail, PS_SRC=hit.ip, PS_ACTION="kernel-trap", PS_DETAIL="expired")
