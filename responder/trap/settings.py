"""The kernel trap's settings: the kernel-trap action's variables (actions.d/kernel-trap.conf plus the jail's
arguments) checked and typed, each refusal naming its key. Pure (responder.trap.ruleset turns them into nft scripts).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from portsentinel.common import values

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

#: [Definition] option that marks an action as the kernel trap.
MARKER = "kerneltrap"
ACTION = "kernel-trap"
SHAPES = ("advanced", "list")
#: "ip" traps IP protocols the host has no handler for (nmap -sO); the others trap ports.
PROTOCOLS = ("tcp", "udp", "sctp", "ip")
PORT_PROTOCOLS = ("tcp", "udp", "sctp")
DEFAULT_PROTOCOLS = ("tcp", "udp", "sctp", "ip")
#: Protocols every Linux stack handles, per family; always in the handled sets N_ph4 / N_ph6 (an empty set
#: there would send TCP itself to the trap).
CORE_HANDLED = {"ip4": frozenset((1, 2, 6, 17)), "ip6": frozenset((6, 17, 58, 59))}
LOG_PREFIX = "pstrap:"
COUNTERS = ("trapped", "ratelimited", "full", "dropped")
_IDENT_RE = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,47}\Z")
_RATE_RE = re.compile(r"\s*(\d{1,9})\s*/\s*(second|minute|hour)\s*\Z")


class TrapError(ValueError):
    """A trap setting that cannot be used; ``key`` names it."""

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(f"{key}: {reason}")
        self.key = key


@dataclass(frozen=True)
class TrapSettings:
    """Everything the ruleset depends on apart from the host's listeners and never-ban addresses."""

    name: str
    jail: str
    table: str = "portsentinel"
    shape: str = "advanced"
    protocols: tuple[str, ...] = DEFAULT_PROTOCOLS
    tcp_ports: tuple[int, ...] = ()
    udp_ports: tuple[int, ...] = ()
    sctp_ports: tuple[int, ...] = ()
    sctp_bound: int = 65535
    sctp_exclude: tuple[int, ...] = ()
    tcp_bound: int = 1024
    udp_bound: int = 1024
    tcp_exclude: tuple[int, ...] = (113, 139)
    udp_exclude: tuple[int, ...] = (520, 138, 137, 67)
    tarpit: int = 60
    size: int = 65536
    rate: str = "100/second"
    burst: int = 200
    group: int = 27
    priority: int = -5
    #: Seconds between two reads of /proc/net for the listening-port sets (0: never; the socket match remains).
    listener_sync: float = 1.0
    #: Seconds between two reads of the never-ban facts (addresses, gateways, resolvers).
    facts_sync: float = 10.0
    #: Exempt a probe whose port has a socket, looked up by the kernel per packet (no lag at all).
    socket_match: bool = True
    never: tuple[IPNetwork, ...] = ()
    #: The tarpit holds a source's network of this many bits (the jail's ban_prefix_v4 / ban_prefix_v6): an IPv6
    #: scanner rotating through its /64 is one element. A source whose network holds a never-ban address (the
    #: sets N_near4 / N_near6) is held by its own address instead.
    prefix4: int = 32
    prefix6: int = 64
    #: Trap hits of one source (network) within the jail's findtime that make a ban; 0: the jail's maxretry.
    maxretry: int = 0

    def mask(self, version: int) -> str:
        """nft's bit mask for the tarpit's network of an IPv4 or IPv6 source ("" for whole addresses)."""
        plen, bits = (self.prefix4, 32) if version == 4 else (self.prefix6, 128)
        if plen >= bits:
            return ""
        net = ipaddress.ip_network(f"{'0.0.0.0' if version == 4 else '::'}/{plen}")
        return str(net.netmask)

    def trap_ports(self, proto: str) -> frozenset[int]:
        """The trap ports of ``proto`` before listeners are taken out (PortSentry's stcp/sudp or atcp/audp)."""
        if proto not in self.protocols or proto not in PORT_PROTOCOLS:
            return frozenset()
        if self.shape == "list":
            return frozenset({"tcp": self.tcp_ports, "udp": self.udp_ports, "sctp": self.sctp_ports}[proto])
        bound, excl = {"tcp": (self.tcp_bound, self.tcp_exclude), "udp": (self.udp_bound, self.udp_exclude),
                       "sctp": (self.sctp_bound, self.sctp_exclude)}[proto]
        return frozenset(range(1, bound + 1)) - set(excl)

    def obj(self, suffix: str) -> str:
        return f"{self.name}_{suffix}"

    @property
    def chain(self) -> str:
        return self.obj("trap")

    @property
    def sets(self) -> tuple[str, ...]:
        return tuple(self.obj(s) for s in ("t4", "t6", "b4", "b6", "never4", "never6", "near4", "near6", "tcp", "udp",
                                           "tcp_l", "udp_l", "sctp", "sctp_l", "ph4", "ph6"))

    @property
    def counters(self) -> tuple[str, ...]:
        return tuple(self.obj(c) for c in COUNTERS)

    @property
    def prefix(self) -> str:
        return f"{LOG_PREFIX}{self.name}"


