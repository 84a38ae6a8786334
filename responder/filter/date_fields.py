"""A date match's named fields → epoch seconds, by fail2ban's rules.

Without a zone the date is local time; without a year it is this year, or last year when that would put it more
than a day ahead of ``now``; a time without a date is today, or yesterday when that is ahead of ``now``. Zones are
``Z``, ``UTC``, ``+0100``, ``-05:30`` or an abbreviation of :data:`ZONES`, optionally with an offset (``CET+1``).

Pure: the clock is passed in.
"""

from __future__ import annotations

import calendar
import datetime as dt
import re
import time
from collections.abc import Mapping

MONTHS = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
FULL_MONTHS = ["january", "february", "march", "april", "may", "june", "july", "august", "september",
               "october", "november", "december"]
ZONE_ABBR = r"[A-Z](?:[A-Z]{2,4})?"
#: Zone abbreviations → minutes east of UTC (fixed offsets, no daylight-saving switch).
ZONES: dict[str, int] = {
    "Z": 0, "UT": 0, "UTC": 0, "GMT": 0, "WET": 0, "WEST": 60, "BST": 60, "CET": 60, "CEST": 120,
    "MET": 60, "MEST": 120, "EET": 120, "EEST": 180, "MSK": 180, "EST": -300, "EDT": -240, "CST": -360,
    "CDT": -300, "MST": -420, "MDT": -360, "PST": -480, "PDT": -420, "AKST": -540, "AKDT": -480,
    "HST": -600, "AST": -240, "ADT": -180, "NST": -210, "NDT": -150, "JST": 540, "KST": 540,
    "HKT": 480, "SGT": 480, "AWST": 480, "ACST": 570, "ACDT": 630, "AEST": 600, "AEDT": 660,
    "NZST": 720, "NZDT": 780, "SAST": 120, "WAT": 60, "CAT": 120, "EAT": 180, "PKT": 300, "ICT": 420,
    "WIB": 420,
}


def zone_offset(z: str) -> int:
    """``Z``/``UTC``/``+0100``/``-05:30``/``CET+1``… → minutes east of UTC; KeyError when unknown."""
    m = re.fullmatch(rf"({ZONE_ABBR})?([+-][01]\d(?::?\d{{2}})?)?", z)
    if m is None:
        raise ValueError(f"unknown time zone {z!r}")
    abbr, off = m.groups()
    base = ZONES[abbr] if abbr else 0
    if not off:
        return base
    sign = -1 if off[0] == "-" else 1
    if len(off) <= 3:
        return base + int(off) * 60
    minutes = off[4:6] if off[3] == ":" else off[3:5]
    return base + sign * (int(off[1:3]) * 60 + int(minutes))


def strptime_groups(g: Mapping[str, str | None], now: float) -> float:
    """The named date groups of a match → epoch seconds (fail2ban's rules for a missing year or date)."""
    year = month = day = offset = julian = None
    hour = minute = second = 0
    for key, val in g.items():
        if val is None:
            continue
        if key == "y":
            year = int(val) + 2000
        elif key == "Y":
            year = int(val)
        elif key == "m":
            month = int(val)
        elif key == "b":
            month = MONTHS.index(val.lower()) + 1
        elif key == "B":
            month = FULL_MONTHS.index(val.lower()) + 1
        elif key == "d":
            day = int(val)
        elif key == "H":
            hour = int(val)
        elif key == "I":
            hour = int(val) % 12 + (12 if (g.get("p") or "").lower() == "pm" else 0)
        elif key == "M":
            minute = int(val)
        elif key == "S":
            second = int(val)
        elif key == "j":
            julian = int(val)
        elif key in ("z", "Z"):
            offset = 0 if val in ("Z", "UTC", "GMT") else zone_offset(val)
    now_dt = dt.datetime.fromtimestamp(now)
    assume_year = year is None
    if year is None:
        year = now_dt.year
    if (month is None or day is None) and julian is not None:
        d = dt.date(year, 1, 1) + dt.timedelta(days=julian - 1)
        month, day = d.month, d.day
    assume_today = month is None and day is None
    if month is None or day is None:
        month, day = (now_dt.month, now_dt.day) if assume_today else (month or 1, day or 1)
    result = dt.datetime(year, month, day, hour, minute, second)
    if offset is not None:
        result -= dt.timedelta(minutes=offset)
    if assume_today and result > now_dt:
        result -= dt.timedelta(days=1)
    if assume_year and result > now_dt + dt.timedelta(days=1):
        result = result.replace(year=year - 1)
    if offset is not None:
        return float(calendar.timegm(result.timetuple()))
    return time.mktime(result.timetuple())
