"""Network-layer bytes → probe. The per-packet hot path: no objects beyond one small tuple.

Input starts at the IP header (AF_PACKET SOCK_DGRAM, "cooked" capture), so the same code serves every
interface type. Anything that is not a well-formed first fragment of a TCP or UDP packet is reported as a
``Bad`` reason, which the caller counts.
"""

from __future__ import annotations

from enum import IntEnum
from typing import NamedTuple

TCP = 6
UDP = 17
_HOPOPTS, _ROUTING, _FRAGMENT, _DSTOPTS = 0, 43, 44, 60
_MAX_EXT_HEADERS = 8


class Bad(IntEnum):
    """Why a packet was skipped."""

    TRUNCATED = 1
    NOT_IP = 2
    BAD_HEADER = 3
    FRAGMENT = 4
    EXT_HEADERS = 5
    OTHER_PROTO = 6


class Probe(NamedTuple):
    """What the detector needs of one packet. Addresses are raw bytes (4 or 16)."""

    src: bytes
    dst: bytes
    proto: int  # 6 or 17
    port: int  # destination port
    flags: int  # TCP flags byte; 0 for UDP


def parse(buf: bytes | bytearray | memoryview, start: int = 0, length: int | None = None) -> Probe | Bad:
    """Parse one packet from ``buf[start:start+length]``; never raises on any input."""
    end = len(buf) if length is None else min(len(buf), start + length)
    n = end - start
    if n < 1:
        return Bad.TRUNCATED
    version = buf[start] >> 4
    if version == 4:
        if n < 20:
            return Bad.TRUNCATED
        ihl = (buf[start] & 0x0F) * 4
        if ihl < 20:
            return Bad.BAD_HEADER
        if n < ihl:
            return Bad.TRUNCATED
        if ((buf[start + 6] & 0x1F) << 8) | buf[start + 7]:
            return Bad.FRAGMENT  # not the first fragment: no ports to read
        proto = buf[start + 9]
        src = bytes(buf[start + 12:start + 16])
        dst = bytes(buf[start + 16:start + 20])
        l4 = start + ihl
    elif version == 6:
        if n < 40:
            return Bad.TRUNCATED
        proto = buf[start + 6]
        src = bytes(buf[start + 8:start + 24])
        dst = bytes(buf[start + 24:start + 40])
        l4 = start + 40
        hops = 0
        while proto in (_HOPOPTS, _ROUTING, _DSTOPTS, _FRAGMENT):
            hops += 1
            if hops > _MAX_EXT_HEADERS:
                return Bad.EXT_HEADERS
            if l4 + 8 > end:
                return Bad.TRUNCATED
            if proto == _FRAGMENT:
                if ((buf[l4 + 2] << 8) | buf[l4 + 3]) & 0xFFF8:
                    return Bad.FRAGMENT
                proto = buf[l4]
                l4 += 8
            else:
                proto, l4 = buf[l4], l4 + (buf[l4 + 1] + 1) * 8
    else:
        return Bad.NOT_IP
    if proto == TCP:
        if l4 + 20 > end:
            return Bad.TRUNCATED
        if (buf[l4 + 12] >> 4) < 5:
            return Bad.BAD_HEADER
        return Probe(src, dst, TCP, (buf[l4 + 2] << 8) | buf[l4 + 3], buf[l4 + 13])
    if proto == UDP:
        if l4 + 8 > end:
            return Bad.TRUNCATED
        return Probe(src, dst, UDP, (buf[l4 + 2] << 8) | buf[l4 + 3], 0)
    return Bad.OTHER_PROTO
