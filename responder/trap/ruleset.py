"""The kernel trap: an nftables ruleset in which the first probe to a trap port bans its source in the kernel.

Pure: typed settings (responder.trap.settings) in, ``nft -f`` script text out; no I/O (responder.adapters.trapkernel
runs the scripts, responder.adapters.nflog reads the kernel's notifications and responder.trap.hits parses them,
responder.adapters.listening reads /proc/net).

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
from collections.abc import Iterable, Mapping

from portsentinel.responder.trap.settings import (
    CORE_HANDLED,
    PORT_PROTOCOLS,
    IPNetwork,
    TrapSettings,
    port_ranges,
)


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
        lines += _elements("add", f"{t} {n(proto)}", port_ranges(s.trap_ports(proto)))
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
