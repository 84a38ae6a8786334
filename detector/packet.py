"""Network-layer bytes → probe. The per-packet hot path: no objects beyond one small tuple.

Input starts at the IP header (AF_PACKET SOCK_DGRAM, "cooked" capture), so the same code serves every
interface type. Anything that is not a well-formed, unfragmented TCP or UDP packet is reported as a
``Bad`` reason, which the caller counts; ``Bad.FRAGMENT`` (any IPv4 fragment, or an IPv6 fragment header with an
offset or the M flag) goes to ``reassembly.Reassembler``, whose completed datagrams come back through here.
"""

from __future__ import annotations

import mmap
import struct
from enum import IntEnum
from typing import NamedTuple

TCP = 6
UDP = 17
_HOPOPTS, _ROUTING, _FRAGMENT, _DSTOPTS = 0, 43, 44, 60
_MAX_EXT_HEADERS = 8
_EXT_HEADERS = frozenset((_HOPOPTS, _ROUTING, _DSTOPTS, _FRAGMENT))


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


_V4 = struct.Struct("!B5xHxB2x4s4s")  # ver/ihl, frag word, proto, src, dst
_V6 = struct.Struct("!6xBx16s16s")  # next header, src, dst
_TCP = struct.Struct("!2xH8xBB")  # dst port, data offset, flags
_UDP = struct.Struct("!2xH")  # dst port
#: The hot path's common case in one call: an IPv4 header without options (IHL 5) followed by the first
#: 14 bytes of a TCP header, or of a UDP header and payload (the destination port is at the same offset).
V4_L4 = struct.Struct("!B5xHxB2x4s4s2xH8xBB")  # ver/ihl, frag word, proto, src, dst, dst port, offset, flags


def parse(buf: bytes | bytearray | memoryview | mmap.mmap, start: int = 0, length: int | None = None) -> Probe | Bad:
    """Parse one packet from ``buf[start:start+length]``; never raises on any input."""
    end = len(buf) if length is None else min(len(buf), start + length)
    n = end - start
    if n < 1:
        return Bad.TRUNCATED
    b0 = buf[start]
    version = b0 >> 4
    if version == 4:
        if n < 20:
            return Bad.TRUNCATED
        ihl = (b0 & 0x0F) * 4
        if ihl < 20:
            return Bad.BAD_HEADER
        if n < ihl:
            return Bad.TRUNCATED
        _, frag, proto, src, dst = _V4.unpack_from(buf, start)
        if frag & 0x3FFF:
            return Bad.FRAGMENT  # an offset or MF: the host judges the reassembled datagram, not this
        l4 = start + ihl
    elif version == 6:
        if n < 40:
            return Bad.TRUNCATED
        proto, src, dst = _V6.unpack_from(buf, start)
        l4 = start + 40
        hops = 0
        while proto in _EXT_HEADERS:
            hops += 1
            if hops > _MAX_EXT_HEADERS:
                return Bad.EXT_HEADERS
            if l4 + 8 > end:
                return Bad.TRUNCATED
            if proto == _FRAGMENT:
                if ((buf[l4 + 2] << 8) | buf[l4 + 3]) & 0xFFF9:  # an offset or M; else an atomic fragment
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
        port, offset, flags = _TCP.unpack_from(buf, l4)
        if offset >> 4 < 5:
            return Bad.BAD_HEADER
        return Probe(src, dst, TCP, port, flags)
    if proto == UDP:
        if l4 + 8 > end:
            return Bad.TRUNCATED
        return Probe(src, dst, UDP, _UDP.unpack_from(buf, l4)[0], 0)
    return Bad.OTHER_PROTO


#: What :func:`parse_tuple` returns for a probe: (src, dst, proto, port, flags), as in :class:`Probe`.
ProbeTuple = tuple[bytes, bytes, int, int, int]


