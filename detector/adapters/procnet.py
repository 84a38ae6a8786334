"""The host's own sockets and addresses, read from /proc (the network namespace the detector runs in)."""

from __future__ import annotations

import ipaddress
import socket
import struct

from portsentinel.common import hostproto, procnet

_PROC = "/proc/net"


NETLINK_SOCK_DIAG = 4
SOCK_DIAG_BY_FAMILY = 20
NLM_F_REQUEST, NLM_F_DUMP = 0x1, 0x300
NLMSG_ERROR, NLMSG_DONE = 2, 3
_NLH = struct.Struct("=IHHII")
_REQ = struct.Struct("=BBBxI48x")  # inet_diag_req_v2: family, protocol, ext, states, (sockid: any)


TCP_LISTEN_ONLY = 1 << 10


def _diag_ports(proto: int, states: int = 0xFFFFFFFF) -> set[int]:
    """Local ports of the sockets of ``proto`` (6 or 17) in ``states``, both families, via NETLINK_SOCK_DIAG.

    TCP listeners alone cost ~25 µs; every TCP state walks the kernel's whole established hash (~2.5 ms here,
    as /proc/net/tcp does), so the hot path asks for listeners and reads the rest less often."""
    out: set[int] = set()
    with socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC, NETLINK_SOCK_DIAG) as nl:
        for seq, family in enumerate((socket.AF_INET, socket.AF_INET6), start=1):
            body = _REQ.pack(family, proto, 0, states)
            nl.send(_NLH.pack(_NLH.size + len(body), SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST | NLM_F_DUMP, seq, 0) + body)
            done = False
            while not done:
                data = nl.recv(65536)
                off = 0
                while off + _NLH.size <= len(data):
                    length, kind, _, _, _ = _NLH.unpack_from(data, off)
                    if length < _NLH.size:
                        raise OSError("sock_diag: bad netlink message")
                    if kind == NLMSG_DONE:
                        done = True
                        break
                    if kind == NLMSG_ERROR:
                        raise OSError("sock_diag: error answer")
                    if kind == SOCK_DIAG_BY_FAMILY and length >= _NLH.size + 6:
                        # inet_diag_msg: family, state, timer, retrans, then id.idiag_sport (big endian).
                        out.add(int.from_bytes(data[off + _NLH.size + 4:off + _NLH.size + 6], "big"))
                    off += (length + 3) & ~3
    return out


def ports_in_use(proto: str, root: str = _PROC, *, listening_only: bool = False) -> frozenset[int]:
    """Local ports with a socket of ``proto`` ("tcp", "udp" or "sctp"), IPv4 and IPv6, listening or connected
    (``listening_only``: TCP listeners only; UDP sockets are always all read, it is cheap)."""
    if proto == "sctp":
        return hostproto.sctp_ports(root)
    if root == _PROC:
        try:
            states = TCP_LISTEN_ONLY if listening_only and proto == "tcp" else 0xFFFFFFFF
            return frozenset(_diag_ports(6 if proto == "tcp" else 17, states))
        except OSError:
            pass  # no sock_diag (module missing, or filtered): the /proc tables say the same, slower
    return procnet.ports(proto, root)


def _v4_local(root: str) -> set[bytes]:
    out: set[bytes] = set()
    try:
        with open(f"{root}/fib_trie", encoding="ascii", errors="replace") as fh:
            last = ""
            for line in fh:
                s = line.strip()
                if s.startswith("|--"):
                    last = s[3:].strip()
                elif s.startswith("/32 host LOCAL") and last:
                    try:
                        out.add(ipaddress.IPv4Address(last).packed)
                    except ValueError:
                        pass
    except FileNotFoundError:
        pass
    return out


def _v6_local(root: str) -> set[bytes]:
    out: set[bytes] = set()
    try:
        with open(f"{root}/if_inet6", encoding="ascii", errors="replace") as fh:
            for line in fh:
                hexaddr = line.split(None, 1)[0] if line.strip() else ""
                if len(hexaddr) == 32:
                    out.add(bytes.fromhex(hexaddr))
    except FileNotFoundError:
        pass
    return out


def local_addresses(root: str = _PROC) -> frozenset[bytes]:
    """Every address assigned to this host (raw 4- and 16-byte forms)."""
    return frozenset(_v4_local(root) | _v6_local(root))


def ifname(index: int) -> str:
    """Interface name for an index, or "" when unknown."""
    if index <= 0:
        return ""
    try:
        return socket.if_indextoname(index)
    except OSError:
        return ""


def fragment_sysctls(root: str = "/proc/sys/net") -> dict[str, int]:
    """The host's own reassembly timeouts and IPv4 ``ipfrag_max_dist`` (this network namespace), as keyword
    arguments for ``reassembly.Reassembler``; a value that cannot be read keeps Linux's default."""
    out: dict[str, int] = {}
    for key, path in (("timeout4", "ipv4/ipfrag_time"), ("timeout6", "ipv6/ip6frag_time"),
                      ("max_dist", "ipv4/ipfrag_max_dist")):
        try:
            with open(f"{root}/{path}", encoding="ascii") as fh:
                out[key] = max(0, int(fh.read().strip()))
        except (OSError, ValueError):
            continue
    return out


def ephemeral_ports(root: str = "/proc/sys/net") -> tuple[int, int]:
    """The host's range of local ports for outgoing connections (``ip_local_port_range``, IPv4 and IPv6 alike);
    Linux's default when it cannot be read."""
    try:
        with open(f"{root}/ipv4/ip_local_port_range", encoding="ascii") as fh:
            lo, hi = (int(x) for x in fh.read().split())
        if 1 <= lo <= hi <= 65535:
            return lo, hi
    except (OSError, ValueError):
        pass
    return 32768, 60999
