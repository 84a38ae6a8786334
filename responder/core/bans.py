"""Active bans and their expiry; the bantime for repeat offenders. Pure: times are passed in."""

from __future__ import annotations

import bisect
import heapq
import ipaddress
import math
from collections import Counter
from dataclasses import dataclass, field

from portsentinel.responder.config.jailconf import JailConfig
from portsentinel.responder.core.addrint import addr_int, network_range

FOREVER = -1.0


#: Seconds before the 1st, 2nd, … retry of a failed action or unban (responder.actions.executor, responder.core.unbans).
BACKOFF = (1.0, 2.0, 4.0, 8.0, 16.0)

@dataclass(slots=True)
class Ban:
    jail: str
    ip: str
    banned_at: float
    expires: float  # FOREVER, or a wall-clock time
    count: int = 1  # this host's offence number in this jail
    failures: int = 1
    info: dict[str, str] = field(default_factory=dict)  # port, proto, scan, mode, source…
    #: The matched line or record message that made the ban, for the actions' ``matches`` (kept in memory only,
    #: as fail2ban does: a restored ban has none).
    matches: str = field(default="", compare=False)

    @property
    def bantime(self) -> float:
        return FOREVER if self.expires == FOREVER else self.expires - self.banned_at

    def remaining(self, now: float) -> float:
        return FOREVER if self.expires == FOREVER else max(0.0, self.expires - now)


def by_jail(bans: list[Ban]) -> dict[str, list[Ban]]:
    """``bans`` grouped by jail, in order (all of one jail, the usual case: the list itself, no copy)."""
    if bans and all(b.jail == bans[0].jail for b in bans):
        return {bans[0].jail: bans}
    groups: dict[str, list[Ban]] = {}
    for ban in bans:
        group = groups.get(ban.jail)
        if group is None:
            group = groups[ban.jail] = []
        group.append(ban)
    return groups


def src_fields(ip: str, info: dict[str, str] | None = None) -> dict[str, str]:
    """PS_SRC (always an address) and PS_SRC_NET (when the ban is a network) of a ban target ``ip``."""
    if "/" not in ip:
        return {"PS_SRC": ip}
    src = (info or {}).get("src") or str(ipaddress.ip_network(ip).network_address)
    return {"PS_SRC": src, "PS_SRC_NET": ip}


def bantime_for(cfg: JailConfig, offence: int) -> float:
    """The jail's bantime, multiplied by ``factor`` per earlier offence when ``bantime.increment`` is on,
    never more than ``bantime.maxtime``. Bounded for any offence count: the exponent is compared in log space,
    so no power is ever computed that could overflow (offence 1,025 with factor 2 used to raise OverflowError).
    """
    if cfg.bantime == FOREVER:
        return FOREVER
    if not cfg.bantime_increment or offence <= 1 or cfg.bantime <= 0:
        return cfg.bantime
    cap = max(cfg.bantime_maxtime, cfg.bantime)
    factor = cfg.bantime_factor
    if not math.isfinite(factor) or factor <= 1.0:  # check-config refuses these; never grow, never fail
        return cfg.bantime
    steps = offence - 1
    if steps * math.log(factor) >= math.log(cap / cfg.bantime):
        return cap
    return float(min(cfg.bantime * factor ** steps, cap))


def _version(ip: str) -> int:
    return 6 if ":" in ip else 4


def _start(ip: str) -> int:
    """The first address of a ban target (an address or a network) as an integer (host bits cleared)."""
    base, _, plen = ip.partition("/")
    value = addr_int(base)
    if plen:
        value &= ~((1 << ((128 if ":" in base else 32) - int(plen))) - 1)
    return value


