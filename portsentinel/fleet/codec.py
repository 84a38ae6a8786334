"""The bucket's values: compact JSON, at most 512 bytes, strictly validated (docs/fleet.md, "The bucket"). Pure.

A ban:   ``{"v":1,"addr":"203.0.113.7","jail":"portsentinel","until":1764500000.5,"scan":"syn","verified":0,
"offence":2,"at":1764490000.1}``; a fleet-wide unban marker: ``{"v":1,"addr":…,"at":…,"until":…}``.

Decoding takes the key the value was stored under: the value's ``addr`` and ``jail`` must be the key's (the key is
what the server's permissions vouch for). Anything else — unknown or missing fields, duplicate names, wrong types
(a boolean is not a number), NaN, a bad address, an ``until`` in the past or beyond ``now + maxtime`` — raises
:class:`BadValue` with the reason; an ``until`` already past raises :class:`Expired` (a catch-up meets many).
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from typing import Any, NamedTuple

from portsentinel import record as R

from .keys import Key

VERSION = 1
MAX_BYTES = 512
#: How far a value's ``at`` may lie in the future (clocks of the fleet's hosts differ a little).
CLOCK_SKEW = 300.0
MAX_OFFENCE = 1_000_000
_BAN_FIELDS = frozenset({"v", "addr", "jail", "until", "scan", "verified", "offence", "at"})
_UNBAN_FIELDS = frozenset({"v", "addr", "at", "until"})
SCANS = frozenset(R.SCAN_KINDS) | {""}

#: A JSON number as this module writes them (non-negative, no exponent, bounded length): float() of its text is
#: exactly what the JSON parser makes of it, and never overflows.
_NUM = rb"((?:0|[1-9][0-9]{0,11})(?:\.[0-9]{1,9})?)"
#: A ban exactly as :func:`encode_ban` writes it: these field names in this order, once each, no blanks, plain
#: ASCII strings without escapes. A value of this shape holds no duplicate, unknown or missing field and every
#: type is right, so it is read by one match instead of the JSON parser; its values are then checked exactly as
#: the parser's are. Any other value (blanks, another order, escapes, an exponent ...) takes the general path.
BAN_SHAPE = re.compile(rb'\{"v":1,"addr":"([0-9a-f.:/]{1,49})","jail":"([A-Za-z0-9_-]{1,64})","until":' + _NUM
                        + rb',"scan":"([a-z]{0,16})","verified":([01]),"offence":([1-9][0-9]{0,6}),"at":' + _NUM
                        + rb"\}")


class BadValue(ValueError):
    """A value that is never applied; the message is the reason (logged with the origin)."""


class Expired(BadValue):
    """A well-formed value whose ``until`` has passed."""


class Ban(NamedTuple):
    """A remote ban (a NamedTuple: a catch-up makes 100,000 of them, and a frozen dataclass costs 4x to make)."""

    addr: str
    jail: str
    until: float
    scan: str = ""
    verified: int = 0
    offence: int = 1
    at: float = 0.0


class Unban(NamedTuple):
    addr: str
    at: float
    until: float


def _dumps(obj: dict[str, Any]) -> bytes:
    data = json.dumps(obj, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode("ascii")
    if len(data) > MAX_BYTES:
        raise ValueError(f"value of {len(data)} bytes is over {MAX_BYTES}")
    return data


def encode_ban(ban: Ban) -> bytes:
    return _dumps({"v": VERSION, "addr": ban.addr, "jail": ban.jail, "until": round(ban.until, 3),
                   "scan": ban.scan, "verified": ban.verified, "offence": ban.offence, "at": round(ban.at, 3)})


def encode_unban(unban: Unban) -> bytes:
    return _dumps({"v": VERSION, "addr": unban.addr, "at": round(unban.at, 3), "until": round(unban.until, 3)})


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        name = next(n for n, c in Counter(n for n, _ in pairs).items() if c > 1)
        raise BadValue(f"field {name[:40]!r} given twice")
    return out


def _no_constant(name: str) -> Any:
    raise BadValue(f"{name} is not a number")


#: One decoder for every value (building one per call costs more than the decoding).
_DECODER = json.JSONDecoder(object_pairs_hook=_no_duplicates, parse_constant=_no_constant)


def _object(data: bytes, fields: frozenset[str]) -> dict[str, Any]:
    if len(data) > MAX_BYTES:
        raise BadValue(f"value of {len(data)} bytes is over {MAX_BYTES}")
    try:
        obj = _DECODER.decode(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise BadValue("value is not UTF-8") from None
    except json.JSONDecodeError as exc:
        raise BadValue(f"value is not JSON: {exc.msg} at column {exc.colno}") from None
    if not isinstance(obj, dict):
        raise BadValue("value is not a JSON object")
    unknown = sorted(set(obj) - fields)
    if unknown:
        raise BadValue(f"unknown field(s) {', '.join(repr(n[:40]) for n in unknown[:3])}")
    missing = sorted(fields - set(obj))
    if missing:
        raise BadValue(f"missing field(s) {', '.join(missing)}")
    if type(obj["v"]) is not int or obj["v"] != VERSION:
        raise BadValue(f"v: version {str(obj['v'])[:20]!r} is not {VERSION}")
    return obj


#: The largest integer a number field may hold (2**53: every integer up to it is exact as a float).
_MAX_INT = 2**53


def _number(obj: dict[str, Any], name: str) -> float:
    value = obj[name]
    # an integer is bounded before any float conversion: a 400-digit one (it fits in a value's 512 bytes) would
    # raise OverflowError there instead of being refused
    if type(value) is int:
        ok = 0 <= value <= _MAX_INT
    else:
        ok = type(value) is float and math.isfinite(value) and value >= 0
    if not ok:
        raise BadValue(f"{name}: not a finite non-negative number: {str(value)[:40]!r}")
    return float(value)


def _addr(obj: dict[str, Any], key: Key) -> str:
    addr = obj["addr"]
    if type(addr) is not str or addr != key.addr:
        raise BadValue(f"addr: {str(addr)[:60]!r} is not the key's address {key.addr}")
    return addr


def _until(obj: dict[str, Any], now: float, maxtime: float) -> float:
    until = _number(obj, "until")
    if until > now + maxtime:
        raise BadValue(f"until: {until:.0f} is more than {maxtime:.0f} s ahead (maxtime)")
    if until <= now:
        raise Expired(f"until: {until:.0f} has passed")
    return until


def _at(obj: dict[str, Any], now: float) -> float:
    at = _number(obj, "at")
    if at > now + CLOCK_SKEW:
        raise BadValue(f"at: {at:.0f} is in the future")
    return at


def decode_ban(data: bytes, key: Key, now: float, maxtime: float) -> Ban:
    """The ban stored under ``key``, checked against the clock ``now`` and the bound ``maxtime`` (seconds)."""
    m = BAN_SHAPE.fullmatch(data)
    if m is not None:
        return _ban_of_shape(m.groups(), key, now, maxtime)
    obj = _object(data, _BAN_FIELDS)
    addr = _addr(obj, key)
    if obj["jail"] != key.jail:
        raise BadValue(f"jail: {str(obj['jail'])[:70]!r} is not the key's jail {key.jail}")
    scan = obj["scan"]
    if type(scan) is not str or scan not in SCANS:
        raise BadValue(f"scan: unknown scan kind {str(scan)[:20]!r}")
    verified = obj["verified"]
    if type(verified) is not int or verified not in (0, 1):
        raise BadValue(f"verified: must be 0 or 1, not {str(verified)[:20]!r}")
    offence = obj["offence"]
    if type(offence) is not int or not 1 <= offence <= MAX_OFFENCE:
        raise BadValue(f"offence: must be an integer 1..{MAX_OFFENCE}, not {str(offence)[:20]!r}")
    at = _at(obj, now)
    until = _until(obj, now, maxtime)
    return Ban(addr, key.jail, until, scan, verified, offence, at)


def _ban_of_shape(groups: tuple[bytes | Any, ...], key: Key, now: float, maxtime: float) -> Ban:
    """:func:`decode_ban`'s checks on a value of :data:`BAN_SHAPE` (same reasons, same order)."""
    addr_b, jail_b, until_b, scan_b, verified_b, offence_b, at_b = groups
    addr = addr_b.decode("ascii")
    if addr != key.addr:
        raise BadValue(f"addr: {addr[:60]!r} is not the key's address {key.addr}")
    jail = jail_b.decode("ascii")
    if jail != key.jail:
        raise BadValue(f"jail: {jail[:70]!r} is not the key's jail {key.jail}")
    scan = scan_b.decode("ascii")
    if scan not in SCANS:
        raise BadValue(f"scan: unknown scan kind {scan[:20]!r}")
    offence = int(offence_b)
    if offence > MAX_OFFENCE:
        raise BadValue(f"offence: must be an integer 1..{MAX_OFFENCE}, not {offence_b.decode('ascii')[:20]!r}")
    at = float(at_b)
    if at > now + CLOCK_SKEW:
        raise BadValue(f"at: {at:.0f} is in the future")
    until = float(until_b)
    if until > now + maxtime:
        raise BadValue(f"until: {until:.0f} is more than {maxtime:.0f} s ahead (maxtime)")
    if until <= now:
        raise Expired(f"until: {until:.0f} has passed")
    return Ban(addr, jail, until, scan, int(verified_b), offence, at)


def decode_unban(data: bytes, key: Key, now: float, maxtime: float) -> Unban:
    """A fleet-wide unban marker stored under ``key`` (``<host>._unban.<addr>``)."""
    obj = _object(data, _UNBAN_FIELDS)
    addr = _addr(obj, key)
    at = _at(obj, now)
    until = _until(obj, now, maxtime)
    return Unban(addr, at, until)
