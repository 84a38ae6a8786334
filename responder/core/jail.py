"""Failures within findtime → a ban decision, per jail. Pure: times are passed in."""

from __future__ import annotations

from collections import OrderedDict, deque
from typing import NamedTuple

from portsentinel.responder.config.jailconf import JailConfig

MAX_TRACKED = 100_000


class Failure(NamedTuple):
    """One matched record or line, reduced to what the jail needs (a named tuple: one per entry of a bulk)."""

    host: str  # canonical address
    time: float
    verified: bool = False
    port: int = 0
    proto: str = ""
    scan: str = ""
    mode: str = ""
    match: str = ""


class BanDecision(NamedTuple):
    jail: str
    host: str
    failures: int
    first: Failure
    matches: tuple[str, ...]


class Jail:
    """Counts failures per host in a sliding ``findtime`` window; ``maxretry`` of them make a ban."""

    def __init__(self, cfg: JailConfig) -> None:
        self.cfg = cfg
        self._seen: OrderedDict[str, deque[Failure]] = OrderedDict()
        self.failures_total = 0
        self.rejected_unverified = 0

    @property
    def name(self) -> str:
        return self.cfg.name

    def add(self, f: Failure) -> BanDecision | None:
        """Count a failure; a BanDecision when this one reaches maxretry (the host's count then restarts)."""
        if self.cfg.verified_only and not f.verified:
            self.rejected_unverified += 1
            return None
        self.failures_total += 1
        q = self._seen.get(f.host)
        if q is None and self.cfg.maxretry <= 1:  # banned at its first failure: nothing to remember
            return BanDecision(self.cfg.name, f.host, 1, f, (f.match,) if f.match else ())
        if q is None:
            q = deque()
            self._seen[f.host] = q
            if len(self._seen) > MAX_TRACKED:
                self._seen.popitem(last=False)
        else:
            self._seen.move_to_end(f.host)
        q.append(f)
        while q and f.time - q[0].time > self.cfg.findtime:
            q.popleft()
        if len(q) < self.cfg.maxretry:
            return None
        del self._seen[f.host]
        return BanDecision(self.cfg.name, f.host, len(q), q[0], tuple(x.match for x in q if x.match)[-10:])

    def forget(self, host: str) -> None:
        self._seen.pop(host, None)

    def tracked(self) -> int:
        return len(self._seen)
