"""Unbans that are pending until every action of the jail has lifted them. Pure: times are passed in.

An unban (expiry, ``portsentinel unban``, a ban that ran out while the responder was stopped, a removed jail) is
first written to the store as pending, then its actions run. When one of them fails, the whole unban is tried again
after 1, 2, 4, 8, 16 s and then every minute, for as long as it takes (the actions are idempotent, so the ones that
had succeeded succeed again); it survives restarts through the store. A new ban of the same address in the same
jail cancels it.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field

from portsentinel.responder.core.bans import BACKOFF, Ban

LATER = 60.0


@dataclass(order=True)
class Pending:
    due: float
    ban: Ban = field(compare=False)
    reason: str = field(compare=False)
    since: float = field(compare=False)
    attempts: int = field(compare=False, default=0)


class PendingUnbans:
    """Pending unbans keyed by (jail, ip), with a heap of retry times (stale heap entries are skipped)."""

    def __init__(self) -> None:
        self.pending: dict[tuple[str, str], Pending] = {}
        self._heap: list[Pending] = []

    def __len__(self) -> int:
        return len(self.pending)

    def add(self, ban: Ban, reason: str, now: float, *, since: float | None = None) -> Pending:
        """Pending from now on, due at once."""
        p = Pending(now, ban, reason, now if since is None else since)
        self.pending[(ban.jail, ban.ip)] = p
        heapq.heappush(self._heap, p)
        return p

    def cancel(self, jail: str, ip: str) -> bool:
        """A new ban of the address: its pending unban must not lift it."""
        return self.pending.pop((jail, ip), None) is not None

    def done(self, p: Pending) -> None:
        if self.pending.get((p.ban.jail, p.ban.ip)) is p:
            del self.pending[(p.ban.jail, p.ban.ip)]

    def failed(self, p: Pending, now: float) -> float:
        """Schedule the next try; returns its delay in seconds."""
        delay = BACKOFF[p.attempts] if p.attempts < len(BACKOFF) else LATER
        p.attempts += 1
        p.due = now + delay
        if self.pending.get((p.ban.jail, p.ban.ip)) is p:
            heapq.heappush(self._heap, p)
        return delay

    def due(self, now: float) -> list[Pending]:
        """The pending unbans whose time to try has come (each once)."""
        out: dict[int, Pending] = {}
        while self._heap and self._heap[0].due <= now:
            p = heapq.heappop(self._heap)
            if self.pending.get((p.ban.jail, p.ban.ip)) is p:
                out[id(p)] = p
        return list(out.values())

    def next_due(self) -> float | None:
        while self._heap:
            p = self._heap[0]
            if self.pending.get((p.ban.jail, p.ban.ip)) is p:
                return p.due
            heapq.heappop(self._heap)
        return None