def _ports(key: str, text: str) -> tuple[int, ...]:
    out: set[int] = set()
    for token in values.tokens(text):
        try:
            out.update(values.port_span(token))
        except ValueError as exc:
            raise TrapError(key, str(exc)) from None
    return tuple(sorted(out))


def _int(key: str, text: str, lo: int, hi: int) -> int:
    try:
        n = int(text.strip())
    except ValueError:
        raise TrapError(key, f"not an integer: {text.strip()!r}") from None
    if not lo <= n <= hi:
        raise TrapError(key, f"{n} out of range {lo}..{hi}")
    return n


def _seconds(key: str, text: str, lo: float, hi: float) -> float:
    try:
        n = values.duration(text, zero=True, forever=True)
    except ValueError as exc:
        raise TrapError(key, str(exc)) from None
    if not lo <= n <= hi:
        raise TrapError(key, f"{n:g}s out of range {lo:g}..{hi:g}")
    return n


def _bool(key: str, text: str) -> bool:
    try:
        return values.boolean(text)
    except ValueError as exc:
        raise TrapError(key, str(exc)) from None


def settings_from(params: Mapping[str, object], jail: str, ignoreip: Iterable[IPNetwork] = (), *,
                  prefix4: int = 32, prefix6: int = 64) -> TrapSettings:
    """Typed settings from the kernel-trap action's variables (``[Init]`` + the jail's arguments); ``prefix4`` /
    ``prefix6`` are the jail's ban_prefix_v4 / ban_prefix_v6."""

    def get(key: str, default: str) -> str:
        return str(params.get(key, default))

    name = get("name", jail)
    table = get("table", "portsentinel")
    for key, val in (("name", name), ("table", table)):
        if not _IDENT_RE.match(val):
            raise TrapError(key, f"must be a letter then letters, digits, '_' or '-' (at most 48), got {val!r}")
    shape = get("shape", "advanced").strip()
    if shape not in SHAPES:
        raise TrapError("shape", f"expected advanced or list, got {shape!r}")
    protocols = tuple(p for p in re.split(r"[\s,]+", get("protocol", ", ".join(DEFAULT_PROTOCOLS)).strip()) if p)
    if not protocols or set(protocols) - set(PROTOCOLS):
        raise TrapError("protocol", f"expected some of tcp, udp, sctp, ip, got {get('protocol', '')!r}")
    rate = get("rate", "100/second")
    if not _RATE_RE.match(rate) or int(_RATE_RE.match(rate).group(1)) < 1:  # type: ignore[union-attr]
        raise TrapError("rate", f"expected N/second, N/minute or N/hour with N >= 1, got {rate!r}")
    never: list[IPNetwork] = list(ignoreip)
    for tok in re.split(r"[\s,]+", get("never", "").strip()):
        if tok:
            try:
                never.append(ipaddress.ip_network(tok, strict=False))
            except ValueError:
                raise TrapError("never", f"not an address or CIDR: {tok!r}") from None
    s = TrapSettings(
        name=name, jail=jail, table=table, shape=shape, protocols=protocols,
        tcp_ports=_ports("tcp_ports", get("tcp_ports", "")), udp_ports=_ports("udp_ports", get("udp_ports", "")),
        tcp_bound=_int("tcp_bound", get("tcp_bound", "1024"), 1, 65535),
        udp_bound=_int("udp_bound", get("udp_bound", "1024"), 1, 65535),
        tcp_exclude=_ports("tcp_exclude", get("tcp_exclude", "113, 139")),
        udp_exclude=_ports("udp_exclude", get("udp_exclude", "520, 138, 137, 67")),
        sctp_ports=_ports("sctp_ports", get("sctp_ports", "")),
        sctp_bound=_int("sctp_bound", get("sctp_bound", "65535"), 1, 65535),
        sctp_exclude=_ports("sctp_exclude", get("sctp_exclude", "")),
        tarpit=int(_seconds("tarpit", get("tarpit", "60"), 1, 86400)),
        size=_int("size", get("size", "65536"), 1, 16_777_216),
        rate=" ".join(rate.split()).replace(" / ", "/"), burst=_int("burst", get("burst", "200"), 1, 1_000_000),
        group=_int("nflog_group", get("nflog_group", "27"), 1, 65535),
        priority=_int("priority", get("priority", "-5"), -400, 400),
        listener_sync=_seconds("listener_sync", get("listener_sync", "1"), 0, 3600),
        facts_sync=_seconds("facts_sync", get("facts_sync", "10"), 1, 86400),
        socket_match=_bool("socket_match", get("socket_match", "yes")),
        never=tuple(never), prefix4=prefix4, prefix6=prefix6,
        maxretry=_int("maxretry", get("maxretry", "0") or "0", 0, 1000),
    )
    if shape == "list" and not any(s.trap_ports(p) for p in protocols) and "ip" not in protocols:
        raise TrapError("tcp_ports", "shape = list needs tcp_ports, udp_ports and/or sctp_ports")
    return s


