"""The kernel filter for the stealth sentries: built once per configuration, compiled by libpcap via scapy.

The capture socket is cooked (AF_PACKET, SOCK_DGRAM), so the program is compiled for raw IP (DLT_RAW) and
serves every interface type. IPv6 packets whose next header is an extension header are passed up too, so
user space can walk the chain instead of a probe slipping past the filter, and so is every IPv4 fragment
(an offset or MF): later fragments carry no ports, and the detector reassembles what the host will see.
"""

from __future__ import annotations

from collections.abc import Iterable

DLT_RAW = 12

Insn = tuple[int, int, int, int]  # (code, jt, jf, k): struct sock_filter


class FilterError(RuntimeError):
    pass


def port_ranges(ports: Iterable[int]) -> list[tuple[int, int]]:
    """Sorted ports → inclusive (low, high) ranges."""
    out: list[tuple[int, int]] = []
    for p in sorted(set(ports)):
        if out and p == out[-1][1] + 1:
            out[-1] = (out[-1][0], p)
        else:
            out.append((p, p))
    return out


#: Beyond this many ranges libpcap's optimiser takes seconds (8 s for 1,000 scattered ports), so the kernel
#: filter passes the covering range and user space (which checks every port anyway) does the rest.
MAX_RANGES = 64


def _ports_expr(proto: str, ports: Iterable[int]) -> str:
    ranges = port_ranges(ports)
    if len(ranges) > MAX_RANGES:
        ranges = [(ranges[0][0], ranges[-1][1])]
    terms = [f"dst port {lo}" if lo == hi else f"dst portrange {lo}-{hi}" for lo, hi in ranges]
    return f"({proto} and ({' or '.join(terms)}))" if terms else ""


def filter_expression(tcp_ports: Iterable[int], udp_ports: Iterable[int], sctp_ports: Iterable[int] = (),
                      proto_skip4: Iterable[int] | None = None) -> str:
    """A pcap-filter expression matching probes to the watched ports (empty lists watch nothing).

    ``proto_skip4`` (the IP-protocol sentry runs): IPv4 packets of every protocol but these pass too; the caller
    gives TCP, UDP and the protocols the host handles, so a busy tunnel or ICMP stays in the kernel.
    """
    parts = [e for e in (_ports_expr("tcp", tcp_ports), _ports_expr("udp", udp_ports),
                         _ports_expr("sctp", sctp_ports)) if e]
    if proto_skip4 is not None:
        skip = sorted(set(proto_skip4) | {6, 17})
        parts.append("(ip and " + " and ".join(f"ip[9] != {p}" for p in skip) + ")")
    if not parts:
        return ""
    # IPv6 with an extension header first: libpcap's "tcp" does not look past it.
    # (libpcap's "ip6 proto 6" also matches TCP behind a fragment header, so test the next-header byte itself.)
    # This also passes every IPv6 packet of another protocol (SCTP, and what the IP-protocol sentry counts).
    parts.append("(ip6 and ip6[6] != 6 and ip6[6] != 17 and ip6[6] != 58)")
    # Every IPv4 fragment (offset or MF): libpcap's port tests pass only first fragments, by their own ports.
    parts.append("(ip and ip[6:2] & 0x3fff != 0)")
    return " or ".join(parts)


def compile_expression(expr: str) -> list[Insn]:
    """Compile a pcap-filter expression for raw IP into classic BPF instructions."""
    if not expr:
        return [(0x06, 0, 0, 0)]  # ret #0: accept nothing
    try:
        from scapy.arch.common import compile_filter
    except ImportError as exc:  # pragma: no cover - scapy is a hard dependency
        raise FilterError(f"scapy cannot compile BPF: {exc}") from exc
    try:
        prog = compile_filter(expr, linktype=DLT_RAW)
    except Exception as exc:  # scapy raises its own exception types and OSError
        raise FilterError(f"cannot compile filter {expr[:200]!r}: {exc}") from exc
    insns = [(prog.bf_insns[i].code, prog.bf_insns[i].jt, prog.bf_insns[i].jf, prog.bf_insns[i].k)
             for i in range(prog.bf_len)]
    if len(insns) > 4096:
        raise FilterError(f"filter too long ({len(insns)} instructions > 4096): watch fewer, wider port ranges")
    return insns


def build(tcp_ports: Iterable[int], udp_ports: Iterable[int], sctp_ports: Iterable[int] = (),
          proto_skip4: Iterable[int] | None = None) -> list[Insn]:
    """The filter program for the given watched ports (and protocols, see :func:`filter_expression`)."""
    return compile_expression(filter_expression(tcp_ports, udp_ports, sctp_ports, proto_skip4))
