"""The SCTP sentries (ssctp, asctp) and the IP-protocol sentry (aproto): a packet that is neither TCP nor UDP
→ the probes it makes. Pure: the host's facts (SCTP ports in use, handled protocols) are set by the caller.

A packet can make two probes: an SCTP INIT to a watched port of a host without an SCTP stack is an SCTP scan
probe and, since protocol 132 has no handler there, an IP-protocol probe too (nmap -sO sends SCTP INITs).
"""

from __future__ import annotations

from portsentinel.common.hostproto import CORE4, CORE6

from .classify import classify_sctp
from .packet import SCTP, OtherTuple

#: The tracker's protocol code for the IP-protocol sentry: not an IP protocol number (those are 0..255), so it
#: never mixes with a transport's port counts. Its "ports" are the protocol numbers.
PROTO_IP = 256
#: The tracker key's last byte per protocol code (the key is the raw source address plus this byte).
KEY_BYTE = {SCTP: b"\x84", PROTO_IP: b"\x00"}

#: (the tracker key's last byte, protocol code, port or protocol number, scan kind, mode); the caller puts the
#: source's address (or network) in front of the byte.
Probe = tuple[bytes, int, int, str, str]


class OtherSentries:
    """Which SCTP ports are watched (port → mode) and whether aproto runs; the host facts to skip."""

    def __init__(self, sctp_watch: dict[int, str], proto_mode: str = "", exclude: frozenset[int] = frozenset(),
                 ) -> None:
        self.sctp_watch = sctp_watch
        self.proto_mode = proto_mode
        self.exclude = exclude
        self.sctp_in_use: frozenset[int] = frozenset()
        #: Until the caller reads the host's set: the core every stack handles (TCP and UDP are never counted).
        self.handled4: frozenset[int] = CORE4
        self.handled6: frozenset[int] = CORE6

    @property
    def active(self) -> bool:
        return bool(self.sctp_watch) or bool(self.proto_mode)

    def unhandled(self, proto: int, v6: bool) -> bool:
        """True when ``proto`` has no handler on this host (for the address family of the packet)."""
        return proto not in (self.handled6 if v6 else self.handled4) and proto not in self.exclude

    def probes(self, pkt: OtherTuple) -> list[Probe]:
        """The probes ``pkt`` makes (none, one or two)."""
        src, _, proto, port, chunk = pkt
        out: list[Probe] = []
        if proto == SCTP and port >= 0:
            mode = self.sctp_watch.get(port)
            if mode is not None and port not in self.sctp_in_use:
                scan = classify_sctp(chunk)
                if scan is not None:
                    out.append((KEY_BYTE[SCTP], SCTP, port, scan, mode))
        if self.proto_mode and self.unhandled(proto, len(src) == 16):
            out.append((KEY_BYTE[PROTO_IP], PROTO_IP, proto, "proto", self.proto_mode))
        return out