def describe(s: TrapSettings, jail_maxretry: int = 1) -> str:
    """What the trap covers, in one line for ``portsentinel check-config``."""
    parts = []
    for proto in s.protocols:
        if proto == "ip":
            parts.append("a packet of an IP protocol this host has no handler for (nmap -sO)")
            continue
        ports = port_ranges(s.trap_ports(proto))
        shown = ",".join(ports[:12]) + (",…" if len(ports) > 12 else "")
        parts.append(f"{proto} {shown} ({len(s.trap_ports(proto))} ports)")
    who = f"its IPv6 /{s.prefix6}" if s.prefix6 < 128 else "it"
    strikes = s.maxretry or jail_maxretry
    return (f"kernel trap {s.name} ({s.shape}): the first probe to {'; '.join(parts)} without a listener puts "
            f"its source ({who}) in the kernel's tarpit for {s.tarpit}s before any answer; {strikes} trap hit(s) "
            f"within findtime: banned for the jail's bantime. Never touched: loopback, established traffic, this "
            f"host's addresses, gateways and resolvers{', ' if s.never else ''}{' '.join(str(n) for n in s.never)}")



def port_ranges(ports: Iterable[int]) -> list[str]:
    """Sorted ports as nft interval elements: ``1-112, 114``."""
    out: list[str] = []
    start = prev = -2
    for p in sorted(set(ports)):
        if p == prev + 1:
            prev = p
            continue
        if start >= 0:
            out.append(str(start) if start == prev else f"{start}-{prev}")
        start = prev = p
    if start >= 0:
        out.append(str(start) if start == prev else f"{start}-{prev}")
    return out
