"""The kernel trap: an nftables ruleset in which the first probe to a trap port bans its source in the kernel.

Pure: typed settings in, ``nft -f`` script text out; no I/O (responder.adapters.trapkernel runs the scripts,
responder.adapters.nflog reads the kernel's notifications, responder.adapters.listening reads /proc/net).

One trap per jail whose actions include ``kernel-trap`` (actions.d/kernel-trap.conf), in the responder's table
(``inet portsentinel``), all names prefixed with the jail's ``name``::

    chain N_trap (input hook)                      chain N_catch (reached only by a trap probe)
      iif lo, ct established/related   return        socket exists (a listener)        return
      fib saddr type local             return        limit rate over R   counter N_ratelimited drop
      saddr in N_never4 / N_never6     return        add @N_t4 { ip saddr } log group G  counter N_trapped drop
      saddr in N_t4 / N_t6 (tarpit)    drop          add @N_t6 { ip6 saddr } log group G counter N_trapped drop
      saddr in N_b4 / N_b6 (bans)      drop          (the add failed: set full)          counter N_full drop
      tcp dport @N_tcp, != @N_tcp_l    goto N_catch
      udp dport @N_udp, != @N_udp_l    goto N_catch
      sctp dport @N_sctp, != @N_sctp_l goto N_catch      (protocol sctp: nmap -sY, -sZ)
      l4proto != @N_ph4 / @N_ph6, local  goto N_catch      (protocol ip: nmap -sO, protocols without a handler)

The never-ban sets, the own-address lookup and connection tracking come before anything can ban; the tarpit
sets have a default timeout and a size cap, and additions pass a global rate limit, so a flood of spoofed
sources costs at most ``size`` elements per family and ``rate`` additions a second; what is refused is counted.
A trap probe is always dropped (the port has no listener, so it would only have told the scanner "closed").
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

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


# -- settings ----------------------------------------------------------------------------------------------
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
        ports = _ranges(s.trap_ports(proto))
        shown = ",".join(ports[:12]) + (",…" if len(ports) > 12 else "")
        parts.append(f"{proto} {shown} ({len(s.trap_ports(proto))} ports)")
    who = f"its IPv6 /{s.prefix6}" if s.prefix6 < 128 else "it"
    strikes = s.maxretry or jail_maxretry
    return (f"kernel trap {s.name} ({s.shape}): the first probe to {'; '.join(parts)} without a listener puts "
            f"its source ({who}) in the kernel's tarpit for {s.tarpit}s before any answer; {strikes} trap hit(s) "
            f"within findtime: banned for the jail's bantime. Never touched: loopback, established traffic, this "
            f"host's addresses, gateways and resolvers{', ' if s.never else ''}{' '.join(str(n) for n in s.never)}")


# -- ruleset -----------------------------------------------------------------------------------------------
def _ranges(ports: Iterable[int]) -> list[str]:
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


def never_networks(addrs: Iterable[str | IPNetwork]) -> tuple[list[str], list[str]]:
    """Never-ban addresses and networks, parsed and merged, as (IPv4, IPv6) nft elements."""
    v4: list[ipaddress.IPv4Network] = []
    v6: list[ipaddress.IPv6Network] = []
    for a in addrs:
        try:
            net = a if isinstance(a, ipaddress.IPv4Network | ipaddress.IPv6Network) else \
                ipaddress.ip_network(str(a).split("%")[0], strict=False)
        except ValueError:
            continue
        if isinstance(net, ipaddress.IPv6Network) and net.prefixlen == 128 and net.network_address.ipv4_mapped:
            net = ipaddress.IPv4Network(net.network_address.ipv4_mapped)
        (v4 if isinstance(net, ipaddress.IPv4Network) else v6).append(net)  # type: ignore[arg-type]

    def fmt(nets: Iterable[IPNetwork]) -> list[str]:
        return [str(n.network_address) if n.prefixlen == n.max_prefixlen else str(n) for n in nets]

    return fmt(ipaddress.collapse_addresses(v4)), fmt(ipaddress.collapse_addresses(v6))


def near_networks(s: TrapSettings, never: Iterable[str | IPNetwork]) -> tuple[list[str], list[str]]:
    """The tarpit-sized networks (prefix4 / prefix6) that hold a never-ban address: a source in one of them is
    held by its own address, so the tarpit never covers a protected address. (A never-ban network wider than
    the prefix needs nothing: its sources return before the trap.)"""
    out: tuple[list[ipaddress.IPv4Network], list[ipaddress.IPv6Network]] = ([], [])
    for text in (*never_networks(never)[0], *never_networks(never)[1]):
        net = ipaddress.ip_network(text)
        plen = s.prefix4 if net.version == 4 else s.prefix6
        if plen < net.max_prefixlen and net.prefixlen > plen:
            wide = net.supernet(new_prefix=plen)
            if isinstance(wide, ipaddress.IPv4Network):
                out[0].append(wide)
            else:
                out[1].append(wide)
    return ([str(n) for n in ipaddress.collapse_addresses(out[0])],
            [str(n) for n in ipaddress.collapse_addresses(out[1])])


def _elements(verb: str, where: str, elems: list[str]) -> list[str]:
    return [f"{verb} element {where} {{ {', '.join(elems[i:i + 4000])} }}" for i in range(0, len(elems), 4000)]


def sync_script(s: TrapSettings, *, listening: Mapping[str, Iterable[int]] | None = None,
                never: Iterable[str | IPNetwork] | None = None) -> str:
    """Replace the listening-port sets and/or the never-ban sets' contents, atomically (one transaction)."""
    t = f"inet {s.table}"
    lines: list[str] = []
    if listening is not None:
        for proto in PORT_PROTOCOLS:
            ports = sorted(set(listening.get(proto, ())))
            lines.append(f"flush set {t} {s.obj(proto + '_l')}")
            lines += _elements("add", f"{t} {s.obj(proto + '_l')}", [str(p) for p in ports])
        for fam in ("ip4", "ip6"):  # protocols with a handler (``listening["ip4"]``…), never fewer than the core
            handled = sorted(CORE_HANDLED[fam] | {p for p in listening.get(fam, ()) if 0 <= p <= 255})
            lines.append(f"flush set {t} {s.obj('ph' + fam[2])}")
            lines += _elements("add", f"{t} {s.obj('ph' + fam[2])}", [str(p) for p in handled])
    if never is not None:
        v4, v6 = never_networks([*s.never, *never])
        n4, n6 = near_networks(s, [*v4, *v6])
        for fam, elems, near in (("4", v4, n4), ("6", v6, n6)):
            lines.append(f"flush set {t} {s.obj('never' + fam)}")
            lines += _elements("add", f"{t} {s.obj('never' + fam)}", elems)
            lines.append(f"flush set {t} {s.obj('near' + fam)}")
            lines += _elements("add", f"{t} {s.obj('near' + fam)}", near)
    return "".join(line + "\n" for line in lines)


