"""What a ban's decision records carry for the fleet (docs/records.md, docs/fleet.md). Pure.

A jail with ``share = true`` marks its bans (``Ban.info["share"]``); their ban and unban records then carry
PS_SHARE=1 with what the fleet daemon publishes: PS_UNTIL (when the ban ends, epoch seconds; absent for a ban
for ever), PS_OFFENCE (this host's offence count), PS_SCAN, PS_VERIFIED, PS_MODE. A remote ban (the fleet jail)
carries its origin instead: PS_ORIGIN, PS_ORIGIN_JAIL, PS_ORIGINS, PS_UNTIL (when it ends here).
"""

from __future__ import annotations

from portsentinel import record as R
from portsentinel.responder.core.bans import FOREVER, Ban
from portsentinel.responder.core.remote import add_origin_fields

#: Ban.info keys of a shared ban.
SHARE = "share"


def record_fields(ban: Ban) -> dict[str, str]:
    """The fleet's fields of a ban or unban record of ``ban`` (empty for a ban neither shared nor remote)."""
    out: dict[str, str] = {}
    add_record_fields(ban, out)
    return out


def add_record_fields(ban: Ban, out: dict[str, str]) -> None:
    """:func:`record_fields` of ``ban`` added to ``out`` (a record being built: no dict of their own)."""
    info = ban.info
    if not info:
        return
    if info.get(SHARE) == "1":
        out[R.F_SHARE] = "1"
        out[R.F_OFFENCE] = str(max(1, ban.count))
        for key, name in (("scan", R.F_SCAN), ("verified", R.F_VERIFIED), ("mode", R.F_MODE)):
            if info.get(key):
                out[name] = info[key]
    elif not add_origin_fields(info, out):
        return
    if ban.expires != FOREVER:
        out[R.F_UNTIL] = f"{ban.expires:.3f}"
