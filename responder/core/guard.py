"""Who is never banned, and how many bans a minute are allowed. Pure."""

from __future__ import annotations

import ipaddress
from collections import deque
from collections.abc import Iterable

from portsentinel.record import canonical_address

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


_LOOPBACK4 = ipaddress.ip_network("127.0.0.0/8")
_LOOPBACK6 = ipaddress.ip_network("::1/128")


class NeverBan:
    """The host's own addresses, its default gateways, its resolvers, and the jail's ignoreip."""

    def __init__(self, *, own: Iterable[str] = (), gateways: Iterable[str] = (), resolvers: Iterable[str] = ()) -> None:
        self.reasons: dict[str, str] = {}
        for kind, addrs in (("own address", own), ("default gateway", gateways), ("resolver", resolvers)):
            for a in addrs:
                try:
                    self.reasons.setdefault(canonical_address(a.split("%")[0]), kind)
                except ValueError:
                    continue
        #: The same addresses as networks, parsed once (safe_target checks each network ban against them).
        self._own: list[tuple[IPNetwork, str]] = [(ipaddress.ip_network(a), k) for a, k in self.reasons.items()]

    def why(self, ip: str, ignoreip: Iterable[IPNetwork] = (), ignoreself: bool = True) -> str | None:
        """The reason ``ip`` must not be banned, or None."""
        text = canonical_address(ip)  # v4-mapped → v4; a zone id is refused
        nets = ignoreip if isinstance(ignoreip, tuple | list) else list(ignoreip)
        if ":" not in text:  # IPv4 from its text (the bulk path: no address object per ban unless ignoreip)
            first = int(text[:text.index(".")])
            if first == 127 or 224 <= first <= 239 or text == "0.0.0.0":
                return "loopback, unspecified or multicast address"
            if ignoreself:
                reason = self.reasons.get(text)
                if reason:
                    return reason
            if not nets:
                return None
        addr = ipaddress.ip_address(text)
        if addr.is_loopback or addr.is_unspecified or addr.is_multicast:
            return "loopback, unspecified or multicast address"
        if ignoreself:
            reason = self.reasons.get(text)
            if reason:
                return reason
        for net in nets:
            if addr.version == net.version and addr in net:
                return f"ignoreip {net}"
        return None


    def safe_target(self, ip: str, net: str, ignoreip: Iterable[IPNetwork] = (),
                    ignoreself: bool = True) -> tuple[str, str]:
        """``net`` (a network that holds ``ip``, itself never banned), or ``ip`` alone when ``net`` holds a
        protected address: one of this host's own addresses, gateways or resolvers (with ``ignoreself``), a part
        of ``ignoreip``, loopback. Returns (the network or address to ban, "" or why it fell back).

        The fallback is the address, not the widest network that would miss the protected one: a network near
        a protected address is usually the host's own LAN, whose other hosts did nothing (the kernel trap holds
        such a source by its address too)."""
        if "/" not in net:
            return net, ""
        addr = ipaddress.ip_address(ip)
        wide = ipaddress.ip_network(net)
        protected = (self._own if ignoreself else []) + [(n, f"ignoreip {n}") for n in ignoreip]
        protected.append((_LOOPBACK6 if addr.version == 6 else _LOOPBACK4, "loopback"))
        for pnet, kind in protected:
            if pnet.version == addr.version and wide.overlaps(pnet):
                what = pnet.network_address if pnet.prefixlen == pnet.max_prefixlen else pnet
                return str(addr), f"{net} holds protected {what} ({kind}): banned {addr} alone"
        return net, ""


class PerMinuteCap:
    """At most ``limit`` bans in any 60-second window."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._times: deque[float] = deque()
        self.refused = 0

    def allow(self, now: float) -> bool:
        while self._times and now - self._times[0] >= 60.0:
            self._times.popleft()
        if self.limit > 0 and len(self._times) >= self.limit:
            self.refused += 1
            return False
        self._times.append(now)
        return True
