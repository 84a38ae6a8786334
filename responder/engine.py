"""The responder's decisions, without I/O: entry → filter → trust → jail → guard → ban book.

The service feeds entries and the time in, and carries out what comes back (actions, records, store writes).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from portsentinel import record as R

from .bans import FOREVER, Ban, BanBook, bantime_for
from .guard import NeverBan, PerMinuteCap
from .jail import Failure, Jail
from .jailconf import JailConfig
from .sources import Entry
from .trust import journal_trusted


class Hit(Protocol):
    """What a filter reports for a matching entry."""

    @property
    def host(self) -> str: ...


class Matcher(Protocol):
    def match_record(self, fields: Mapping[str, str]) -> Hit | None: ...

    def match_line(self, line: str) -> Hit | None: ...


@dataclass
class Decision:
    """One outcome for the service to carry out and log."""

    kind: str  # "ban", "ignored", "forged", "invalid"
    jail: str
    ip: str
    reason: str = ""
    ban: Ban | None = None
    fields: dict[str, str] = field(default_factory=dict)


@dataclass
class JailRuntime:
    cfg: JailConfig
    matcher: Matcher
    jail: Jail
    cap: PerMinuteCap
    source: str  # name of the source it reads
    journal: bool  # entries come from the journal (trust by trusted fields)
    bans_total: int = 0
    ignored_total: int = 0


class OffenceCounts(Protocol):
    def offences(self, jail: str, ip: str) -> int: ...


class Engine:
    def __init__(self, jails: list[JailRuntime], never: NeverBan, book: BanBook, offences: OffenceCounts) -> None:
        self.jails = {j.cfg.name: j for j in jails}
        self.never = never
        self.book = book
        self.offences = offences

    def entry(self, source: str, e: Entry, now: float) -> list[Decision]:
        """Every jail reading ``source`` looks at the entry."""
        out: list[Decision] = []
        for rt in self.jails.values():
            if rt.source != source:
                continue
            d = self._jail_entry(rt, e, now)
            if d is not None:
                out.append(d)
        return out

    def _jail_entry(self, rt: JailRuntime, e: Entry, now: float) -> Decision | None:
        name = rt.cfg.name
        if e.error:
            return None  # the service logs unparsable lines once, not per jail
        hit = rt.matcher.match_line(e.line) if e.line else rt.matcher.match_record(e.fields)
        if hit is None:
            return None
        try:
            ip = R.canonical_address(hit.host)
        except ValueError:
            return Decision("invalid", name, "", f"matched host {hit.host[:80]!r} is not an IP address")
        if rt.journal:
            why = journal_trusted(e.fields, rt.cfg)
            if why is not None:
                return Decision("forged", name, ip, f"record not trusted: {why}", fields=dict(e.fields))
        elif e.fields and not e.trusted:
            return Decision("forged", name, ip, "record from an untrusted file (owner or mode)")
        f = Failure(ip, now, verified=e.fields.get(R.F_VERIFIED) == "1",
                    port=int(e.fields.get(R.F_PORT, "0") or 0), proto=e.fields.get(R.F_PROTO, ""),
                    scan=e.fields.get(R.F_SCAN, ""), match=(e.line or e.fields.get(R.F_MESSAGE, ""))[:300])
        if self.book.get(name, ip) is not None:
            return None  # already banned here: nothing is run again
        decision = rt.jail.add(f)
        if decision is None:
            return None
        return self._ban(rt, ip, now, decision.failures, f)

    def _ban(self, rt: JailRuntime, ip: str, now: float, failures: int, f: Failure | None,
             *, manual: bool = False) -> Decision:
        name = rt.cfg.name
        why = self.never.why(ip, rt.cfg.ignoreip, rt.cfg.ignoreself)
        if why is not None:
            rt.ignored_total += 1
            return Decision("ignored", name, ip, f"never banned: {why}")
        if not manual and not rt.cap.allow(now):
            rt.ignored_total += 1
            return Decision("ignored", name, ip,
                            f"ban cap reached ({rt.cfg.maxbans_per_minute} per minute): not executed")
        count = self.offences.offences(name, ip) + 1
        seconds = bantime_for(rt.cfg, count)
        info = {} if f is None else {k: str(v) for k, v in (("port", f.port), ("proto", f.proto), ("scan", f.scan))
                                     if v}
        ban = Ban(name, ip, now, FOREVER if seconds == FOREVER else now + seconds, count, failures, info)
        self.book.add(ban)
        rt.bans_total += 1
        return Decision("ban", name, ip, "manual" if manual else f"{failures} failure(s)", ban)

    def manual_ban(self, jail: str, ip: str, now: float) -> Decision:
        rt = self.jails.get(jail)
        if rt is None:
            raise KeyError(f"no such jail: {jail}")
        ip = R.canonical_address(ip.strip())
        if self.book.get(jail, ip) is not None:
            return Decision("ignored", jail, ip, "already banned")
        return self._ban(rt, ip, now, 0, None, manual=True)

    def unban(self, ip: str | None) -> list[Ban]:
        """Lift the bans of ``ip`` in every jail (``None``: every ban)."""
        if ip is None:
            bans = list(self.book.active.values())
        else:
            bans = self.book.by_ip(R.canonical_address(ip.strip()))
        for b in bans:
            self.book.remove(b.jail, b.ip)
            rt = self.jails.get(b.jail)
            if rt is not None:
                rt.jail.forget(b.ip)
        return bans
