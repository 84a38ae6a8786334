"""The host's own sockets and addresses, read from /proc (the network namespace the detector runs in)."""

from __future__ import annotations

import ipaddress
import socket

_PROC = "/proc/net"


def _ports(path: str) -> set[int]:
    """Local ports of every socket in a /proc/net/{tcp,udp}[6] table, whatever its state."""
    out: set[int] = set()
    try:
        with open(path, encoding="ascii", errors="replace") as fh:
            next(fh, None)
            for line in fh:
                parts = line.split(None, 2)
                if len(parts) >= 2:
                    _, _, port = parts[1].rpartition(":")
                    try:
                        out.add(int(port, 16))
                    except ValueError:
                        continue
    except FileNotFoundError:
        pass
    return out


def ports_in_use(proto: str, root: str = _PROC) -> frozenset[int]:
    """Local ports with a socket of ``proto`` ("tcp" or "udp"), IPv4 and IPv6, listening or connected."""
    return frozenset(_ports(f"{root}/{proto}") | _ports(f"{root}/{proto}6"))


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
