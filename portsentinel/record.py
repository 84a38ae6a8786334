"""The record schema shared by the detector and the responder, and nothing else.

A record is a flat mapping of journald field names to string values (docs/records.md). The same names are used
in the JSON-lines transport: one JSON object per line. This module does no I/O.
"""

from __future__ import annotations

import functools
import ipaddress
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum

from portsentinel.addrtext import network_canonical, v6_canonical

DETECTOR_IDENTIFIER = "portsentinel-detector"
RESPONDER_IDENTIFIER = "portsentinel-responder"
#: The fleet daemon (issue 13): its remote ban/unban lines and its own lifecycle records.
FLEET_IDENTIFIER = "portsentinel-fleet"


class Event(StrEnum):
    """Kinds of record (PS_EVENT)."""

    SCAN = "scan"
    SUMMARY = "summary"
    LISTEN = "listen"
    START = "start"
    STOP = "stop"
    OVERLOAD = "overload"
    BAN = "ban"
    UNBAN = "unban"
    IGNORED = "ignored"
    FAILED = "failed"


#: One MESSAGE_ID per event kind, so ``journalctl MESSAGE_ID=…`` and a catalog can explain it.
MESSAGE_IDS: dict[Event, str] = {
    Event.SCAN: "5f2a4c1e8b7d4e0a9c3b6d1f2e8a7b01",
    Event.SUMMARY: "5f2a4c1e8b7d4e0a9c3b6d1f2e8a7b02",
    Event.LISTEN: "5f2a4c1e8b7d4e0a9c3b6d1f2e8a7b03",
    Event.START: "5f2a4c1e8b7d4e0a9c3b6d1f2e8a7b04",
    Event.STOP: "5f2a4c1e8b7d4e0a9c3b6d1f2e8a7b05",
    Event.OVERLOAD: "5f2a4c1e8b7d4e0a9c3b6d1f2e8a7b06",
    Event.BAN: "5f2a4c1e8b7d4e0a9c3b6d1f2e8a7b11",
    Event.UNBAN: "5f2a4c1e8b7d4e0a9c3b6d1f2e8a7b12",
    Event.IGNORED: "5f2a4c1e8b7d4e0a9c3b6d1f2e8a7b13",
    Event.FAILED: "5f2a4c1e8b7d4e0a9c3b6d1f2e8a7b14",
}

PRIORITY_WARNING = 4
PRIORITY_NOTICE = 5
PRIORITY_INFO = 6

SCAN_KINDS = ("syn", "connect", "fin", "null", "xmas", "ack", "maimon", "udp", "other",
              "init", "cookie", "proto")
MODES = ("tcp", "udp", "stcp", "sudp", "atcp", "audp", "ssctp", "asctp", "aproto")
#: "ip" is the IP protocol sentry's (nmap -sO): its PS_PORT is the IP protocol number, 0..255.
PROTOS = ("tcp", "udp", "sctp", "ip")

# Field names (docs/records.md).
F_IDENT = "SYSLOG_IDENTIFIER"
F_MSGID = "MESSAGE_ID"
F_PRIORITY = "PRIORITY"
F_MESSAGE = "MESSAGE"
F_EVENT = "PS_EVENT"
F_SRC = "PS_SRC"
F_DST = "PS_DST"
F_IFACE = "PS_IFACE"
F_PROTO = "PS_PROTO"
F_PORT = "PS_PORT"
F_SCAN = "PS_SCAN"
F_MODE = "PS_MODE"
F_VERIFIED = "PS_VERIFIED"
F_HITS = "PS_HITS"
F_PORTS = "PS_PORTS"
F_WINDOW = "PS_WINDOW"
F_SRC_NAME = "PS_SRC_NAME"
#: The network a source is tracked and banned by (IPv6 /64 by default), only when it is wider than the address.
F_SRC_NET = "PS_SRC_NET"
F_TIME = "PS_TIME"
F_JAIL = "PS_JAIL"
F_ACTION = "PS_ACTION"
F_BANTIME = "PS_BANTIME"
F_STATUS = "PS_STATUS"
F_STDERR = "PS_STDERR"
F_DETAIL = "PS_DETAIL"
#: How many bans one aggregated ban record stands for (its PS_SRC repeats once per address; docs/records.md).
F_BATCH = "PS_BATCH"
# The fleet (docs/fleet.md): a responder decision to share, and a remote ban's origin and figures.
#: 1 on a responder decision whose jail shares its bans (``share = true``): the fleet daemon publishes it.
F_SHARE = "PS_SHARE"
#: The host a remote ban came from (taken from the bucket's key, never from the value), and its jail there.
F_ORIGIN = "PS_ORIGIN"
F_ORIGIN_JAIL = "PS_ORIGIN_JAIL"
#: When the origin's ban ends: epoch seconds (a decimal, may have a fraction).
F_UNTIL = "PS_UNTIL"
#: The origin's offence count for this source; the number of distinct trusted origins banning it now.
F_OFFENCE = "PS_OFFENCE"
F_ORIGINS = "PS_ORIGINS"
#: 1 on a fleet-wide unban: the client's (``portsentinel unban --fleet``), which the fleet daemon turns into the
#: bucket's unban marker, and the fleet file's line that lifts the address from every local jail.
F_FLEET = "PS_FLEET"

