"""Kernel-trap hits as failures in their jail: the trap builds rules (responder.trap.ruleset) and parses the kernel's
reports (responder.trap.hits); this module hands each hit to the engine like any other failure. Kept apart so the trap's
settings and rules depend on nothing of the engine, and the engine nothing of the trap (no import circle)."""

from __future__ import annotations

import dataclasses

from portsentinel.responder.config.jailconf import JailConfig
from portsentinel.responder.core.engine import Decision, Engine
from portsentinel.responder.core.jail import Jail
from portsentinel.responder.trap.hits import TrapHit
from portsentinel.responder.trap.settings import ACTION, TrapSettings


def strikes(s: TrapSettings, cfg: JailConfig) -> Jail | None:
    """The counter of trap hits when the trap has its own ``maxretry`` (else the jail's counter counts them)."""
    return Jail(dataclasses.replace(cfg, maxretry=s.maxretry)) if s.maxretry else None


def escalate(engine: Engine, jail: str, hit: TrapHit, now: float, counter: Jail | None = None) -> Decision | None:
    """Count a kernel-trap hit as one failure in the jail (or in ``counter``, see :func:`strikes`); a ban Decision
    when the jail's rules say so (maxretry within findtime; never when verified_only, since a trapped probe
    proved no handshake), through the same network counting, never-ban check, cap and repeat-offender bantime
    as every other ban."""
    rt = engine.jails.get(jail)
    if rt is None:
        return None
    d = engine.fail(rt, hit.ip, now, counter, verified=False, port=hit.port, proto=hit.proto, scan="other",
                    match=f"kernel-trap: {hit.proto} port {hit.port} from {hit.ip}")
    if d is not None and d.ban is not None:
        d.ban.info["via"] = ACTION
    return d
