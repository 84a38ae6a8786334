"""What a bucket entry means here: the watcher's pure half (docs/fleet.md, "Applying"). No I/O, clock passed in.

Each entry (key, operation, value) of another host becomes at most one JSON line for the responder's ``[fleet]``
jail. The origin is the key's first token (the server lets a host write only under its own name), never the
value's. In order:

- a key outside the grammar, an origin not in ``origins``, or a value that fails :mod:`.codec` is refused with
  its reason (the service aggregates refusals into a few audit records);
- a ban: active cap per origin (``origin_max``, catch-up included), then per-origin rate cap over the last
  60 s (``origin_rate``, live updates only: a joining host takes the whole active set at once); a ban already
  known (same origin, jail, address) is a renewal and costs neither;
- a delete of a ban key: the ban is forgotten; an ``unban`` line is written only when the ban was still running
  (an early unban at the origin) and no other origin still bans the address. A ban that simply ran out is not
  lifted from here: the fleet jail banned for the remaining time, and its own timer ends it;
- a fleet-wide unban marker (``<host>._unban.<addr>``) from an origin in ``unban_origins`` lifts every remote ban
  of the address (one ``unban`` line with ``PS_ORIGIN_JAIL=_unban``, which the responder also applies to its local
  jails), asks the service to delete this host's own keys for it, and makes older bans of it (by ``at``) void.

Expired bans are dropped by :meth:`Applier.expire`; ``PS_ORIGINS`` counts the distinct trusted origins whose ban
of the address is running.
"""

from __future__ import annotations

import heapq
from collections import Counter, deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import NamedTuple

from . import codec as C
from .config import FleetConfig
from .consumer import Entry
from .keys import UNBAN_JAIL, V4_KEY, BadKey, Key, parse_key

PUT, DEL, PURGE = "PUT", "DEL", "PURGE"
RATE_WINDOW = 60.0


class Line(NamedTuple):
    """One line for the responder: ``event`` ban or unban of ``addr`` from ``origin``."""

    event: str
    addr: str
    origin: str
    origin_jail: str
    until: float
    origins: int
    scan: str = ""
    verified: int = 0
    offence: int = 1


@dataclass
class Outcome:
    line: Line | None = None
    #: Why the entry was refused (None: accepted or nothing to do); ``origin`` names who sent it.
    refused: str | None = None
    origin: str = ""
    expired: bool = False
    #: Addresses whose bans this host must delete from the bucket (a fleet-wide unban).
    delete_own: tuple[str, ...] = ()


BanId = tuple[str, str, str]  # origin, jail, addr


@dataclass
class Applied:
    """What :meth:`Applier.apply_many` made of a list of entries."""

    lines: list[Line]
    #: (origin, reason) of each refused entry; entries whose ban had run out; addresses whose own keys to delete.
    refused: list[tuple[str, str]]
    expired: int
    delete_own: list[str]
    #: (key, exception) of entries that made the applier raise (skipped: a remote entry never stops the watch).
    errors: list[tuple[str, Exception]]