#: Fields whose value must be a decimal integer when present.
INT_FIELDS = frozenset({F_PRIORITY, F_PORT, F_HITS, F_PORTS, F_WINDOW, F_BANTIME, F_STATUS, F_OFFENCE, F_ORIGINS})
#: Fields whose value must be an IP address when present.
ADDR_FIELDS = frozenset({F_SRC, F_DST})

#: Journald trusted fields (start with an underscore; a client cannot set them).
TRUSTED_UID = "_UID"
TRUSTED_UNIT = "_SYSTEMD_UNIT"

_EVENT_VALUES = frozenset(e.value for e in Event)
#: One decoder for every JSON line (json.loads checks its keyword arguments and picks the decoder per call).
_loads = json.JSONDecoder().decode
#: The longest value and the most fields of one record (public for the bulk screen, portsentinel.record_screen).
MAX_VALUE = _MAX_VALUE = 4096
MAX_FIELDS = _MAX_FIELDS = 64


class RecordError(ValueError):
    """A record that does not follow the schema. ``field`` names the offending field."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


#: A dotted quad in canonical form (no leading zeros, each part ≤ 255): already what canonical_address returns.
_V4_CANONICAL = re.compile(r"(?:(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\.){3}"
                           r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])")
#: The canonical text of an IPv4 address (dotted decimal, no leading zeros), as a pattern to build on.
V4_CANONICAL = _V4_CANONICAL


#: The only characters a plain address may hold: no zone id (``%eth0``), blank, bracket or control character.
_ADDRESS_CHARS = frozenset("0123456789abcdefABCDEF.:")


@functools.lru_cache(maxsize=32768)  # a batch of up to 16,384 entries reads each address three times
def canonical_address(text: str) -> str:
    """The canonical text of a plain IPv4 or IPv6 address; ValueError for anything else.

    IPv4-mapped IPv6 (``::ffff:127.0.0.1``) becomes the IPv4 address, so every check (loopback, own address,
    ignoreip) and every action sees one form. An IPv6 zone id (``fe80::1%eth0``), surrounding blanks, brackets
    or any other character are refused: the result is only digits, hex letters, ``.`` and ``:``.
    """
    if _V4_CANONICAL.fullmatch(text) or v6_canonical(text) is not None:  # (already canonical: no parsing)
        return text
    if not text or len(text) > 45 or not _ADDRESS_CHARS.issuperset(text):
        raise ValueError(f"not a plain IPv4 or IPv6 address: {text[:60]!r}")
    addr = ipaddress.ip_address(text)
    if isinstance(addr, ipaddress.IPv6Address):
        if addr.scope_id is not None:  # unreachable with the character check; kept as the contract
            raise ValueError(f"an IPv6 zone id is not part of an address: {text[:60]!r}")
        if addr.ipv4_mapped is not None:
            return str(addr.ipv4_mapped)
    return str(addr)


@functools.lru_cache(maxsize=32768)  # a network ban's text is read by the record check and by the nft batch
def canonical_network(text: str) -> str:
    """Canonical text of an address or a network (``2001:db8:1:2::/64``): an address is canonical_address's
    text, a network is such an address, ``/`` and a decimal prefix length, with no host bits set; a full-length
    network (/32, /128) is its address. ValueError otherwise. Used where a ban may name a network (nft elements,
    templates), never for PS_SRC."""
    if "/" not in text:
        return canonical_address(text)
    if network_canonical(text):  # an IPv6 network's canonical text already (a fleet catch-up has 100,000)
        return text
    base, _, plen = text.partition("/")
    if not plen.isdigit() or len(plen) > 3 or not plen.isascii():
        raise ValueError(f"not an address or network: {text[:60]!r}")
    net = ipaddress.ip_network(f"{canonical_address(base)}/{int(plen)}", strict=True)
    if net.prefixlen == net.max_prefixlen:
        return str(net.network_address)
    return str(net)


def source_network(addr: str, prefix4: int = 32, prefix6: int = 64) -> str:
    """The network of ``prefix4`` / ``prefix6`` bits that holds the canonical address ``addr``, as canonical
    text; the address itself when the prefix is the full length. ValueError for a bad address or prefix."""
    if prefix4 == 32 and ":" not in addr:  # IPv4 per address, the default: canonical_address's fast path
        return canonical_address(addr)
    ip = ipaddress.ip_address(canonical_address(addr))
    plen = prefix4 if ip.version == 4 else prefix6
    if not 0 < plen <= ip.max_prefixlen:
        raise ValueError(f"prefix /{plen} out of range for IPv{ip.version}")
    if plen == ip.max_prefixlen:
        return str(ip)
    return str(ipaddress.ip_network(f"{ip}/{plen}", strict=False))


def record_time(fields: Mapping[str, str], *, journal_first: bool = False) -> float | None:
    """When a record was made: PS_TIME (the decision), else journald's receive time (__REALTIME_TIMESTAMP, µs);
    ``journal_first`` the other way round (a filter dates an entry by the journal, as fail2ban does)."""
    order = (("__REALTIME_TIMESTAMP", 1e-6), (F_TIME, 1.0))
    for name, scale in (order if journal_first else order[::-1]):
        text = fields.get(name)
        if text:
            try:
                return float(text) * scale
            except ValueError:
                continue
    return None


@dataclass(frozen=True)
class Record:
    """A validated record: field name → string value."""

    fields: Mapping[str, str]

    def get(self, name: str, default: str = "") -> str:
        return self.fields.get(name, default)

    @property
    def event(self) -> str:
        return self.fields.get(F_EVENT, "")

    @property
    def src(self) -> str:
        return self.fields.get(F_SRC, "")


_NAME_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_")


@functools.lru_cache(maxsize=1024)
def _field_name_ok(name: str) -> bool:
    # journald: upper-case letters, digits and underscore; must not start with a digit.
    return bool(name) and len(name) <= 64 and not name[0].isdigit() and all(c in _NAME_CHARS for c in name)


def _int_field(name: str, value: str) -> str:
    if value.isdigit() and value.isascii() and value[0] != "0" and len(value) < 10 and name != F_PORT:
        return value  # already the canonical text of a small positive integer
    try:
        number = int(value, 10)
    except ValueError:
        raise RecordError(name, f"not an integer: {value!r}") from None
    if number < -1:
        raise RecordError(name, f"negative: {value!r}")
    if name == F_PORT and not 0 <= number <= 65535:
        raise RecordError(name, f"port out of range: {value!r}")
    return str(number)


def _addr_field(name: str, value: str) -> str:
    try:
        return canonical_address(value)
    except ValueError:
        raise RecordError(name, f"not an IP address: {value!r}") from None


def _net_field(name: str, value: str) -> str:
    try:
        if "/" not in value:
            raise ValueError
        return canonical_network(value)
    except ValueError:
        raise RecordError(name, f"not a network (ADDRESS/PREFIX, no host bits): {value!r}") from None


def _one_of(allowed: frozenset[str] | tuple[str, ...], what: str) -> Callable[[str, str], str]:
    def check(name: str, value: str) -> str:
        if value not in allowed:
            raise RecordError(name, f"{what} {value!r}")
        return value

    return check


#: Per-field checks; a field without one is free text.
_CHECKS: dict[str, Callable[[str, str], str]] = {
    **{f: _int_field for f in INT_FIELDS},
    **{f: _addr_field for f in ADDR_FIELDS},
    F_SRC_NET: _net_field,
    F_EVENT: _one_of(_EVENT_VALUES, "unknown event"),
    F_SCAN: _one_of(SCAN_KINDS, "unknown scan kind"),
    F_MODE: _one_of(MODES, "unknown mode"),
    F_PROTO: _one_of(PROTOS, "unknown protocol"),
    F_VERIFIED: _one_of(("0", "1"), "must be 0 or 1, not"),
    F_SHARE: _one_of(("0", "1"), "must be 0 or 1, not"),
    F_FLEET: _one_of(("0", "1"), "must be 0 or 1, not"),
}


#: Field names already found valid (no underscore) → their check (None: free text). A record's dozen names are
#: then one dict look-up each, not a grammar check; bounded, so a writer inventing names cannot grow it.
_KNOWN: dict[str, Callable[[str, str], str] | None] = {}
_KNOWN_MAX = 4096


def validate(fields: Mapping[str, object], *, allow_trusted: bool = False) -> Record:
    """Check ``fields`` against the schema and return a Record of strings.

    Unknown PS_* fields are kept (forward compatible), but every known field is checked: addresses parse
    and are canonicalised, integers are integers, enums are in range. ``allow_trusted`` keeps journald's
    underscore fields (only for records read back from the journal).
    """
    return Record(_checked(fields, allow_trusted))


def _checked(fields: Mapping[str, object], allow_trusted: bool = False) -> dict[str, str]:
    """:func:`validate`'s work: a new dict of the checked (canonical) fields."""
    if len(fields) > _MAX_FIELDS:
        raise RecordError("*", f"too many fields ({len(fields)} > {_MAX_FIELDS})")
    out: dict[str, str] = {}
    known = _KNOWN
    for name, raw in fields.items():
        check = known[name] if type(name) is str and name in known else _name_check(name, allow_trusted)
        if type(raw) is str:
            value = raw
        elif isinstance(raw, int) and not isinstance(raw, bool):
            value = str(raw)
        else:
            raise RecordError(name, f"value must be a string or integer, not {type(raw).__name__}")
        if len(value) > _MAX_VALUE:
            raise RecordError(name, f"value longer than {_MAX_VALUE} characters")
        out[name] = value if check is None else check(name, value)
    if F_MESSAGE not in out:
        raise RecordError(F_MESSAGE, "missing")
    return out


