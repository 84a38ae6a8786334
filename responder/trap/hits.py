"""What the kernel reports of the trap, and what the responder knows of its tarpit. Pure: the NFLOG payload of a
trapped probe parsed into a hit (responder.adapters.nflog reads the messages), and the tarpit's entries with their
expiry (for status and the expiry records)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from portsentinel.responder.trap.settings import ACTION, IPNetwork


@dataclass(frozen=True)
class TrapHit:
    """One addition to a tarpit set, as the kernel reported it (the first probe of a source)."""

    name: str  # trap name (the log prefix after "pstrap:")
    ip: str
    proto: str = ""
    port: int = 0
    time: float = 0.0


def parse_payload(name: str, payload: bytes, when: float) -> TrapHit | None:
    """The probe's source, protocol and destination port from the logged network header (IPv4 or IPv6)."""
    if len(payload) < 20:
        return None
    version = payload[0] >> 4
    if version == 4:
        ihl = (payload[0] & 0x0F) * 4
        proto_num, src, l4 = payload[9], ipaddress.ip_address(payload[12:16]), ihl
    elif version == 6 and len(payload) >= 40:
        proto_num, src, l4 = payload[6], ipaddress.ip_address(payload[8:24]), 40
    else:
        return None
    proto = {6: "tcp", 17: "udp", 132: "sctp"}.get(proto_num, "")
    port = int.from_bytes(payload[l4 + 2:l4 + 4], "big") if proto and len(payload) >= l4 + 4 else 0
    if not proto:  # trapped as a protocol without a handler (nmap -sO): the "port" is the protocol number
        proto, port = "ip", proto_num
    return TrapHit(name, str(src), proto, port, when)


@dataclass
class Tarpit:
    """Sources in the kernel's tarpit sets, as far as the responder knows (for status and expiry records)."""

    entries: dict[tuple[str, str], tuple[float, float, TrapHit]] = field(default_factory=dict)  # → (since, until)

    def add(self, jail: str, hit: TrapHit, seconds: float) -> None:
        self.entries[(jail, hit.ip)] = (hit.time, hit.time + seconds, hit)

    def expired(self, now: float) -> list[tuple[str, TrapHit]]:
        gone = [(k, v) for k, v in self.entries.items() if v[1] <= now]
        for k, _ in gone:
            del self.entries[k]
        return [(k[0], v[2]) for k, v in gone]

    def next_expiry(self) -> float | None:
        return min((v[1] for v in self.entries.values()), default=None)

    def remove_within(self, jail: str, net: IPNetwork) -> list[tuple[str, str]]:
        """Remove the jail's entries whose address is in ``net`` (the tarpit holds networks: one is enough)."""
        keys = [k for k in self.entries if k[0] == jail and ipaddress.ip_address(k[1]) in net]
        for k in keys:
            del self.entries[k]
        return keys

    def remove(self, ip: str | None) -> list[tuple[str, str]]:
        keys = [k for k in self.entries if ip is None or k[1] == ip]
        for k in keys:
            del self.entries[k]
        return keys

    def rows(self, now: float) -> list[dict[str, object]]:
        return [{"jail": j, "ip": ip, "since": since, "remaining": round(max(0.0, until - now), 1), "count": 1,
                 "via": ACTION, "port": str(hit.port), "proto": hit.proto}
                for (j, ip), (since, until, hit) in sorted(self.entries.items(), key=lambda kv: kv[1][0])]
