"""An address's text as an integer, without an ``ipaddress`` object: the bulk path compares 100,000 network bans
and protected ranges as integers (responder.core.bans, responder.core.guard). Pure.

The canonical text (record.canonical_address's: a dotted quad, or compressed lower-case IPv6 without an embedded
IPv4 part) is read by a few string operations (IPv6: portsentinel.addrtext.v6_int, the C library's inet_pton); any
other text goes through ``ipaddress``, which also raises the ValueError for what is not an address."""

from __future__ import annotations

import ipaddress

from portsentinel.addrtext import v6_int
from portsentinel.record import V4_CANONICAL as _V4  # a dotted quad in canonical form

#: The addresses read lately: one ban reads its address five or six times (never-ban, its network, the book).
_RECENT: dict[str, int] = {}
_RECENT_MAX = 4096


def addr_int(text: str) -> int:
    """The address ``text`` (IPv4 or IPv6) as an integer of its family; ValueError for anything else."""
    value = _RECENT.get(text)
    if value is None:
        value = _read(text)
        if len(_RECENT) >= _RECENT_MAX:
            _RECENT.clear()
        _RECENT[text] = value
    return value


def _read(text: str) -> int:
    if ":" not in text:
        if _V4.fullmatch(text):
            a, b, c, d = text.split(".")
            return (int(a) << 24) | (int(b) << 16) | (int(c) << 8) | int(d)
        return int(ipaddress.IPv4Address(text))
    value = v6_int(text)  # lower-case hex and colons (C's inet_pton); else (upper case, an embedded IPv4 part, a
    return int(ipaddress.IPv6Address(text)) if value is None else value  # zone, garbage) ipaddress, or ValueError


def network_range(net: str) -> tuple[int, int, int]:
    """(IP version, first, last) of an address or a network ``ADDRESS/PREFIX`` without host bits set; ValueError
    for anything else (a bad address or prefix, host bits)."""
    base, slash, plen_text = net.partition("/")
    first = addr_int(base)
    version, bits = (6, 128) if ":" in base else (4, 32)
    if not slash:
        return version, first, first
    if not (plen_text.isascii() and plen_text.isdigit()) or len(plen_text) > 3 or int(plen_text) > bits:
        raise ValueError(f"not a network: {net[:60]!r}")
    host = (1 << (bits - int(plen_text))) - 1
    if first & host:
        raise ValueError(f"{net[:60]!r} has host bits set")
    return version, first, first | host