def field_check(name: str) -> Callable[[str, str], str] | None:
    """The value check of the field ``name`` in a writer's record (None: free text); RecordError when the name
    is not allowed there."""
    return _name_check(name, False)


def _name_check(name: object, allow_trusted: bool) -> Callable[[str, str], str] | None:
    """The check of a field name not known yet (RecordError when the name is not allowed); a valid name without
    an underscore is remembered in :data:`_KNOWN`."""
    if type(name) is not str:
        raise RecordError(repr(name), "field name is not a string")
    if name[:1] == "_":
        if not allow_trusted:
            raise RecordError(name, "trusted journald fields cannot be set by a writer")
        if not _field_name_ok(name.lstrip("_")):
            raise RecordError(name, "not a valid journald field name")
        return _CHECKS.get(name)
    if not _field_name_ok(name):
        raise RecordError(name, "not a valid journald field name")
    check = _CHECKS.get(name)
    if len(_KNOWN) < _KNOWN_MAX:
        _KNOWN[name] = check
    return check


def to_json_line(record: Record) -> str:
    """One JSON object, keys sorted, no newline inside, ending in a newline."""
    return json.dumps(dict(record.fields), sort_keys=True, ensure_ascii=True, separators=(",", ":")) + "\n"


def from_json_line(line: str) -> Record:
    """Parse and validate one JSON-lines record; raises RecordError naming the field."""
    return Record(json_line_fields(line))