def install_script(s: TrapSettings, listening: Mapping[str, Iterable[int]], never: Iterable[str | IPNetwork]) -> str:
    """The whole trap, idempotent: objects are added (kept when they exist: tarpit and ban elements survive a
    reload), the chains flushed and refilled, the port, listening and never-ban sets replaced."""
    t = f"inet {s.table}"
    n = s.obj
    lines = [f"add table {t}"]
    lines += [f"add counter {t} {c}" for c in s.counters]
    for fam, typ in (("4", "ipv4_addr"), ("6", "ipv6_addr")):
        lines.append(f"add set {t} {n('t' + fam)} {{ type {typ}; flags dynamic,timeout; timeout {s.tarpit}s; "
                     f"size {s.size}; }}")
        lines.append(f"add set {t} {n('b' + fam)} {{ type {typ}; flags interval,timeout; }}")
        lines.append(f"add set {t} {n('never' + fam)} {{ type {typ}; flags interval; }}")
        lines.append(f"add set {t} {n('near' + fam)} {{ type {typ}; flags interval; }}")
    for fam in ("4", "6"):
        lines.append(f"add set {t} {n('ph' + fam)} {{ type inet_proto; }}")
    for proto in PORT_PROTOCOLS:
        lines.append(f"add set {t} {n(proto)} {{ type inet_service; flags interval; }}")
        lines.append(f"add set {t} {n(proto + '_l')} {{ type inet_service; }}")
        lines.append(f"flush set {t} {n(proto)}")
        lines += _elements("add", f"{t} {n(proto)}", _ranges(s.trap_ports(proto)))
    lines.append(f"add chain {t} {n('catch')}")
    lines.append(f"add chain {t} {s.chain} {{ type filter hook input priority {s.priority}; policy accept; }}")
    lines.append(f"flush chain {t} {s.chain}")
    lines.append(f"flush chain {t} {n('catch')}")
    r = f"add rule {t} {s.chain}"
    lines += [
        f'{r} iif "lo" return',
        f"{r} ct state established,related return",
        f"{r} fib saddr type local return",
        f"{r} ip saddr @{n('never4')} return",
        f"{r} ip6 saddr @{n('never6')} return",
    ]
    for fam, ipx in (("4", "ip"), ("6", "ip6")):  # the tarpit: a trapped source's network, or its own address
        mask = s.mask(int(fam))
        if mask:
            lines.append(f"{r} {ipx} saddr & {mask} @{n('t' + fam)} counter name \"{n('dropped')}\" drop")
        lines.append(f"{r} {ipx} saddr @{n('t' + fam)} counter name \"{n('dropped')}\" drop")
    lines += [
        f"{r} ip saddr @{n('b4')} drop",
        f"{r} ip6 saddr @{n('b6')} drop",
    ]
    for proto in s.protocols:
        if proto in PORT_PROTOCOLS:
            lines.append(f"{r} {proto} dport @{n(proto)} {proto} dport != @{n(proto + '_l')} goto {n('catch')}")
    if "ip" in s.protocols:  # nmap -sO: a protocol without a handler, to one of this host's own addresses
        for fam, nfproto in (("4", "ipv4"), ("6", "ipv6")):
            lines.append(f"{r} meta nfproto {nfproto} meta l4proto != @{n('ph' + fam)} fib daddr type local "
                         f"goto {n('catch')}")
    c = f"add rule {t} {n('catch')}"
    log = f'log prefix "{s.prefix}" group {s.group} snaplen 80 queue-threshold 1'
    if s.socket_match:
        lines.append(f"{c} socket transparent {{ 0, 1 }} return")
    lines += [
        f"{c} limit rate over {s.rate} burst {s.burst} packets counter name \"{n('ratelimited')}\" drop",
    ]
    for fam, ipx in (("4", "ip"), ("6", "ip6")):
        mask = s.mask(int(fam))
        add = f"counter name \"{n('trapped')}\" {log} drop"
        if mask:  # near a never-ban address: the address alone; else its network
            lines.append(f"{c} {ipx} saddr @{n('near' + fam)} add @{n('t' + fam)} {{ {ipx} saddr }} {add}")
            lines.append(f"{c} meta nfproto ipv{fam} add @{n('t' + fam)} {{ {ipx} saddr & {mask} }} {add}")
        else:
            lines.append(f"{c} meta nfproto ipv{fam} add @{n('t' + fam)} {{ {ipx} saddr }} {add}")
    lines.append(f"{c} counter name \"{n('full')}\" drop")
    text = "".join(line + "\n" for line in lines)
    return text + sync_script(s, listening=listening, never=never)


