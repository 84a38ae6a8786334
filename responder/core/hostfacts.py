"""The host's never-ban facts from their raw forms: rtnetlink messages and resolver files. Pure (bytes and text in).

- rtnetlink (``RTM_NEWADDR``, ``RTM_NEWROUTE``… as the kernel sends them in a dump or an event): own addresses
  (``IFA_LOCAL``, else ``IFA_ADDRESS``) and the gateways of default routes in every routing table (a VPN's
  policy table included): ``RTA_GATEWAY``, ``RTA_VIA`` (an IPv4 route via an IPv6 next hop) and each next hop
  of a multipath route. Which events concern the never-ban set (:func:`relevant`): any address change, and a
  route change of a default route only, so a full routing table being loaded costs no re-read.
- resolvers: ``nameserver`` lines of resolv.conf (/etc/resolv.conf; systemd-resolved's upstream servers in
  /run/systemd/resolve/resolv.conf), ``DNS=`` lines of systemd-networkd's per-link state
  (/run/systemd/netif/links/N) and of resolved.conf (``DNS=`` / ``FallbackDNS=``, with ``#name`` and ``:port``
  suffixes). Zone ids are dropped, every address is canonical (portsentinel.record.canonical_address).
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Iterator
from typing import NamedTuple

from portsentinel.record import canonical_address

# linux/netlink.h, linux/rtnetlink.h, linux/if_addr.h
NLMSG_ERROR, NLMSG_DONE, NLMSG_OVERRUN = 2, 3, 4
RTM_NEWADDR, RTM_DELADDR, RTM_GETADDR = 20, 21, 22
RTM_NEWROUTE, RTM_DELROUTE, RTM_GETROUTE = 24, 25, 26
RTMGRP_IPV4_IFADDR, RTMGRP_IPV4_ROUTE, RTMGRP_IPV6_IFADDR, RTMGRP_IPV6_ROUTE = 0x10, 0x40, 0x100, 0x400
NLM_F_REQUEST, NLM_F_DUMP = 0x1, 0x300
IFA_ADDRESS, IFA_LOCAL = 1, 2
RTA_DST, RTA_GATEWAY, RTA_MULTIPATH, RTA_VIA = 1, 5, 9, 18
RTN_UNICAST = 1
AF_INET, AF_INET6 = 2, 10

_NLMSG = struct.Struct("=IHHII")  # len, type, flags, seq, pid
_IFADDRMSG = struct.Struct("=BBBBI")  # family, prefixlen, flags, scope, index
_RTMSG = struct.Struct("=BBBBBBBBI")  # family, dst_len, src_len, tos, table, protocol, scope, type, flags
_RTATTR = struct.Struct("=HH")  # len, type
_RTNEXTHOP = struct.Struct("=HBBi")  # len, flags, hops, ifindex


class Message(NamedTuple):
    type: int
    seq: int
    payload: bytes


def _align(n: int) -> int:
    return (n + 3) & ~3


def messages(buf: bytes) -> Iterator[Message]:
    """The netlink messages in ``buf`` (one datagram); a truncated or malformed tail ends the walk."""
    pos = 0
    while pos + _NLMSG.size <= len(buf):
        length, mtype, _flags, seq, _pid = _NLMSG.unpack_from(buf, pos)
        if length < _NLMSG.size or pos + length > len(buf):
            return
        yield Message(mtype, seq, buf[pos + _NLMSG.size:pos + length])
        pos += _align(length)


def attributes(buf: bytes, start: int = 0, end: int | None = None) -> Iterator[tuple[int, bytes]]:
    """(type, value) of each rtattr in ``buf[start:end]``."""
    end = len(buf) if end is None else min(end, len(buf))
    pos = start
    while pos + _RTATTR.size <= end:
        length, atype = _RTATTR.unpack_from(buf, pos)
        if length < _RTATTR.size or pos + length > end:
            return
        yield atype & 0x3FFF, buf[pos + _RTATTR.size:pos + length]  # without NLA_F_NESTED / NET_BYTEORDER
        pos += _align(length)


def _address(raw: bytes) -> str | None:
    if len(raw) not in (4, 16):
        return None
    return canonical_address(str(ipaddress.ip_address(raw)))


def address_of(payload: bytes) -> str | None:
    """The local address of an RTM_NEWADDR/RTM_DELADDR payload."""
    if len(payload) < _IFADDRMSG.size:
        return None
    found: dict[int, bytes] = {}
    for atype, value in attributes(payload, _IFADDRMSG.size):
        if atype in (IFA_ADDRESS, IFA_LOCAL):
            found.setdefault(atype, value)
    raw = found.get(IFA_LOCAL, found.get(IFA_ADDRESS))
    return None if raw is None else _address(raw)


def _is_default(payload: bytes) -> bool:
    if len(payload) < _RTMSG.size:
        return False
    _fam, dst_len, _src, _tos, _table, _proto, _scope, rtype, _flags = _RTMSG.unpack_from(payload)
    return bool(dst_len == 0 and rtype == RTN_UNICAST)


def _via(raw: bytes) -> str | None:
    if len(raw) < 2:
        return None
    return _address(raw[2:])


def gateways_of(payload: bytes) -> list[str]:
    """The gateways of an RTM_NEWROUTE payload when it is a default route (else [])."""
    if not _is_default(payload):
        return []
    out: list[str] = []
    for atype, value in attributes(payload, _RTMSG.size):
        if atype == RTA_GATEWAY:
            gw = _address(value)
        elif atype == RTA_VIA:
            gw = _via(value)
        elif atype == RTA_MULTIPATH:
            out += _nexthops(value)
            continue
        else:
            continue
        if gw is not None:
            out.append(gw)
    return out


def _nexthops(buf: bytes) -> list[str]:
    out: list[str] = []
    pos = 0
    while pos + _RTNEXTHOP.size <= len(buf):
        length = _RTNEXTHOP.unpack_from(buf, pos)[0]
        if length < _RTNEXTHOP.size or pos + length > len(buf):
            break
        for atype, value in attributes(buf, pos + _RTNEXTHOP.size, pos + length):
            gw = _address(value) if atype == RTA_GATEWAY else _via(value) if atype == RTA_VIA else None
            if gw is not None:
                out.append(gw)
        pos += _align(length)
    return out


def relevant(buf: bytes) -> bool:
    """True when an event datagram may change the never-ban set: an address, or a default route, changed."""
    for m in messages(buf):
        if m.type in (RTM_NEWADDR, RTM_DELADDR, NLMSG_OVERRUN):
            return True
        if m.type in (RTM_NEWROUTE, RTM_DELROUTE) and _is_default(m.payload):
            return True
    return False


def dump_request(kind: int, family: int, seq: int) -> bytes:
    """An RTM_GETADDR or RTM_GETROUTE dump request for ``family`` (0: every family)."""
    body = _IFADDRMSG.pack(family, 0, 0, 0, 0) if kind == RTM_GETADDR else _RTMSG.pack(family, 0, 0, 0, 0, 0, 0, 0, 0)
    return _NLMSG.pack(_NLMSG.size + len(body), kind, NLM_F_REQUEST | NLM_F_DUMP, seq, 0) + body


# -- resolvers ------------------------------------------------------------------------------------------------
def _resolver(token: str) -> str | None:
    """``1.1.1.1``, ``fe80::1%eth0``, ``9.9.9.9#dns.quad9.net``, ``[2620:fe::9]:53``, ``1.1.1.1:53`` → address."""
    token = token.split("#", 1)[0]
    if token.startswith("["):
        token = token[1:].split("]", 1)[0]
    elif token.count(":") == 1:
        token = token.split(":", 1)[0]  # IPv4 with a port
    token = token.split("%", 1)[0]
    try:
        return canonical_address(token)
    except ValueError:
        return None


def resolv_conf(text: str) -> list[str]:
    """``nameserver`` addresses of a resolv.conf."""
    out: list[str] = []
    for line in text.splitlines():
        words = line.split()
        if len(words) >= 2 and words[0] == "nameserver":
            addr = _resolver(words[1])
            if addr is not None:
                out.append(addr)
    return out


def dns_lines(text: str, keys: tuple[str, ...] = ("DNS", "FallbackDNS")) -> list[str]:
    """``DNS=`` (and ``FallbackDNS=``) addresses of a networkd link state file or resolved.conf."""
    out: list[str] = []
    for line in text.splitlines():
        key, sep, value = line.strip().partition("=")
        if sep and key.strip() in keys:
            out += [a for a in (_resolver(w) for w in value.split()) if a is not None]
    return out
