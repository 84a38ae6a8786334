"""Who is never banned, and how many bans a minute are allowed. Pure."""

from __future__ import annotations

import ipaddress
import re
from collections import deque
from collections.abc import Iterable, Sequence

from portsentinel.record import canonical_address
from portsentinel.record_screen import V4_COLUMN
from portsentinel.responder.core.addrint import addr_int, network_range

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


#: (first, last, what, kind) of one protected address or network, as integers of its family.
Span = tuple[int, int, str, str]
_LOOPBACK = "loopback, unspecified or multicast address"
#: Loopback networks, for safe_target (a network ban must not hold them).
_LOOPBACK_SPANS: dict[int, Span] = {4: (127 << 24, (128 << 24) - 1, "127.0.0.0/8", "loopback"),
                                    6: (1, 1, "::1", "loopback")}


#: First bytes of the IPv4 addresses never banned whatever the configuration: loopback, multicast.
_LOOPBACK_OCTETS = frozenset({127, *range(224, 240)})


def _span(net: IPNetwork, kind: str) -> Span:
    what = str(net.network_address) if net.prefixlen == net.max_prefixlen else str(net)
    return int(net.network_address), int(net.broadcast_address), what, kind


class NeverBan:
    """The host's own addresses, its default gateways, its resolvers, and the jail's ignoreip.

    Built once per configuration and per change of the host's facts: addresses are looked up by their text, and
    networks (ignoreip; the protected addresses a network ban must not hold) are compared as integer ranges made
    once per ignoreip tuple, so a ban parses at most its own address (an IPv6 one) and never a protected one."""

    def __init__(self, *, own: Iterable[str] = (), gateways: Iterable[str] = (), resolvers: Iterable[str] = ()) -> None:
        self.reasons: dict[str, str] = {}
        for kind, addrs in (("own address", own), ("default gateway", gateways), ("resolver", resolvers)):
            for a in addrs:
                try:
                    self.reasons.setdefault(canonical_address(a.split("%")[0]), kind)
                except ValueError:
                    continue
        #: The same addresses as integer ranges by IP version, parsed once (safe_target checks network bans).
        self._own: dict[int, list[Span]] = {4: [], 6: []}
        for a, k in self.reasons.items():
            net = ipaddress.ip_network(a)
            self._own[net.version].append(_span(net, k))
        #: The first bytes of the own IPv4 addresses: an IPv4 address starting otherwise is none of them.
        self._own_octets = frozenset(lo >> 24 for lo, _hi, _what, _kind in self._own[4])
        #: id(ignoreip tuple) -> (that tuple, its spans by IP version, the first bytes its IPv4 spans cover):
        #: a jail's ignoreip is one tuple per config.
        self._ignore: dict[int, tuple[tuple[IPNetwork, ...], dict[int, list[Span]], frozenset[int]]] = {}

    def _ignored(self, ignoreip: Iterable[IPNetwork]) -> dict[int, list[Span]]:
        """The spans of ``ignoreip`` by IP version (made once per tuple; a list or other iterable each time)."""
        return self._ignored_octets(ignoreip)[0]

    def _ignored_octets(self, ignoreip: Iterable[IPNetwork]) -> tuple[dict[int, list[Span]], frozenset[int]]:
        """The spans of ``ignoreip`` by IP version, and the first bytes its IPv4 spans cover: an IPv4 address
        starting with any other byte is in none of them (the restore checks 1,000,000 rows this way)."""
        if isinstance(ignoreip, tuple):
            known = self._ignore.get(id(ignoreip))
            if known is not None and known[0] is ignoreip:
                return known[1], known[2]
        spans: dict[int, list[Span]] = {4: [], 6: []}
        for net in ignoreip:
            spans[net.version].append(_span(net, f"ignoreip {net}"))
        octets = frozenset(o for lo, hi, _what, _kind in spans[4] for o in range(lo >> 24, (hi >> 24) + 1))
        if isinstance(ignoreip, tuple):
            if len(self._ignore) >= 256:  # configurations come and go: never more than a few alive
                self._ignore.clear()
            self._ignore[id(ignoreip)] = (ignoreip, spans, octets)
        return spans, octets

    def why(self, ip: str, ignoreip: Iterable[IPNetwork] = (), ignoreself: bool = True) -> str | None:
        """The reason ``ip`` must not be banned, or None."""
        text = canonical_address(ip)  # v4-mapped → v4; a zone id is refused
        v4 = ":" not in text
        if v4:  # IPv4 from its text: no address object
            first = int(text[:text.index(".")])
            if first in _LOOPBACK_OCTETS or text == "0.0.0.0":
                return _LOOPBACK
        else:
            value = addr_int(text)
            if value <= 1 or value >> 120 == 0xFF:  # ::, ::1, ff00::/8
                return _LOOPBACK
        if ignoreself:
            reason = self.reasons.get(text)
            if reason:
                return reason
        if not ignoreip:
            return None
        if v4:
            spans, octets = self._ignored_octets(ignoreip)
            if first not in octets:  # (most addresses: no integer, no loop)
                return None
            value = addr_int(text)
        else:
            spans = self._ignored(ignoreip)
        for lo, hi, _what, kind in spans[4 if v4 else 6]:
            if lo <= value <= hi:
                return kind
        return None

    def suspects(self, ips: Sequence[str], ignoreip: Iterable[IPNetwork] = (),
                 ignoreself: bool = True) -> set[str] | None:
        """Of many addresses (a restore's chunk), the texts :meth:`why` may name a reason for: every other one
        it certainly passes. None when the texts are not all canonical IPv4 addresses (then ask :meth:`why` for
        each). One match over the joined text and one search for the lines whose first byte is one a
        protected address or network starts with, at C speed: no call per address."""
        if not ips:
            return set()
        joined = "\n".join(ips) + "\n"
        if not V4_COLUMN.fullmatch(joined, 0, len(joined) - 1):  # (every line but the last newline)
            return None
        octets = {0, *_LOOPBACK_OCTETS}  # (0: for 0.0.0.0)
        if ignoreself:
            octets |= self._own_octets
        if ignoreip:
            octets |= self._ignored_octets(ignoreip)[1]
        if len(octets) == 256:
            return set(ips)
        risky = _first_bytes_re(frozenset(octets))
        return set(risky.findall(joined))

    def safe_target(self, ip: str, net: str, ignoreip: Iterable[IPNetwork] = (),
                    ignoreself: bool = True) -> tuple[str, str]:
        """``net`` (a network that holds ``ip``, itself never banned), or ``ip`` alone when ``net`` holds a
        protected address: one of this host's own addresses, gateways or resolvers (with ``ignoreself``), a part
        of ``ignoreip``, loopback. Returns (the network or address to ban, "" or why it fell back). ValueError
        for a network that is not one (host bits set, a bad prefix).

        The fallback is the address, not the widest network that would miss the protected one: a network near
        a protected address is usually the host's own LAN, whose other hosts did nothing (the kernel trap holds
        such a source by its address too)."""
        addr = canonical_address(ip)
        if "/" not in net:
            return net, ""
        version, lo, hi = network_range(net)  # ValueError: not a network (host bits, a bad prefix)
        protected = [*(self._own[version] if ignoreself else ()), *self._ignored(ignoreip)[version],
                     _LOOPBACK_SPANS[version]]
        for plo, phi, what, kind in protected:
            if plo <= hi and lo <= phi:
                return addr, f"{net} holds protected {what} ({kind}): banned {addr} alone"
        return net, ""


_FIRST_BYTES: dict[frozenset[int], re.Pattern[str]] = {}


def _first_bytes_re(octets: frozenset[int]) -> re.Pattern[str]:
    """A pattern finding the whole lines that start with one of ``octets`` and a dot (made once per set)."""
    found = _FIRST_BYTES.get(octets)
    if found is None:
        if len(_FIRST_BYTES) >= 64:
            _FIRST_BYTES.clear()
        alts = "|".join(str(o) for o in sorted(octets, reverse=True))
        found = _FIRST_BYTES[octets] = re.compile(rf"(?m)^(?:{alts})\.[0-9.]*$")
    return found


class PerMinuteCap:
    """At most ``limit`` bans in any 60-second window."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._times: deque[float] = deque()
        self.refused = 0

    def full(self, now: float) -> bool:
        """:meth:`allow` would refuse a ban now (nothing counted)."""
        if self.limit <= 0:
            return False
        while self._times and now - self._times[0] >= 60.0:
            self._times.popleft()
        return len(self._times) >= self.limit

    def allow(self, now: float) -> bool:
        if self.limit <= 0:  # no cap (the fleet jail's default): nothing to count
            return True
        if self.full(now):
            self.refused += 1
            return False
        self._times.append(now)
        return True
