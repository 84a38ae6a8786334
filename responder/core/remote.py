"""The fleet's jail (docs/fleet.md): one line of the fleet daemon → a remote ban or unban here. Pure: no I/O, the
time is passed in.

The daemon writes one JSON line per remote ban or unban (SYSLOG_IDENTIFIER=portsentinel-fleet). The origin comes
from the bucket's key, which the cluster's per-host permissions enforce; this module checks the line's shape
again (a line that does not parse bans nothing) and computes what the jail does:

- a ban lasts the origin's remaining time (PS_UNTIL - now) times the multiplier for the number of origins that
  ban the source (PS_ORIGINS; ``bantime.fleetmultipliers``, the last one for that many or more), at most the jail's
  ``bantime.maxtime``; a PS_UNTIL already past bans nothing;
- an unban lifts the fleet jail's ban of that address; a fleet-wide one (PS_FLEET=1, or the daemon's
  PS_ORIGIN_JAIL=_unban) lifts it from every jail of this host.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import NamedTuple

from portsentinel import record as R
from portsentinel.responder.config.jailconf import JailConfig

#: Host and jail names in the bucket's keys (the fleet contract).
_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
#: The daemon's origin jail of a fleet-wide unban marker.
UNBAN_JAIL = "_unban"
#: A ban already in force is renewed only when the new one ends this much later (seconds): the daemon repeats
#: lines (catch-up after a restart, a renewal at the origin), and each renewal lifts and re-adds the element.
RENEW_SLACK = 60.0
#: Bounds of the integer fields (a hostile line cannot make a huge number of them).
MAX_COUNT = 1_000_000


#: The usual counts' texts and values, both ways (a catch-up's lines repeat a few of them).
_COUNTS = {str(n): n for n in range(1025)}
_TEXTS = {n: text for text, n in _COUNTS.items()}


class Remote(NamedTuple):
    """One parsed fleet line (a named tuple: a catch-up makes 100,000)."""

    event: str  # "ban" or "unban"
    target: str  # canonical address or network (PS_SRC_NET when present)
    src: str  # PS_SRC: an address (the network's first one for a network)
    origin: str
    origin_jail: str
    until: float | None  # None on an unban without PS_UNTIL
    origins: int = 1
    offence: int = 1
    scan: str = ""
    verified: bool = False
    fleet_wide: bool = False

    def info(self) -> dict[str, str]:
        """What the ban keeps about its origin (Ban.info, stored with it): the ban and unban records carry it."""
        # (no "note": a ban record with PS_DETAIL is written on its own, and a catch-up's must be aggregated)
        _, _, _, origin, origin_jail, until, origins, offence, scan, verified, _ = self  # (one unpacking)
        out = {"origin": origin, "origin_jail": origin_jail, "origins": _TEXTS.get(origins) or str(origins),
               "origin_offence": _TEXTS.get(offence) or str(offence)}
        if until is not None:
            out["origin_until"] = f"{until:.3f}"
        if scan:
            out["scan"] = scan
        out["verified"] = "1" if verified else "0"
        return out  # (no "src": PS_SRC of a remote network ban is the network's first address, its default)

    def fields(self) -> dict[str, str]:
        """The origin's fields for a record about this line (a refusal, an unban)."""
        return origin_fields(self.info())


def origin_fields(info: Mapping[str, str]) -> dict[str, str]:
    """PS_ORIGIN, PS_ORIGIN_JAIL, PS_ORIGINS of a remote ban's info (empty for a local ban)."""
    out: dict[str, str] = {}
    add_origin_fields(info, out)
    return out


def add_origin_fields(info: Mapping[str, str], out: dict[str, str]) -> bool:
    """:func:`origin_fields` added to ``out`` (a record being built); False for a local ban's info (nothing)."""
    origin = info.get("origin")
    if not origin:
        return False
    out[R.F_ORIGIN] = origin
    jail, origins = info.get("origin_jail"), info.get("origins")
    if jail:
        out[R.F_ORIGIN_JAIL] = jail
    if origins:
        out[R.F_ORIGINS] = origins
    return True


#: Host and jail names that matched :data:`_NAME` lately (a catch-up repeats a few of them 100,000 times).
_NAMES_SEEN: set[str] = set()


def _name(text: str) -> bool:
    """``text`` is a host or jail name of the bucket's keys (remembered when it is)."""
    if not _NAME.fullmatch(text):
        return False
    if len(_NAMES_SEEN) >= 1024:
        _NAMES_SEEN.clear()
    _NAMES_SEEN.add(text)
    return True




def _count(fields: Mapping[str, str], name: str, low: int = 1) -> int:
    text = fields.get(name, "1") or "1"
    n = _COUNTS.get(text)
    if n is not None and n >= low:
        return n
    if not (text.isascii() and text.isdigit()) or not low <= int(text) <= MAX_COUNT:
        raise ValueError(f"{name} {text[:20]!r} is not a count from {low} to {MAX_COUNT}")
    return int(text)


