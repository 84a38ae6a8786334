"""A batch of entries read from one source, decided and carried out (the service's _apply): each entry through
the engine, its bans applied with the batch; a large batch of detector records or fleet lines the short way
(responder.core.lean), a part at a time, each part's bans in force while the next is decided
(Keeper.apply_early: set elements that the kernel lifts on its own).
"""

from __future__ import annotations

import functools
import logging
from typing import TYPE_CHECKING, Any, Protocol

from portsentinel import record as R
from portsentinel.responder import commands
from portsentinel.responder.core import lean
from portsentinel.responder.core.bans import Ban

if TYPE_CHECKING:
    from portsentinel.responder.core.keeper import Keeper
    from portsentinel.responder.metrics import ResponderMetrics

log = logging.getLogger("portsentinel.responder")

#: Entries of a large batch decided the short way between two parts put in force (Keeper.apply_early).
PART = 2_048


class Decider(commands.Daemon, Protocol):
    """What deciding uses of the responder (responder.service)."""

    keeper: Keeper
    metrics: ResponderMetrics


def parts(n: int) -> list[int]:
    """The sizes of a batch's parts, in order: :data:`PART` each, the last one what is left."""
    return [min(PART, n - i) for i in range(0, n, PART)]


def decide(r: Decider, source: str, entries: list[Any], now: float, *, more: bool = False) -> None:
    """The batch decided in order; its bans applied (with the cursor of its last entry; ``more``: another batch
    follows at once, Keeper.apply)."""
    bans: list[Ban] = []
    rt = lean.jail_of(r.engine, source, len(entries))
    if rt is not None:  # detector records, or the fleet daemon's lines: most of them straight to their bans
        i = 0
        for size in parts(len(entries)):
            part = entries[i:i + size]
            i += size
            fast = lean.decide(r.engine, rt, source, part, now, bans, functools.partial(entry, r, source, now=now,
                                                                                         bans=bans, previous=""))
            r.metrics.bans_from(fast)
            if i < len(entries) and r.keeper.apply_early(bans):
                bans = []  # in force while the rest is decided
    else:
        previous = ""  # cursor of the entry before the current one
        for e in entries:
            entry(r, source, e, now=now, bans=bans, previous=previous)
            previous = e.cursor
    r.metrics.entries(source, entries[-1].fields, len(entries), now)
    r.apply_bans(bans, {source: entries[-1].cursor}, more=more)


def entry(r: Decider, source: str, e: Any, *, now: float, bans: list[Ban], previous: str) -> None:
    """One entry the long way (Engine.entry): its bans appended to ``bans`` (applied with the batch), any other
    decision carried out; a remote unban first applies ``bans`` (``previous``: the cursor before it)."""
    if e.error:
        r.report(R.Event.IGNORED, f"unreadable entry in {source}: {e.error}", PS_DETAIL=e.error[:500])
        return
    try:
        decisions = r.engine.entry(source, e, now)
    except Exception as exc:  # noqa: BLE001 - one bad entry is logged and skipped, never a crash loop
        log.exception("entry skipped: %s", e)
        what = (e.line or repr(e.fields))[:500]
        r.report(R.Event.FAILED, f"entry in {source} skipped: {type(exc).__name__}: {exc}: {what}",
                 PS_DETAIL=f"entry={what}", PS_STDERR=f"{type(exc).__name__}: {exc}"[:2000])
        return
    for d in decisions:
        if d.kind == "ban" and d.ban is not None:
            r.lift_covered(d)
            bans.append(d.ban)
            r.metrics.ban_from(d.ban, e.fields)
        elif d.kind == "unban":  # the fleet's (responder.core.remote)
            if bans:  # bans decided before it go first: it may lift one of them
                r.apply_bans(list(bans), {source: previous})
                bans.clear()
            commands.remote_unban(r, d)
        else:
            r.reporter.decision(d)
