"""The bulk path's two pure helpers for :meth:`Executor.ban_many`: a ban's record (its message and fields, made
the same way for one ban and for 100,000), and the set elements of many bans for a *plain* set action (the
nftables action: its ``batchset`` names the set by the family and whether the ban is a network, never by the
address), added without a ``BanVars`` or a plan per ban.

The set's name is learnt once per kind of ban (IPv4 or IPv6, address or network) from the action's own plan of
the first such ban (its variables validated as any ban's); the elements of one set then go through
:meth:`NftBatch.add_new` together: text that can only be an address or a network (one match over their joined
text) is taken as it is, anything else is parsed, so no other text reaches the nft script (and nft refuses a
malformed one: the batch falls back and the element's ban is reported as failed). A ban
the fast path cannot place (a kind whose plan is not a set element, a bantime that is not a number) is handed
back for the per-ban path, which reports what is wrong with it.
"""

from __future__ import annotations

from portsentinel.responder.actions.action import KERNEL_GRACE, Action, SetElement
from portsentinel.responder.actions.variables import BanVars
from portsentinel.responder.adapters.nftbatch import NftBatch
from portsentinel.responder.core.bans import FOREVER, Ban, src_fields

#: A remaining time beyond this (seconds) is absurd: the per-ban path refuses it with its reason.
MAX_SECONDS = 10**10


def plain(action: Action) -> bool:
    """The action's ban is a set element whose set does not depend on the address itself."""
    return action.batchset is not None and "ip" not in action.set_vars


def add_elements(action: Action, bans: list[Ban], now: float, nb: NftBatch,
                 queued: list[tuple[Ban, Action]]) -> list[Ban]:
    """The elements of ``bans`` for the plain set action ``action`` added to ``nb`` (its table's batch), each
    (ban, action) appended to ``queued``; returns the bans left to the per-ban path. Bans of a family the action
    does not handle are neither (as the per-ban path skips them)."""
    if len(bans) >= 64 and _all_v4(action, bans, now, nb, queued):
        return []
    sets: dict[tuple[bool, bool], str | None] = {}  # (IPv6, network) -> set name; None: skip; "": per-ban path
    slow: list[Ban] = []
    elements: dict[str, tuple[list[str], list[int | None]]] = {}  # set name -> its elements and timeouts
    for ban in bans:
        ip = ban.ip
        kind = (":" in ip, "/" in ip)
        name = sets.get(kind)
        if name is None and kind not in sets:
            name = sets[kind] = _set_of(action, ban, now)
        if not name:
            if name == "":
                slow.append(ban)
            continue
        exp = ban.expires
        timeout: int | None = None
        if exp != FOREVER:
            left = exp - now
            if not left < MAX_SECONDS:  # NaN, infinity, absurd
                slow.append(ban)
                continue
            timeout = max(1, int(round(left if left > 0 else 0.0))) + KERNEL_GRACE
        group = elements.get(name)
        if group is None:
            group = elements[name] = ([], [])
        group[0].append(ip)
        group[1].append(timeout)
        queued.append((ban, action))
    for name, (ips, timeouts) in elements.items():
        nb.add_new(name, ips, timeouts)
    return slow


def _all_v4(action: Action, bans: list[Ban], now: float, nb: NftBatch, queued: list[tuple[Ban, Action]]) -> bool:
    """:func:`add_elements` for the common case, a list at a time (no step per ban): every ban an IPv4 address
    with an end that is a time, the action putting them in a set. False, nothing added, for anything else."""
    ips = [b.ip for b in bans]
    joined = "\n".join(ips)
    if ":" in joined or "/" in joined:
        return False
    lefts = [b.expires - now for b in bans]
    total = sum(lefts)
    if total != total or not max(lefts) < MAX_SECONDS or any(b.expires == FOREVER for b in bans):
        return False  # (NaN, infinity, absurd, for ever: each its own way)
    name = _set_of(action, bans[0], now)
    if not name:
        return False
    nb.add_new(name, ips, [max(1, int(round(t if t > 0 else 0.0))) + KERNEL_GRACE for t in lefts])
    queued.extend([(b, action) for b in bans])
    return True


def _set_of(action: Action, ban: Ban, now: float) -> str | None:
    """The set the action puts bans of ``ban``'s kind in: its name, None when the action does not handle the
    family, "" when the per-ban path must decide (the plan is not a set element, or the ban is not plannable)."""
    try:
        ban_vars = BanVars.of(ban, now, remaining=True)
        if ban_vars.family not in action.families:
            return None
        plan = action.plan("actionban", ban_vars)
    except ValueError:
        return ""
    return plan.set if isinstance(plan, SetElement) and plan.element == ban.ip else ""


def ban_record(ban: Ban, names: list[str]) -> tuple[str, dict[str, str]]:
    """The message and fields of the ban record of ``ban``, held by the actions ``names`` (no field whose value
    is empty)."""
    fields: dict[str, str] = {}
    return ban_fields(ban, names, fields), fields


def ban_fields(ban: Ban, names: list[str], out: dict[str, str]) -> str:
    """The ban record's fields of ``ban`` added to ``out`` (none empty); its message returned."""
    add_ban_fields(ban, names, out)
    return ban_message(ban, names)


def add_ban_fields(ban: Ban, names: list[str], out: dict[str, str]) -> None:
    """:func:`ban_fields` without the message (a ban record that goes into an aggregated entry needs none)."""
    info = ban.info
    bantime = -1 if ban.expires == FOREVER else int(round(ban.expires - ban.banned_at))
    out["PS_JAIL"] = ban.jail
    if "/" in ban.ip:
        out.update(src_fields(ban.ip, info))
    else:
        out["PS_SRC"] = ban.ip
    action = ",".join(names)
    if action:
        out["PS_ACTION"] = action
    note = info.get("note")
    if note:
        out["PS_DETAIL"] = note
    out["PS_BANTIME"] = str(bantime)
    for key, name in (("port", "PS_PORT"), ("proto", "PS_PROTO"), ("scan", "PS_SCAN")):
        value = info.get(key)
        if value:
            out[name] = value
    out["PS_HITS"] = str(ban.failures)


def ban_message(ban: Ban, names: list[str]) -> str:
    """The MESSAGE of ``ban``'s ban record (held by the actions ``names``)."""
    info = ban.info
    bantime = -1 if ban.expires == FOREVER else int(round(ban.expires - ban.banned_at))
    note = info.get("note", "")
    src = info.get("src")
    return (f"jail {ban.jail}: banned {ban.ip} for {'forever' if bantime == -1 else f'{bantime}s'} (offence "
            f"{ban.count}, {ban.failures} failure(s)) by {', '.join(names) or 'no action'}"
            + (f" (record from {src})" if src else "") + (f"; {note}" if note else ""))