def parse_tuple(buf: bytes | bytearray | memoryview | mmap.mmap, start: int = 0,
                length: int | None = None) -> ProbeTuple | Bad:
    """:func:`parse` for the detector's hot path: the same answer, but a probe is a plain tuple (building the
    :class:`Probe` NamedTuple costs a Python-level ``__new__``).

    The common case, IPv4 without options carrying TCP or UDP in at least 40 captured bytes, is one struct
    call; anything else goes through :func:`parse`.
    """
    end = len(buf) if length is None else min(len(buf), start + length)
    if end - start >= 40 and start >= 0:
        vi, frag, proto, src, dst, port, offset, flags = V4_L4.unpack_from(buf, start)
        if vi == 0x45 and not frag & 0x3FFF:  # no offset, no MF: not a fragment
            if proto == TCP and offset >= 0x50:  # data offset (high nibble) of at least 5 words
                return (src, dst, TCP, port, flags)
            if proto == UDP:
                return (src, dst, UDP, port, 0)
    res = parse(buf, start, length)
    return res if isinstance(res, Bad) else (res[0], res[1], res[2], res[3], res[4])


SCTP = 132
#: SCTP chunk types (RFC 9260) that an nmap scan starts with: INIT (-sY) and COOKIE ECHO (-sZ).
SCTP_INIT, SCTP_COOKIE_ECHO = 1, 10
#: What :func:`parse_other` returns: (src, dst, protocol number, SCTP destination port, first SCTP chunk type);
#: port and chunk are -1 when the packet is not SCTP or its common header and first chunk are cut short.
OtherTuple = tuple[bytes, bytes, int, int, int]


def parse_other(buf: bytes | bytearray | memoryview | mmap.mmap, start: int = 0,
                length: int | None = None) -> OtherTuple | Bad:
    """A packet that is neither TCP nor UDP (``parse`` said ``Bad.OTHER_PROTO``, or ``Bad.TRUNCATED`` for an IPv6
    extension chain cut short): its IP protocol number, and for SCTP the destination port and first chunk type.

    Kept apart from :func:`parse` so the TCP/UDP hot path is untouched; the capture filter passes these packets
    only when an SCTP or IP-protocol sentry runs. An IPv6 extension chain that ends inside a header (nmap -6 -sO
    sends extension headers with nothing after the IPv6 header) is reported as that header's number: no stack
    that means to be understood sends it. Never raises; fragments (offset above 0) are ``Bad.FRAGMENT``.
    """
    end = len(buf) if length is None else min(len(buf), start + length)
    if end - start < 1:
        return Bad.TRUNCATED
    version = buf[start] >> 4
    if version == 4:
        if end - start < 20:
            return Bad.TRUNCATED
        ihl = (buf[start] & 0x0F) * 4
        if ihl < 20:
            return Bad.BAD_HEADER
        _, frag, proto, src, dst = _V4.unpack_from(buf, start)
        if frag & 0x1FFF:
            return Bad.FRAGMENT
        l4 = start + ihl
    elif version == 6:
        if end - start < 40:
            return Bad.TRUNCATED
        proto, src, dst = _V6.unpack_from(buf, start)
        l4 = start + 40
        hops = 0
        while proto in _EXT_HEADERS:
            hops += 1
            if hops > _MAX_EXT_HEADERS:
                return Bad.EXT_HEADERS
            if l4 + 8 > end:
                return (src, dst, proto, -1, -1)  # the chain is cut inside this header
            if proto == _FRAGMENT:
                if ((buf[l4 + 2] << 8) | buf[l4 + 3]) & 0xFFF8:
                    return Bad.FRAGMENT
                proto, l4 = buf[l4], l4 + 8
            else:
                proto, l4 = buf[l4], l4 + (buf[l4 + 1] + 1) * 8
    else:
        return Bad.NOT_IP
    if proto == SCTP and l4 + 13 <= end:  # common header (12 bytes) and the first chunk's type
        return (src, dst, SCTP, (buf[l4 + 2] << 8) | buf[l4 + 3], buf[l4 + 12])
    return (src, dst, proto, -1, -1)
