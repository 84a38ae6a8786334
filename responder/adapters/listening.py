"""Ports with a listening socket in this network namespace, read from /proc/net (the kernel trap's exemptions),
and the IP protocols it handles (the trap's protocol rule skips those).

TCP: sockets in state LISTEN (0A). UDP: unconnected sockets (state 07), the ones that accept datagrams from
anyone. IPv4 and IPv6 tables alike. A socket bound to one address still counts for every address (the trap's
per-packet socket lookup is the exact check; this set is the one that shows up in the ruleset).
"""

from __future__ import annotations

from portsentinel.common import hostproto

PROC = "/proc/net"
_STATES = {"tcp": "0A", "udp": "07"}


def _table(path: str, state: str) -> set[int]:
    out: set[int] = set()
    try:
        with open(path, encoding="ascii", errors="replace") as fh:
            next(fh, None)
            for line in fh:
                parts = line.split(None, 4)
                if len(parts) >= 4 and parts[3] == state:
                    try:
                        out.add(int(parts[1].rpartition(":")[2], 16))
                    except ValueError:
                        continue
    except (FileNotFoundError, PermissionError):
        pass
    return out


def listening_ports(root: str = PROC) -> dict[str, frozenset[int]]:
    """``{"tcp": ports, "udp": ports, "sctp": ports, "ip4": protocols, "ip6": protocols}``: ports with a listening
    (TCP) or unconnected bound (UDP) socket or an SCTP endpoint, and the IP protocols handled per family."""
    out = {proto: frozenset(_table(f"{root}/{proto}", st) | _table(f"{root}/{proto}6", st))
           for proto, st in _STATES.items()}
    out["sctp"] = hostproto.sctp_ports(root)
    out["ip4"], out["ip6"] = hostproto.handled_protocols(root)
    return out
