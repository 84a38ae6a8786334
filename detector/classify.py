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

    RST and SYN/ACK are answers, never probes. ACK without SYN or RST is an ACK-class probe whatever else it
    carries: the host answers a stray ACK, ACK/PSH or ACK/URG with a RST just as it answers -sA, so
    ``--scanflags ACKPSH`` is an ACK scan ("ack"), and with FIN a Maimon-class one ("maimon"). Both kinds make
    the detector look at every socket first, so the tail of a live connection is not taken for a probe.
    Any other combination without ACK (SYN/FIN, FIN/URG, …) is an "other" probe.
    """
    f = flags & 0x3F  # ECE/CWR do not change the kind
    kind = _KINDS.get(f)
    if kind is not None:
        return kind
    if f & RST or (f & SYN and f & ACK):
        return None
    if f & ACK:
        return "maimon" if f & FIN else "ack"
    return "other"


def classify(proto: int, flags: int) -> str | None:
    """Scan kind for a probe of ``proto`` (6 TCP, 17 UDP)."""
    if proto == 17:
        return "udp"
    return classify_tcp(flags)


#: SCTP chunk types that answer or close an association (INIT ACK, ABORT, SHUTDOWN ACK, ERROR, COOKIE ACK,
#: SHUTDOWN COMPLETE): like a TCP RST or SYN/ACK they are never probes.
_SCTP_ANSWERS = frozenset((2, 6, 8, 9, 11, 14))


def classify_sctp(chunk: int) -> str | None:
    """The scan kind of an SCTP packet sent to a port with no SCTP socket, from its first chunk's type.

    INIT opens an association (nmap -sY), COOKIE ECHO is the third step of the handshake sent with no INIT
    before it (nmap -sZ); answers are not probes; any other chunk (DATA, HEARTBEAT, SHUTDOWN, …) to a port with
    no association is an "other" probe.
    """
    if chunk == 1:
        return "init"
    if chunk == 10:
        return "cookie"
    if chunk in _SCTP_ANSWERS or chunk < 0:
        return None
    return "other"
