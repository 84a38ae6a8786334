"""Which IP protocols this host handles, per family (the IP-protocol sentry and the kernel trap skip those), and
which SCTP ports have a socket (the SCTP sentries and the trap skip those).

A packet of a protocol with no handler gets "protocol unreachable" (IPv4) or "parameter problem: unrecognised
next header" (IPv6) back, which is what ``nmap -sO`` reads. The kernel has no list of its protocol handlers in
/proc, so the set is built from what is visible, in this network namespace:

- a fixed core every Linux stack handles: ICMP and IGMP (IPv4), ICMPv6 and No Next Header (IPv6), TCP, UDP;
- the transport protocols registered as socket types in /proc/net/protocols (SCTP when the sctp module is
  loaded, UDP-Lite, DCCP, L2TP/IP, MPTCP);
- the protocols of raw sockets (/proc/net/raw, raw6): a raw socket of protocol P receives P, and the kernel
  then sends no "unreachable" (routing daemons: OSPF 89, VRRP 112, PIM 103 …);
- tunnels: the fallback device each tunnel module creates in a namespace (tunl0 for IP-in-IP, gre0 …, sit0,
  ip6tnl0, ip6gre0, ip_vti0/ip6_vti0) says its protocol has a receiver here.

It may still miss a handler (a tunnel in a namespace without fallback devices, IPsec): the sentry therefore
counts *distinct* protocol numbers per source (``proto_trigger``), and ``proto_exclude`` names more.
"""

from __future__ import annotations

ICMP, IGMP, TCP, UDP, ICMPV6, NONXT = 1, 2, 6, 17, 58, 59
#: Handled by every Linux IPv4 / IPv6 stack.
CORE4 = frozenset((ICMP, IGMP, TCP, UDP))
CORE6 = frozenset((ICMPV6, NONXT, TCP, UDP))

#: /proc/net/protocols names → (family, protocol number); family 4, 6.
_SOCKET_PROTOS: dict[str, tuple[int, int]] = {
    "TCP": (4, 6), "TCPv6": (6, 6), "MPTCP": (4, 6), "MPTCPv6": (6, 6),
    "UDP": (4, 17), "UDPv6": (6, 17), "UDP-Lite": (4, 136), "UDPLITEv6": (6, 136),
    "SCTP": (4, 132), "SCTPv6": (6, 132), "DCCP": (4, 33), "DCCPv6": (6, 33),
    "L2TP/IP": (4, 115), "L2TP/IPv6": (6, 115), "PING": (4, 1), "PINGv6": (6, 58),
}
#: Fallback tunnel devices → (family of the outer header, protocol numbers they receive).
_TUNNEL_DEVICES: dict[str, tuple[int, tuple[int, ...]]] = {
    "tunl0": (4, (4,)), "gre0": (4, (47,)), "erspan0": (4, (47,)), "sit0": (4, (41, 4)),
    "ip_vti0": (4, (50, 51, 108)), "ip6tnl0": (6, (41, 4)), "ip6gre0": (6, (47,)), "ip6_vti0": (6, (50, 51, 108)),
}


def from_protocols(text: str) -> tuple[set[int], set[int]]:
    """(IPv4, IPv6) protocol numbers of the socket types in /proc/net/protocols text."""
    v4: set[int] = set()
    v6: set[int] = set()
    for line in text.splitlines()[1:]:
        name = line.split(None, 1)[0] if line.strip() else ""
        fam_num = _SOCKET_PROTOS.get(name)
        if fam_num is not None:
            (v4 if fam_num[0] == 4 else v6).add(fam_num[1])
    return v4, v6


def from_raw(text: str) -> set[int]:
    """Protocol numbers of the raw sockets in a /proc/net/raw or raw6 table (the "port" of the local address)."""
    out: set[int] = set()
    for line in text.splitlines()[1:]:
        parts = line.split(None, 2)
        if len(parts) >= 2:
            try:
                proto = int(parts[1].rpartition(":")[2], 16)
            except ValueError:
                continue
            if 0 < proto < 255:  # 0 (IPPROTO_IP) and 255 (IPPROTO_RAW) sockets send only
                out.add(proto)
    return out


def from_devices(text: str) -> tuple[set[int], set[int]]:
    """(IPv4, IPv6) protocol numbers of the fallback tunnel devices named in /proc/net/dev text."""
    v4: set[int] = set()
    v6: set[int] = set()
    for line in text.splitlines()[2:]:
        name = line.split(":", 1)[0].strip()
        found = _TUNNEL_DEVICES.get(name)
        if found is not None:
            (v4 if found[0] == 4 else v6).update(found[1])
    return v4, v6


def _read(path: str) -> str:
    try:
        with open(path, encoding="ascii", errors="replace") as fh:
            return fh.read()
    except OSError:
        return ""


def handled_protocols(root: str = "/proc/net") -> tuple[frozenset[int], frozenset[int]]:
    """(IPv4, IPv6) protocol numbers this host's network namespace handles (see the module's docstring)."""
    p4, p6 = from_protocols(_read(f"{root}/protocols"))
    d4, d6 = from_devices(_read(f"{root}/dev"))
    return (frozenset(CORE4 | p4 | d4 | from_raw(_read(f"{root}/raw"))),
            frozenset(CORE6 | p6 | d6 | from_raw(_read(f"{root}/raw6"))))


def sctp_ports(root: str = "/proc/net") -> frozenset[int]:
    """Local ports of the SCTP endpoints in /proc/net/sctp/eps (LPORT, decimal, the sixth column): listening
    sockets and those of associations alike. Empty when the sctp module is not loaded."""
    out: set[int] = set()
    for line in _read(f"{root}/sctp/eps").splitlines()[1:]:
        parts = line.split()
        if len(parts) >= 6 and parts[5].isdigit():
            out.add(int(parts[5]))
    return frozenset(out)
