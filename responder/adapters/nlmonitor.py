"""Netlink notifications that something the bans depend on went away: nftables objects and routes.

One non-blocking socket per family, both in the selector loop: NETLINK_NETFILTER joined to the NFNLGRP_NFTABLES
group (what ``nft monitor`` reads; iptables-nft, Debian's iptables, changes the same tables) and NETLINK_ROUTE
joined to the IPv4 and IPv6 route groups. ``read()`` drains both and says what was deleted: whether any table,
chain, rule or set went (``nft flush ruleset``, ``systemctl restart nftables``, ``iptables -F``), and which host
routes. The service then runs the actions' ``actioncheck`` and re-applies what is missing (responder.core.health).
Netlink drops notifications when its buffer overflows (ENOBUFS): that counts as "something went".
"""

from __future__ import annotations

import errno
import ipaddress
import socket
import struct
from dataclasses import dataclass, field

NETLINK_ROUTE = 0
NETLINK_NETFILTER = 12
NFNLGRP_NFTABLES = 7
RTNLGRP_IPV4_ROUTE = 7
RTNLGRP_IPV6_ROUTE = 11
NFNL_SUBSYS_NFTABLES = 10
#: NFT_MSG_DELTABLE, DELCHAIN, DELRULE, DELSET and the DESTROY forms of newer kernels (26, 28, 30, 32).
NFT_DELETIONS = frozenset({2, 5, 8, 11, 26, 28, 30, 32})
RTM_DELROUTE = 25
_NLMSG = struct.Struct("=IHHII")
_RTMSG = struct.Struct("=BBBBBBBBI")
_RTA = struct.Struct("=HH")
RTA_DST = 1
RCVBUF = 1 << 20


def _group_mask(group: int) -> int:
    return 1 << (group - 1)


@dataclass
class Changes:
    """What one drain of the sockets saw."""

    nft: bool = False  # a table, chain, rule or set was deleted (or notifications were lost)
    routes: set[str] = field(default_factory=set)  # host routes (/32, /128) deleted
    lost: bool = False


def parse_routes(data: bytes) -> set[str]:
    """Destinations of deleted host routes in a NETLINK_ROUTE datagram."""
    out: set[str] = set()
    off = 0
    while off + _NLMSG.size <= len(data):
        length, mtype, _flags, _seq, _pid = _NLMSG.unpack_from(data, off)
        if length < _NLMSG.size:
            break
        body = off + _NLMSG.size
        if mtype == RTM_DELROUTE and body + _RTMSG.size <= off + length:
            family, dst_len = data[body], data[body + 1]
            size = 4 if family == socket.AF_INET else 16
            if dst_len == size * 8:
                a = body + _RTMSG.size
                while a + _RTA.size <= off + length:
                    alen, atype = _RTA.unpack_from(data, a)
                    if alen < _RTA.size:
                        break
                    if atype == RTA_DST and alen - _RTA.size == size:
                        out.add(str(ipaddress.ip_address(data[a + _RTA.size:a + _RTA.size + size])))
                    a += (alen + 3) & ~3
        off += (length + 3) & ~3
    return out


def nft_deleted(data: bytes) -> bool:
    """True when a NETLINK_NETFILTER datagram holds an nftables table, chain, rule or set deletion."""
    off = 0
    while off + _NLMSG.size <= len(data):
        length, mtype, _flags, _seq, _pid = _NLMSG.unpack_from(data, off)
        if length < _NLMSG.size:
            break
        if mtype >> 8 == NFNL_SUBSYS_NFTABLES and mtype & 0xFF in NFT_DELETIONS:
            return True
        off += (length + 3) & ~3
    return False


SOL_NETLINK = 270
NETLINK_ADD_MEMBERSHIP = 1


class NetlinkMonitor:
    """Both sockets; ``fileno()`` of each goes into the selector (``sockets``).

    ``nft=False`` opens the nftables socket without joining its group; :meth:`listen_nft` joins it later. While
    anyone listens to that group, the kernel builds a notification for every set element a transaction adds:
    measured, ten transactions of 100,000 elements took 5.6 s with an idle listener against 2.9-3.4 s without (and
    the listener then has 1,000,000 notifications to drain), so the responder joins after its restore."""

    def __init__(self, *, nft: bool = True) -> None:
        self.sockets: list[socket.socket] = []
        self.errors: list[str] = []
        for proto, groups, what in ((NETLINK_NETFILTER, _group_mask(NFNLGRP_NFTABLES) if nft else 0, "nftables"),
                                    (NETLINK_ROUTE, _group_mask(RTNLGRP_IPV4_ROUTE) | _group_mask(RTNLGRP_IPV6_ROUTE),
                                     "routes")):
            try:
                s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC,
                                  proto)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
                s.bind((0, groups))
            except OSError as exc:
                self.errors.append(f"netlink {what} notifications: {exc.strerror or exc}")
                continue
            self.sockets.append(s)

    def listen_nft(self) -> None:
        """Join the nftables notification group (after ``nft=False``); an error goes to ``errors``."""
        for s in self.sockets:
            if s.proto == NETLINK_NETFILTER:
                try:
                    s.setsockopt(SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, NFNLGRP_NFTABLES)
                except OSError as exc:
                    self.errors.append(f"netlink nftables notifications: {exc.strerror or exc}")

    def read(self, sock: object = None) -> Changes:
        """Drain ``sock`` (one of ``sockets``; None: every socket) without blocking."""
        ch = Changes()
        for s in self.sockets if sock is None else [s for s in self.sockets if s is sock]:
            while True:
                try:
                    data = s.recv(65536)
                except BlockingIOError:
                    break
                except OSError as exc:
                    if exc.errno == errno.ENOBUFS:  # notifications were lost: assume the worst
                        ch.lost = ch.nft = True
                        continue
                    break
                if not data:
                    break
                if s.proto == NETLINK_NETFILTER:
                    ch.nft = ch.nft or nft_deleted(data)
                else:
                    ch.routes |= parse_routes(data)
        return ch

    def close(self) -> None:
        for s in self.sockets:
            s.close()
        self.sockets.clear()