class Applier:
    def __init__(self, settings: FleetConfig) -> None:
        self.s = settings
        self.bans: dict[BanId, C.Ban] = {}
        #: addr -> the id of its one ban, or the set of ids when several origins or jails ban it (a catch-up of
        #: 100,000 addresses makes no set at all).
        self._by_addr: dict[str, BanId | set[BanId]] = {}
        self.active: Counter[str] = Counter()
        self._recent: dict[str, deque[float]] = {}
        self._expiry: list[tuple[float, BanId]] = []
        #: Fleet-wide unbans in force: addr -> (at, until).
        self.lifted: dict[str, tuple[float, float]] = {}
        #: Bans added, changed (the ban now) or removed (None) since the last :meth:`take_changes` (the service
        #: persists them).
        self.changed: dict[BanId, C.Ban | None] = {}

    # ------------------------------------------------------------------ state
    def load(self, rows: Iterable[tuple[str, C.Ban]], now: float) -> None:
        """Bans kept from a previous run (sqlite): taken as they were, without caps; expired ones skipped."""
        for origin, ban in rows:
            if ban.until > now:
                self._add((origin, ban.jail, ban.addr), ban)
        self.changed.clear()

    def _add(self, bid: BanId, ban: C.Ban) -> None:
        if bid not in self.bans:
            self.active[bid[0]] += 1
            ids = self._by_addr.get(bid[2])
            if ids is None:
                self._by_addr[bid[2]] = bid
            elif isinstance(ids, tuple):
                self._by_addr[bid[2]] = {ids, bid}
            else:
                ids.add(bid)
        self.bans[bid] = ban
        heapq.heappush(self._expiry, (ban.until, bid))
        self.changed[bid] = ban

    def _remove(self, bid: BanId) -> C.Ban | None:
        ban = self.bans.pop(bid, None)
        if ban is None:
            return None
        self.active[bid[0]] -= 1
        if not self.active[bid[0]]:
            del self.active[bid[0]]
        ids = self._by_addr[bid[2]]
        if isinstance(ids, tuple):
            del self._by_addr[bid[2]]
        else:
            ids.discard(bid)
            if len(ids) == 1:
                self._by_addr[bid[2]] = next(iter(ids))
        self.changed[bid] = None
        return ban

    def origins_of(self, addr: str, now: float) -> int:
        """Distinct origins whose ban of ``addr`` is running."""
        ids = self._by_addr.get(addr)
        if ids is None:
            return 0
        if isinstance(ids, tuple):  # the common case: one ban of it
            return 1 if self.bans[ids].until > now else 0
        return len({bid[0] for bid in ids if self.bans[bid].until > now})

    def _ids(self, addr: str) -> list[BanId]:
        ids = self._by_addr.get(addr)
        if ids is None:
            return []
        return [ids] if isinstance(ids, tuple) else list(ids)

    def expire(self, now: float) -> int:
        """Forget bans whose ``until`` has passed (no line: the fleet jail's own bantime ends them)."""
        count = 0
        while self._expiry and self._expiry[0][0] <= now:
            until, bid = heapq.heappop(self._expiry)
            ban = self.bans.get(bid)
            if ban is not None and ban.until == until:
                self._remove(bid)
                count += 1
        for addr in [a for a, (_, until) in self.lifted.items() if until <= now]:
            del self.lifted[addr]
        if len(self._expiry) > 2 * len(self.bans) + 1024:  # renewals leave stale heap entries: rebuild
            self._expiry = [(b.until, bid) for bid, b in self.bans.items()]
            heapq.heapify(self._expiry)
        return count

    def take_changes(self) -> dict[BanId, C.Ban | None]:
        """Each changed ban id with its ban now (None: removed), for the state database; starts a new set."""
        out, self.changed = self.changed, {}
        return out

    # ------------------------------------------------------------------ entries
    def apply_many(self, entries: Iterable[Entry], now: float, live_age: float) -> Applied:
        """Every entry as :meth:`entry` takes it, in order (an entry stored less than ``live_age`` seconds ago is
        a live update). The common one of a catch-up — a well-formed ban of a plain IPv4 address by a trusted
        origin, in :data:`.codec.BAN_SHAPE` — is taken here in one loop with the same checks in the same order;
        every other entry, and any that fails a check, goes through :meth:`entry`."""
        out = Applied([], [], 0, [], [])
        lines, refused, errors = out.lines, out.refused, out.errors
        host, origins, origin_max, maxtime = self.s.host, self.s.origins, self.s.origin_max, self.s.maxtime
        key_match, value_match, scans = V4_KEY.fullmatch, C.BAN_SHAPE.fullmatch, C.SCANS
        bans, by_addr, active, lifted, changed = self.bans, self._by_addr, self.active, self.lifted, self.changed
        expiry, push = self._expiry, heapq.heappush
        max_at, max_until, live_since = now + C.CLOCK_SKEW, now + maxtime, now - live_age
        new_tuple = tuple.__new__  # Ban(...) and Line(...) without their Python-level __new__
        for key, op, value, _seq, _pending, stamp in entries:
            try:
                km = key_match(key) if op == PUT else None
                vm = value_match(value) if km is not None else None
                if vm is not None:
                    origin, jail, token = km.groups()  # type: ignore[union-attr]
                    addr_b, jail_b, until_b, scan_b, verified_b, offence_b, at_b = vm.groups()
                    addr = token.replace("-", ".")
                    scan = scan_b.decode()
                    offence = int(offence_b)
                    at = float(at_b)
                    until = float(until_b)
                    bid = (origin, jail, addr)
                    new = bid not in bans
                    if (origin != host and jail != UNBAN_JAIL and (origins is None or origin in origins)
                            and addr_b.decode() == addr and jail_b.decode() == jail and scan in scans
                            and offence <= C.MAX_OFFENCE and at <= max_at and now < until <= max_until
                            and addr not in lifted
                            and (not new or (active[origin] < origin_max
                                             and (stamp <= live_since or self._rate_ok(origin, now))))):
                        verified = int(verified_b)
                        ban = new_tuple(C.Ban, (addr, jail, until, scan, verified, offence, at))
                        bans[bid] = ban
                        if new:
                            active[origin] += 1
                            ids = by_addr.get(addr)
                            if ids is None:
                                by_addr[addr] = bid
                                count = 1
                            else:
                                by_addr[addr] = {ids, bid} if isinstance(ids, tuple) else ids | {bid}
                                count = self.origins_of(addr, now)
                        else:
                            count = self.origins_of(addr, now)
                        push(expiry, (until, bid))
                        changed[bid] = ban
                        lines.append(new_tuple(Line, ("ban", addr, origin, jail, until, count, scan, verified,
                                                      offence)))
                        continue
                one = self.entry(key, op, value, now, live=stamp > live_since)
            except Exception as exc:
                errors.append((key, exc))
                continue
            if one.line is not None:
                lines.append(one.line)
            elif one.refused:
                refused.append((one.origin, one.refused))
            elif one.expired:
                out.expired += 1
            out.delete_own += one.delete_own
        return out

    def entry(self, key: str, op: str, value: bytes, now: float, *, live: bool) -> Outcome:
        """One entry of the bucket's watch (``op`` PUT, DEL or PURGE), applied to this host's view."""
        try:
            k = parse_key(key)
        except BadKey as exc:
            return Outcome(refused=str(exc), origin=key.split(".", 1)[0][:64])
        origin = k.host
        if origin == self.s.host and not k.unban:
            return Outcome()  # our own ban, back from the bucket
        if origin != self.s.host and not self.s.trusts(origin):
            return Outcome(refused=f"origin {origin} is not in origins", origin=origin)
        if k.unban:
            return self._unban(k.addr, origin, op, value, now)
        bid = (origin, k.jail, k.addr)
        if op != PUT:
            return self._deleted(bid, now)
        try:
            ban = C.decode_ban(value, k, now, self.s.maxtime)
        except C.Expired:
            self._remove(bid)
            return Outcome(expired=True, origin=origin)
        except C.BadValue as exc:
            return Outcome(refused=f"{key}: {exc}", origin=origin)
        lifted = self.lifted.get(k.addr)
        if lifted is not None and ban.at <= lifted[0]:
            return Outcome(refused=f"{key}: lifted fleet-wide after this ban was made", origin=origin)
        if bid not in self.bans:
            if self.active[origin] >= self.s.origin_max:
                return Outcome(refused=f"origin {origin}: {self.s.origin_max} active bans (origin_max)", origin=origin)
            if live and not self._rate_ok(origin, now):
                return Outcome(refused=f"origin {origin}: over {self.s.origin_rate} bans a minute (origin_rate)",
                               origin=origin)
        self._add(bid, ban)
        line = Line("ban", k.addr, origin, k.jail, ban.until, self.origins_of(k.addr, now), ban.scan, ban.verified,
                    ban.offence)
        return Outcome(line=line, origin=origin)

    def _rate_ok(self, origin: str, now: float) -> bool:
        recent = self._recent.get(origin)
        if recent is None:
            recent = self._recent[origin] = deque()
        while recent and recent[0] <= now - RATE_WINDOW:
            recent.popleft()
        if len(recent) >= self.s.origin_rate:
            return False
        recent.append(now)
        return True

    def _deleted(self, bid: BanId, now: float) -> Outcome:
        ban = self._remove(bid)
        if ban is None or ban.until <= now + 1.0:
            return Outcome(origin=bid[0])
        left = self.origins_of(bid[2], now)
        if left:
            return Outcome(origin=bid[0])
        return Outcome(line=Line("unban", bid[2], bid[0], bid[1], ban.until, 0, ban.scan, ban.verified, ban.offence),
                       origin=bid[0])

    def _unban(self, addr: str, origin: str, op: str, value: bytes, now: float) -> Outcome:
        if op != PUT:
            return Outcome(origin=origin)  # the marker aged out or was withdrawn: nothing to undo
        if not self.s.may_unban(origin):
            return Outcome(refused=f"origin {origin} is not in unban_origins", origin=origin)
        try:
            marker = C.decode_unban(value, Key(origin, UNBAN_JAIL, addr), now, self.s.maxtime)
        except C.Expired:
            return Outcome(expired=True, origin=origin)
        except C.BadValue as exc:
            return Outcome(refused=f"{origin}.{UNBAN_JAIL}.{addr}: {exc}", origin=origin)
        self.lifted[addr] = (marker.at, marker.until)
        for bid in self._ids(addr):
            self._remove(bid)
        return Outcome(line=Line("unban", addr, origin, UNBAN_JAIL, marker.until, 0), origin=origin,
                       delete_own=(addr,))
