"""The publisher's pure half: a responder decision with ``PS_SHARE=1`` -> a put or a delete of this host's key.

Input is a record as read from the journal or the responder's decisions file (field name -> text). Only the
responder's ``ban``/``unban`` records of a shared jail count; anything else is None. A ban's ``until`` is
``PS_UNTIL`` when the record carries it, else ``PS_TIME + PS_BANTIME``; a ban for ever (``PS_BANTIME=-1``) is
published for ``maxtime`` (a value's ``until`` is bounded), and no ban is published beyond it.

The responder's wake-up datagram carries the shared decisions of its turn (already in its journal, or decisions
file) as JSON lines (:func:`carried`): they are published at once, and :class:`Early` keeps the same decisions,
read again from the journal later, from being published twice (or an older one after a newer).

A fleet-wide unban (``portsentinel unban --fleet ADDR``) reaches the daemon the same way: the responder's
``unban`` record with ``PS_FLEET=1`` and ``PS_SHARE=1`` (no jail) becomes the marker ``<host>._unban.<addr>``,
standing for ``maxtime`` (every ban made before it is void on every host that honours it).
"""

from __future__ import annotations

import json
import math
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass

from portsentinel import record as R

from . import codec as C
from .keys import UNBAN_JAIL, make_key, valid_name

_SCANS = frozenset(R.SCAN_KINDS)
#: 1 on the responder's record of a fleet-wide unban (the responder's side names it; docs/records.md).
F_FLEET = "PS_FLEET"


@dataclass(frozen=True)
class Op:
    """``put`` (``value`` set) or ``delete`` of ``key``; ``addr``/``jail`` for the spool and the audit."""

    key: str
    value: bytes | None
    addr: str
    jail: str


def _float(text: str) -> float | None:
    try:
        number = float(text)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def _int(text: str, default: int, low: int, high: int) -> int:
    return int(text) if text.isdigit() and low <= int(text) <= high else default


def from_decision(fields: Mapping[str, str], host: str, now: float, maxtime: float) -> Op | None:
    """The bucket operation a decision asks for, or None (not a shared ban/unban, or nothing left to share)."""
    if fields.get(R.F_IDENT) != R.RESPONDER_IDENTIFIER or fields.get(R.F_SHARE) != "1":
        return None
    event = fields.get(R.F_EVENT)
    fleet_wide = fields.get(F_FLEET) == "1"
    jail = UNBAN_JAIL if fleet_wide else fields.get(R.F_JAIL, "")
    if event not in ("ban", "unban") or not valid_name(jail) or (jail == UNBAN_JAIL and not fleet_wide):
        return None
    try:
        addr = R.canonical_network(fields.get(R.F_SRC_NET) or fields.get(R.F_SRC, ""))
        key = make_key(host, jail, addr)
    except ValueError:
        return None
    if fleet_wide:
        if event != "unban":
            return None
        return Op(key, C.encode_unban(C.Unban(addr, now, now + maxtime)), addr, jail)
    if event == "unban":
        return Op(key, None, addr, jail)
    at = _float(fields.get(R.F_TIME, "")) or now
    until = _float(fields.get(R.F_UNTIL, ""))
    if until is None:
        bantime = _float(fields.get(R.F_BANTIME, ""))
        if bantime is None:
            return None
        until = now + maxtime if bantime < 0 else at + bantime
    until = min(until, now + maxtime)
    if until <= now:
        return None
    scan = fields.get(R.F_SCAN, "")
    ban = C.Ban(addr, jail, until, scan if scan in _SCANS else "", _int(fields.get(R.F_VERIFIED, ""), 0, 0, 1),
                _int(fields.get(R.F_OFFENCE, ""), 1, 1, C.MAX_OFFENCE), min(at, now))
    return Op(key, C.encode_ban(ban), addr, jail)


#: Decisions read from one wake-up datagram at most (the responder sends one turn's, up to 16 KB).
CARRIED_MAX = 256
#: Keys remembered with the time of the decision last published on them, from a wake-up or the journal (the oldest
#: forgotten first): the journal shows a record within seconds, and a wake-up read after the journal's copy of a
#: newer decision must not bring an older one back (~200 bytes a key).
EARLY_MAX = 16_384


def carried(payload: bytes) -> list[dict[str, str]]:
    """The decisions a wake-up datagram carries: one JSON object per line, its text and integer fields as text
    (what the journal would give); anything else in it is skipped. Each is then checked by
    :func:`from_decision` like a decision read from the journal."""
    out: list[dict[str, str]] = []
    for line in payload.split(b"\n")[:CARRIED_MAX]:
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except (ValueError, RecursionError):
            continue
        if isinstance(obj, dict):
            out.append({str(k): str(v) for k, v in obj.items() if isinstance(v, str | int) and not isinstance(v, bool)})
    return out


def decided_at(fields: Mapping[str, str]) -> float | None:
    """The decision's own time (PS_TIME), which orders the decisions on one key."""
    return _float(fields.get(R.F_TIME, ""))


class Early:
    """Keys published from a wake-up datagram, with the time of that decision. The same decision read from the
    journal afterwards (or an older one on that key, read late) is :meth:`seen`: not published again; a newer one
    is published and the key forgotten."""

    def __init__(self, limit: int = EARLY_MAX) -> None:
        self.limit = limit
        self._at: OrderedDict[str, float] = OrderedDict()

    def __len__(self) -> int:
        return len(self._at)

    def note(self, key: str, at: float) -> None:
        self._at[key] = max(at, self._at.pop(key, at))
        while len(self._at) > self.limit:
            self._at.popitem(last=False)

    def seen(self, key: str, at: float | None) -> bool:
        known = self._at.get(key)
        if known is None or at is None:
            return False
        if at <= known:
            return True
        del self._at[key]
        return False
