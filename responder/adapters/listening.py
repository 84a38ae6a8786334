"""Ports with a listening socket in this network namespace, read from /proc/net (the kernel trap's exemptions),
and the IP protocols it handles (the trap's protocol rule skips those).

TCP: sockets in state LISTEN (0A). UDP: unconnected sockets (state 07), the ones that accept datagrams from
anyone. IPv4 and IPv6 tables alike. A socket bound to one address still counts for every address (the trap's
per-packet socket lookup is the exact check; this set is the one that shows up in the ruleset).
"""

from __future__ import annotations

from portsentinel.common import hostproto, procnet

PROC = "/proc/net"
_STATES = {"tcp": "0A", "udp": "07"}


def listening_ports(root: str = PROC) -> dict[str, frozenset[int]]:
    """``{"tcp": ports, "udp": ports, "sctp": ports, "ip4": protocols, "ip6": protocols}``: ports with a listening
    (TCP) or unconnected bound (UDP) socket or an SCTP endpoint, and the IP protocols handled per family."""
    out = {proto: procnet.ports(proto, root, st) for proto, st in _STATES.items()}
    out["sctp"] = hostproto.sctp_ports(root)
    out["ip4"], out["ip6"] = hostproto.handled_protocols(root)
    return out