def parse(fields: Mapping[str, str]) -> Remote:
    """A fleet line's fields (already checked by the record schema) → Remote; ValueError names the bad field."""
    get = fields.get
    if get(_IDENT) != _FLEET:
        raise ValueError(f"{R.F_IDENT} is not {R.FLEET_IDENTIFIER}")
    event = get(_EVENT, "")
    if event != "ban" and event != "unban":
        raise ValueError(f"{R.F_EVENT} {event[:20]!r} is neither ban nor unban")
    # The record schema made PS_SRC a canonical address and PS_SRC_NET a canonical network (no host bits):
    # text compares are enough here, no address is parsed twice.
    src = _canonical(get(_SRC, ""))  # (cached; "" raises)
    target = get(_SRC_NET) or src
    if target != src and target.split("/", 1)[0] != src:
        raise ValueError(f"{R.F_SRC} {src} is not the first address of {R.F_SRC_NET} {target[:50]}")
    origin_jail = get(_ORIGIN_JAIL, "")
    fleet_wide = origin_jail == UNBAN_JAIL or get(_FLEET_FIELD) == "1"
    origin = get(_ORIGIN, "")
    if origin not in _NAMES_SEEN and not _name(origin):
        raise ValueError(f"{R.F_ORIGIN} {origin[:80]!r} is not a host name ([A-Za-z0-9_-], 1 to 64)")
    if not origin_jail and fleet_wide:
        origin_jail = UNBAN_JAIL
    if origin_jail not in _NAMES_SEEN and not _name(origin_jail):
        raise ValueError(f"{R.F_ORIGIN_JAIL} {origin_jail[:80]!r} is not a jail name ([A-Za-z0-9_-], 1 to 64)")
    ban = event == "ban"
    if ban and fleet_wide:
        raise ValueError(f"a fleet-wide line ({R.F_FLEET}=1 or {R.F_ORIGIN_JAIL}={UNBAN_JAIL}) can only unban")
    until: float | None = None
    text = get(_UNTIL, "")
    if text or ban:
        try:
            until = float(text)
        except ValueError:
            raise ValueError(f"{R.F_UNTIL} {text[:40]!r} is not a time (epoch seconds)") from None
        if not _isfinite(until) or until < 0:
            raise ValueError(f"{R.F_UNTIL} {text[:40]!r} is not a time (epoch seconds)")
    # an unban line counts the origins still banning the source after it: 0 when the last one let go
    origins = _count(fields, _ORIGINS, low=1 if ban else 0)
    return Remote(event, target, src, origin, origin_jail, until, origins, _count(fields, _OFFENCE),
                  get(_SCAN, ""), get(_VERIFIED) == "1", fleet_wide)


#: The names parse() reads, as module constants (a catch-up parses 100,000 lines).
_IDENT, _FLEET, _EVENT, _SRC, _SRC_NET, _ORIGIN, _ORIGIN_JAIL, _UNTIL, _ORIGINS, _OFFENCE, _SCAN, _VERIFIED = (
    R.F_IDENT, R.FLEET_IDENTIFIER, R.F_EVENT, R.F_SRC, R.F_SRC_NET, R.F_ORIGIN, R.F_ORIGIN_JAIL, R.F_UNTIL,
    R.F_ORIGINS, R.F_OFFENCE, R.F_SCAN, R.F_VERIFIED)
_FLEET_FIELD = R.F_FLEET
_canonical = R.canonical_address
_isfinite = math.isfinite


def multiplier(multipliers: tuple[float, ...], origins: int) -> float:
    """The multiplier for ``origins`` distinct origins: the n-th one, the last for n or more."""
    if not multipliers:
        return 1.0
    return multipliers[min(max(origins, 1), len(multipliers)) - 1]


def bantime(cfg: JailConfig, until: float, origins: int, now: float) -> float | None:
    """Seconds the fleet jail bans for: (until - now) x multiplier(origins), at most bantime.maxtime (a maxtime of
    -1 caps nothing); None when the origin's ban is already over."""
    left = until - now
    if not math.isfinite(left) or left <= 0:
        return None
    seconds = left * multiplier(cfg.bantime_fleetmultipliers, origins)
    if cfg.bantime_maxtime > 0:
        seconds = min(seconds, cfg.bantime_maxtime)
    return max(seconds, 1.0)


def renews(expires: float, new_expires: float) -> bool:
    """A remote ban of an address the fleet jail already bans replaces that ban when it ends clearly later (more
    origins, or a renewal at the origin). ``expires`` -1 (for ever) is never replaced."""
    return expires >= 0 and new_expires > expires + RENEW_SLACK
