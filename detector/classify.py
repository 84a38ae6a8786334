"""TCP flags → scan kind (nmap's -sS/-sF/-sN/-sX/-sA/-sM and the rest)."""

from __future__ import annotations

FIN, SYN, RST, PSH, ACK, URG = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20

_KINDS: dict[int, str] = {
    SYN: "syn",
    FIN: "fin",
    0: "null",
    FIN | PSH | URG: "xmas",
    ACK: "ack",
    FIN | ACK: "maimon",
}


def classify_tcp(flags: int) -> str | None:
    """The scan kind of a TCP packet sent to a port with no socket, or None when it is not a probe.

    RST and SYN/ACK are answers, never probes. A packet carrying ACK with other flags (PSH, URG, …) is the
    tail of some connection, not a scan; only a bare ACK (-sA, -sW) and FIN/ACK (Maimon, -sM) count.
    Any other combination without ACK (SYN/FIN, FIN/URG, …) is an "other" probe.
    """
    f = flags & 0x3F  # ECE/CWR do not change the kind
    kind = _KINDS.get(f)
    if kind is not None:
        return kind
    if f & RST or f & ACK:
        return None
    return "other"


def classify(proto: int, flags: int) -> str | None:
    """Scan kind for a probe of ``proto`` (6 TCP, 17 UDP)."""
    if proto == 17:
        return "udp"
    return classify_tcp(flags)
