"""The applier's lines as records for the responder's ``[fleet]`` jail (docs/fleet.md, "Applying"). Pure.

A network ban keeps ``PS_SRC`` an address (the network's first) and names the network in ``PS_SRC_NET``, as the
responder's own records do, so ``journalctl PS_SRC=…`` and the record schema's checks hold for both.

Every value comes from a line the applier built from a validated key and value (canonical address, names in the
bucket's grammar, numbers), so the record is made without running the schema's checks again (a catch-up writes
100,000 of them); the unit tests check that what this makes passes ``record.validate``. :func:`to_json_line` writes
the same record's JSON line directly (``record.to_json_line(to_record(line, now))``, byte for byte, as the unit
tests check), without the record and the general JSON encoder in between.
"""

from __future__ import annotations

from json.encoder import encode_basestring_ascii as _quote

from portsentinel import record as R

from .applier import Line


def to_record(line: Line, now: float) -> R.Record:
    return R.Record(_fields(line, now))


def _ban_message(line: Line, now: float) -> str:
    left = max(0, round(line.until - now))
    return (f"fleet: {line.addr} banned by {line.origin} (jail {line.origin_jail}) for {left}s more; "
            f"{line.origins} origin(s) ban it")


def _fields(line: Line, now: float) -> dict[str, str]:
    src = line.addr.split("/", 1)[0]
    if line.event == "ban":
        message = _ban_message(line, now)
        event = R.Event.BAN
    elif line.origin_jail.startswith("_"):
        message = f"fleet: {line.addr} unbanned fleet-wide by {line.origin}"
        event = R.Event.UNBAN
    else:
        message = f"fleet: {line.addr} unbanned by {line.origin} (jail {line.origin_jail})"
        event = R.Event.UNBAN
    fields = {
        R.F_IDENT: R.FLEET_IDENTIFIER,
        R.F_MESSAGE: message,
        R.F_MSGID: R.MESSAGE_IDS[event],
        R.F_PRIORITY: str(R.PRIORITY_NOTICE),
        R.F_EVENT: event.value,
        R.F_SRC: src,
        R.F_ORIGIN: line.origin,
        R.F_ORIGIN_JAIL: line.origin_jail,
        R.F_UNTIL: f"{line.until:.3f}",
        R.F_VERIFIED: str(line.verified),
        R.F_OFFENCE: str(line.offence),
        R.F_ORIGINS: str(line.origins),
        R.F_TIME: f"{now:.6f}",
    }
    if "/" in line.addr:
        fields[R.F_SRC_NET] = line.addr
    if line.scan:
        fields[R.F_SCAN] = line.scan
    return fields


#: Every field a line may hold, in ``record.to_json_line``'s order (sorted), with its quoted name.
_ORDER = tuple((name, _quote(name) + ":") for name in sorted(
    (R.F_IDENT, R.F_MESSAGE, R.F_MSGID, R.F_PRIORITY, R.F_EVENT, R.F_SRC, R.F_SRC_NET, R.F_ORIGIN, R.F_ORIGIN_JAIL,
     R.F_UNTIL, R.F_VERIFIED, R.F_OFFENCE, R.F_ORIGINS, R.F_TIME, R.F_SCAN)))


_BAN_CONST = (f'"MESSAGE_ID":{_quote(R.MESSAGE_IDS[R.Event.BAN])},"PRIORITY":{_quote(str(R.PRIORITY_NOTICE))},'
              f'"PS_EVENT":{_quote(R.Event.BAN.value)},')
_IDENT = f'"SYSLOG_IDENTIFIER":{_quote(R.FLEET_IDENTIFIER)}}}\n'


def to_json_line(line: Line, now: float) -> str:
    """``record.to_json_line(to_record(line, now))``, written directly (a catch-up writes 100,000 lines): a ban of
    an address by one template, anything else field by field in the sorted order."""
    if line.event == "ban" and "/" not in line.addr:
        scan = f',"PS_SCAN":{_quote(line.scan)}' if line.scan else ""
        return (f'{{"MESSAGE":{_quote(_ban_message(line, now))},{_BAN_CONST}"PS_OFFENCE":"{line.offence:d}",'
                f'"PS_ORIGIN":{_quote(line.origin)},"PS_ORIGINS":"{line.origins:d}",'
                f'"PS_ORIGIN_JAIL":{_quote(line.origin_jail)}{scan},"PS_SRC":{_quote(line.addr)},'
                f'"PS_TIME":"{now:.6f}","PS_UNTIL":"{line.until:.3f}","PS_VERIFIED":"{line.verified:d}",{_IDENT}')
    fields = _fields(line, now)
    return "{" + ",".join([key + _quote(fields[name]) for name, key in _ORDER if name in fields]) + "}\n"


def json_lines(lines: list[Line], now: float) -> list[str]:
    """``[to_json_line(line, now) for line in lines]``, a batch at once: the time's text made once, each ban of an
    address by the template with the line's fields unpacked in one step (a catch-up writes 100,000). Names that
    JSON writes as they are (the bucket's grammar guarantees it; checked once a batch per name) and canonical
    addresses go in without the quoting function."""
    stamp = f'"PS_TIME":"{now:.6f}",'
    plain: dict[str, bool] = {}  # origin, jail and scan names: written as they are?
    out: list[str] = []
    add = out.append
    for line in lines:
        event, addr, origin, jail, until, origins, scan, verified, offence = line
        if event != "ban" or "/" in addr:
            add(to_json_line(line, now))
            continue
        ok = plain.get(origin)
        if ok is None:
            ok = plain[origin] = _quote(origin)[1:-1] == origin
        if ok:
            ok = plain.get(jail)
            if ok is None:
                ok = plain[jail] = _quote(jail)[1:-1] == jail
        if ok and scan:
            ok = plain.get(scan)
            if ok is None:
                ok = plain[scan] = _quote(scan)[1:-1] == scan
        if not ok or not _ADDR_CHARS.issuperset(addr):
            add(to_json_line(line, now))
            continue
        left = max(0, round(until - now))
        scan_field = f',"PS_SCAN":"{scan}"' if scan else ""
        add(f'{{"MESSAGE":"fleet: {addr} banned by {origin} (jail {jail}) for {left}s more; {origins} origin(s) ban '
            f'it",{_BAN_CONST}"PS_OFFENCE":"{offence:d}","PS_ORIGIN":"{origin}","PS_ORIGINS":"{origins:d}",'
            f'"PS_ORIGIN_JAIL":"{jail}"{scan_field},"PS_SRC":"{addr}",{stamp}"PS_UNTIL":"{until:.3f}",'
            f'"PS_VERIFIED":"{verified:d}",{_IDENT}')
    return out


#: The characters of a canonical address (IPv4 dotted quad, IPv6 hex and colons).
_ADDR_CHARS = frozenset("0123456789abcdef.:")
