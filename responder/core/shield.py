"""Which restored bans must not be re-applied: their address became never-ban while the responder was stopped.
Pure: the jails' settings and the never-ban list in, the bans or the reason out (used by Keeper.restore)."""

from __future__ import annotations

import logging
from collections.abc import Mapping

from portsentinel.responder.core.bans import Ban
from portsentinel.responder.core.engine import JailRuntime
from portsentinel.responder.core.guard import NeverBan

log = logging.getLogger(__name__)


def why_protected(ban: Ban, jails: Mapping[str, JailRuntime], never: NeverBan) -> str | None:
    """Why a restored ban must not be re-applied: its address (or an address its network holds) is never
    banned now (own address, gateway, resolver, ignoreip, loopback), else None."""
    rt = jails.get(ban.jail)
    if rt is None:
        return None
    cfg = rt.cfg
    try:
        if "/" not in ban.ip:
            return never.why(ban.ip, cfg.ignoreip, cfg.ignoreself)
        src = ban.info.get("src") or ban.ip.split("/")[0]
        target, note = never.safe_target(src, ban.ip, cfg.ignoreip, cfg.ignoreself)
    except ValueError as exc:  # a corrupt row: the per-ban path reports it
        log.debug("restore: %s: %s", ban.ip, exc)
        return None
    return note if target != ban.ip else None


def suspects(jail: str, ips: list[str], jails: Mapping[str, JailRuntime], never: NeverBan) -> set[str] | None:
    """Of a restore's chunk of one jail's addresses, those :func:`why_protected` must look at, None for all: every
    other one it passes for certain (NeverBan.suspects: one match over the chunk's addresses instead of a check
    each)."""
    rt = jails.get(jail)
    if rt is None:
        return set()  # (why_protected passes it too)
    return never.suspects(ips, rt.cfg.ignoreip, rt.cfg.ignoreself)