def json_line_fields(line: str) -> dict[str, str]:
    """The fields of one JSON-lines record, parsed and validated as :func:`from_json_line` does, as a new dict
    of the caller's own (a reader that keeps the fields needs no copy); raises RecordError naming the field."""
    try:
        obj = _loads(line)
    except json.JSONDecodeError as exc:
        raise RecordError("*", f"not JSON: {exc.msg} at column {exc.colno}") from None
    if not isinstance(obj, dict):
        raise RecordError("*", "a record must be a JSON object")
    return _checked(obj)


def to_journal_fields(record: Record) -> dict[str, str]:
    """Fields as keyword arguments for ``systemd.journal.send`` (MESSAGE passed separately by the sink)."""
    return dict(record.fields)


_HOST_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.")


def safe_hostname(name: str) -> bool:
    """True for a plain DNS name that cannot be mistaken for an address (PTR text is attacker-controlled)."""
    if not name or len(name) > 253 or not set(name) <= _HOST_CHARS or ".." in name:
        return False
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return not name.replace(".", "").isdigit()
    return False


def alert_message(scan: str, src: str, proto: str, port: int, name: str = "") -> str:
    """PortSentry-compatible wording, so old log habits keep working."""
    label = {
        "syn": "SYN/Normal",
        "connect": "Connect",
        "fin": "FIN",
        "null": "NULL",
        "xmas": "XMAS",
        "ack": "ACK",
        "maimon": "Maimon (FIN/ACK)",
        "udp": "UDP",
        "other": "Unknown Type",
        "init": "INIT",
        "cookie": "COOKIE-ECHO",
        "proto": "IP protocol",
    }.get(scan, "Unknown Type")
    host = name if safe_hostname(name) else src
    if proto == "ip":  # nmap -sO: the "port" is the IP protocol number
        return f"attackalert: IP protocol scan from host: {host}/{src} to IP protocol: {port}"
    kind = f"{proto.upper()} {label}" if proto in ("tcp", "sctp") else label
    return f"attackalert: {kind} scan from host: {host}/{src} to {proto.upper()} port: {port}"