def remove_statements(s: TrapSettings) -> list[str]:
    """Statements that remove the trap (base chain first, then what it referenced), one per object."""
    t = f"inet {s.table}"
    return ([f"delete chain {t} {s.chain}", f"delete chain {t} {s.obj('catch')}"]
            + [f"delete set {t} {name}" for name in s.sets] + [f"delete counter {t} {c}" for c in s.counters])


def tarpit_network(s: TrapSettings, ip: str) -> IPNetwork:
    """The tarpit's network of ``ip`` (an address or network): its /prefix6 (IPv6) or /prefix4 (IPv4)."""
    net = ipaddress.ip_network(ip, strict=False)
    return net.supernet(new_prefix=min(s.prefix6 if net.version == 6 else s.prefix4, net.prefixlen))


def unban_script(s: TrapSettings, ip: str) -> str:
    """Remove ``ip`` (an address or a network) from its tarpit set: the element of the address and that of its
    network (each added first, so one the kernel has already expired is no error)."""
    net = ipaddress.ip_network(ip, strict=False)
    set_name = s.obj("t6" if net.version == 6 else "t4")
    elems = {str(net.network_address), str(tarpit_network(s, ip).network_address)}
    where = f"inet {s.table} {set_name}"
    return "".join(f"add element {where} {{ {e} }}\ndelete element {where} {{ {e} }}\n" for e in sorted(elems))


# -- kernel notifications and what follows them -------------------------------------------------------------
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


__all__ = ["ACTION", "MARKER", "Tarpit", "TrapError", "TrapHit", "TrapSettings",
           "install_script", "near_networks", "never_networks", "parse_payload", "remove_statements", "settings_from",
           "sync_script", "tarpit_network", "unban_script"]
