"""Is this text already an address's canonical text? Answered without an ``ipaddress`` object for the usual case
(portsentinel.record's canonical_address and canonical_network: a fleet catch-up of 100,000 IPv6 /64 bans checks
each one two or three times; ipaddress parses and prints one in ~10 µs). Pure, imports nothing of the project.

Only lower-case hexadecimal and colons are read here; anything else (upper case, an embedded IPv4 part, a zone,
garbage) and every IPv4-mapped address (its canonical text is the IPv4 address) answer None, and the caller takes
the ipaddress way, which also raises the ValueError for what is not an address. The text is read and printed by
the C library's inet_pton/inet_ntop (pure conversions, ~0.7 µs where the same in Python took ~3.5).
"""

from __future__ import annotations

from socket import AF_INET6, inet_ntop, inet_pton  # (pure conversions in C, no I/O)

_HEX_COLON = frozenset("0123456789abcdef:")


def v6_int(text: str) -> int | None:
    """The integer of the IPv6 address ``text`` when it is written with lower-case hex digits and colons only;
    None for any other text (the caller asks ipaddress, which also raises the ValueError)."""
    if len(text) > 39 or not _HEX_COLON.issuperset(text):
        return None
    try:
        return int.from_bytes(inet_pton(AF_INET6, text), "big")
    except OSError:
        return None


def v6_canonical(text: str) -> int | None:
    """The integer of ``text`` when it is exactly the canonical text of an IPv6 address that is not IPv4-mapped
    (RFC 5952, as ``str(ipaddress.IPv6Address)`` prints it: the C library's inet_ntop prints the same, which the
    tests check against ipaddress); else None."""
    if len(text) > 39 or not _HEX_COLON.issuperset(text):
        return None
    try:
        packed = inet_pton(AF_INET6, text)
    except OSError:
        return None
    if inet_ntop(AF_INET6, packed) != text:
        return None  # another spelling (leading zeros, the "::" elsewhere or missing)
    value = int.from_bytes(packed, "big")
    if value >> 32 == 0xFFFF:
        return None  # IPv4-mapped: its canonical text is the IPv4 address
    return value


def network_canonical(text: str) -> bool:
    """``text`` is exactly the canonical text of an IPv6 network ``ADDRESS/PREFIX`` (prefix 0..127 in decimal
    without a leading zero, no host bits set, the address not IPv4-mapped); False also when it is not certain."""
    base, slash, plen = text.partition("/")
    if not slash or not plen.isascii() or not plen.isdigit() or len(plen) > 3 or (plen[0] == "0" and plen != "0"):
        return False
    bits = int(plen)
    value = v6_canonical(base)
    return value is not None and bits < 128 and not value & ((1 << (128 - bits)) - 1)
