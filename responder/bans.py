"""Active bans and their expiry; the bantime for repeat offenders. Pure: times are passed in."""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field

from .jailconf import JailConfig

FOREVER = -1.0


@dataclass
class Ban:
    jail: str
    ip: str
    banned_at: float
    expires: float  # FOREVER, or a wall-clock time
    count: int = 1  # this host's offence number in this jail
    failures: int = 1
    info: dict[str, str] = field(default_factory=dict)  # port, proto, scan, source…

    @property
    def bantime(self) -> float:
        return FOREVER if self.expires == FOREVER else self.expires - self.banned_at

    def remaining(self, now: float) -> float:
        return FOREVER if self.expires == FOREVER else max(0.0, self.expires - now)


def bantime_for(cfg: JailConfig, offence: int) -> float:
    """The jail's bantime, multiplied by ``factor`` per earlier offence when ``bantime.increment`` is on."""
    if cfg.bantime == FOREVER:
        return FOREVER
    if not cfg.bantime_increment or offence <= 1:
        return cfg.bantime
    return float(min(cfg.bantime * cfg.bantime_factor ** (offence - 1), max(cfg.bantime_maxtime, cfg.bantime)))


class BanBook:
    """Bans in force, keyed by (jail, ip), with a heap of expiries (stale heap entries are skipped)."""

    def __init__(self) -> None:
        self.active: dict[tuple[str, str], Ban] = {}
        self._heap: list[tuple[float, str, str]] = []

    def __len__(self) -> int:
        return len(self.active)

    def get(self, jail: str, ip: str) -> Ban | None:
        return self.active.get((jail, ip))

    def add(self, ban: Ban) -> None:
        self.active[(ban.jail, ban.ip)] = ban
        if ban.expires != FOREVER:
            heapq.heappush(self._heap, (ban.expires, ban.jail, ban.ip))

    def remove(self, jail: str, ip: str) -> Ban | None:
        return self.active.pop((jail, ip), None)

    def by_ip(self, ip: str) -> list[Ban]:
        return [b for (_, i), b in self.active.items() if i == ip]

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
                del self.active[(jail, ip)]
                out.append(ban)
        return out