class BanBook:
    """Bans in force, keyed by (jail, ip), with a heap of expiries (stale heap entries are skipped)."""

    def __init__(self) -> None:
        self.active: dict[tuple[str, str], Ban] = {}
        self._heap: list[tuple[float, str, str]] = []
        #: (jail, IP version) → how many network bans of each prefix length are in force (for covering()).
        self._plens: dict[tuple[str, int], Counter[int]] = {}
        #: (jail, IP version) → its bans as (first address as an integer, ip), sorted: built by the first
        #: inside() for that jail and family, then kept up to date, so finding the bans inside a network is a
        #: bisection, not a parse of every ban (a fleet catch-up of 100,000 IPv6 /64 bans was quadratic).
        self._index: dict[tuple[str, int], list[tuple[int, str]]] = {}
        #: (jail, IP version, prefix length) → {the network's prefix as an integer: its text}: covering() finds
        #: the network that holds an address by integer arithmetic, without making a network object.
        self._nets: dict[tuple[str, int, int], dict[int, str]] = {}

    def __len__(self) -> int:
        return len(self.active)

    def get(self, jail: str, ip: str) -> Ban | None:
        return self.active.get((jail, ip))

    def _count(self, jail: str, ip: str, step: int) -> None:
        if "/" in ip:
            base, plen = ip.split("/")
            version, p = (6 if ":" in base else 4), int(plen)
            c = self._plens.setdefault((jail, version), Counter())
            c[p] += step
            if c[p] <= 0:
                del c[p]
            nets = self._nets.setdefault((jail, version, p), {})
            try:
                key = addr_int(base) >> ((128 if version == 6 else 32) - p)
            except ValueError:  # (a corrupt stored row: covering() does not find it by its network)
                return
            if step > 0:
                nets[key] = ip
            elif nets.get(key) == ip:
                del nets[key]

    def add(self, ban: Ban) -> None:
        self._enter(ban)
        if ban.expires != FOREVER:
            heapq.heappush(self._heap, (ban.expires, ban.jail, ban.ip))

    def _enter(self, ban: Ban) -> None:
        """``ban`` in force in the book (a network counted, the sorted indexes kept), its expiry not queued."""
        key = (ban.jail, ban.ip)
        if key not in self.active:
            if "/" in ban.ip:
                self._count(ban.jail, ban.ip, 1)
            if self._index:
                index = self._index.get((ban.jail, _version(ban.ip)))
                if index is not None:
                    bisect.insort(index, (_start(ban.ip), ban.ip))
        self.active[key] = ban

    def add_many(self, bans: list[Ban]) -> None:
        """Add many bans at once (a restore): the same as :meth:`add` for each, the expiry heap rebuilt once
        (heapify, linear) instead of a push per ban; into an empty book (the start) without a look-up per ban."""
        if len(bans) < 64:
            for ban in bans:
                self.add(ban)
            return
        active = self.active
        if not active and not self._index:
            active.update(zip([(b.jail, b.ip) for b in bans], bans, strict=True))
            for b in bans:
                if "/" in b.ip and active[(b.jail, b.ip)] is b:  # a network, counted once
                    self._count(b.jail, b.ip, 1)
        else:
            for ban in bans:
                self._enter(ban)
        self._heap.extend([(b.expires, b.jail, b.ip) for b in bans if b.expires != FOREVER])
        heapq.heapify(self._heap)

    def remove(self, jail: str, ip: str) -> Ban | None:
        ban = self.active.pop((jail, ip), None)
        if ban is not None:
            self._count(jail, ip, -1)
            index = self._index.get((jail, _version(ip)))
            if index is not None:
                item = (_start(ip), ip)
                at = bisect.bisect_left(index, item)
                if at < len(index) and index[at] == item:
                    del index[at]
        return ban

    def covering(self, jail: str, ip: str) -> Ban | None:
        """The ban in ``jail`` on ``ip`` itself or on a network that holds it (``ip`` an address or network)."""
        ban = self.active.get((jail, ip))
        if ban is not None:
            return ban
        version = 6 if ":" in ip else 4
        plens = self._plens.get((jail, version))
        if not plens:
            return None  # no network bans in this jail and family: nothing else can hold it (no parsing)
        base, _, own = ip.partition("/")
        bits = 128 if version == 6 else 32
        value, own_plen = addr_int(base), int(own) if own else bits
        for plen in plens:
            if plen <= own_plen:
                text = self._nets.get((jail, version, plen), {}).get(value >> (bits - plen))
                ban = None if text is None else self.active.get((jail, text))
                if ban is not None:
                    return ban
        return None

    def inside(self, jail: str, net: str) -> list[Ban]:
        """Bans in ``jail`` on addresses or narrower networks inside the network ``net`` (not ``net`` itself)."""
        version, first, last = network_range(net)
        key = (jail, version)
        index = self._index.get(key)
        if index is None:
            index = self._index[key] = sorted((_start(ip), ip) for (j, ip) in self.active
                                              if j == jail and _version(ip) == version)
        lo = bisect.bisect_left(index, (first, ""))
        hi = bisect.bisect_right(index, (last, "~"))
        out = []
        for _, ip in index[lo:hi]:
            if ip != net:
                _, inner_first, inner_last = network_range(ip)
                if first <= inner_first and inner_last <= last:
                    out.append(self.active[(jail, ip)])
        return out

    def by_ip(self, ip: str) -> list[Ban]:
        """Bans of ``ip`` (an address or network) in every jail, including those of networks that hold it."""
        jails = {j for j, _ in self.active}
        return [b for b in (self.covering(j, ip) for j in sorted(jails)) if b is not None]

    def in_jail(self, jail: str) -> list[Ban]:
        return [b for (j, _), b in self.active.items() if j == jail]

    def next_expiry(self) -> float | None:
        while self._heap:
            when, jail, ip = self._heap[0]
            ban = self.active.get((jail, ip))
            if ban is not None and ban.expires == when:
                return when
            heapq.heappop(self._heap)
        return None

    def due(self, now: float) -> list[Ban]:
        """Remove and return the bans whose time is up."""
        out = []
        while self._heap and self._heap[0][0] <= now:
            when, jail, ip = heapq.heappop(self._heap)
            ban = self.active.get((jail, ip))
            if ban is not None and ban.expires == when:
                self.remove(jail, ip)
                out.append(ban)
        return out
