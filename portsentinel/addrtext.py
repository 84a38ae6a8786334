"""Is this text already an address's canonical text? Answered without an ``ipaddress`` object for the usual case
(portsentinel.record's canonical_address and canonical_network: a fleet catch-up of 100,000 IPv6 /64 bans checks
each one two or three times; ipaddress parses and prints one in ~10 µs). Pure, imports nothing of the project.

Only lower-case hexadecimal and colons are read here; anything else (upper case, an embedded IPv4 part, a zone,
garbage) and every IPv4-mapped address (its canonical text is the IPv4 address) answer None, and the caller takes
the ipaddress way, which also raises the ValueError for what is not an address.
"""

from __future__ import annotations

_HEX_COLON = frozenset("0123456789abcdef:")


def v6_canonical(text: str) -> int | None:
    """The integer of ``text`` when it is exactly the canonical text of an IPv6 address that is not IPv4-mapped
    (RFC 5952, as ``str(ipaddress.IPv6Address)`` prints it); else None."""
    if len(text) > 39 or not _HEX_COLON.issuperset(text):
        return None
    head, sep, tail = text.partition("::")
    left = head.split(":") if head else []
    right = tail.split(":") if tail else []
    fill = 8 - len(left) - len(right) if sep else 0
    if (sep and (fill < 2 or "::" in tail)) or (not sep and len(left) != 8):
        return None  # (a "::" for one zero group is not canonical)
    value = 0
    for group in (*left, *("0" * fill), *right):
        if not 1 <= len(group) <= 4 or (group[0] == "0" and len(group) > 1):
            return None  # empty, too long, or a leading zero
        value = (value << 16) | int(group, 16)
    if value >> 32 == 0xFFFF:
        return None  # IPv4-mapped: its canonical text is the IPv4 address
    if _zero_run(value) != ((len(left), fill) if sep else (0, 0)):
        return None  # the "::" is not where the canonical text has it (the longest run of zeros, the first one)
    return value


def _zero_run(value: int) -> tuple[int, int]:
    """(start, length) of the longest run of two or more zero groups (the first of equal ones); (0, 0): none."""
    best_start, best_len, start, length = 0, 0, 0, 0
    for i in range(8):
        if (value >> (112 - 16 * i)) & 0xFFFF:
            length = 0
            continue
        if length == 0:
            start = i
        length += 1
        if length > best_len:
            best_start, best_len = start, length
    return (best_start, best_len) if best_len >= 2 else (0, 0)


def network_canonical(text: str) -> bool:
    """``text`` is exactly the canonical text of an IPv6 network ``ADDRESS/PREFIX`` (prefix 0..127 in decimal
    without a leading zero, no host bits set, the address not IPv4-mapped); False also when it is not certain."""
    base, slash, plen = text.partition("/")
    if not slash or not plen.isascii() or not plen.isdigit() or len(plen) > 3 or (plen[0] == "0" and plen != "0"):
        return False
    bits = int(plen)
    value = v6_canonical(base)
    return value is not None and bits < 128 and not value & ((1 << (128 - bits)) - 1)
