"""The responder's decisions, without I/O: entry → filter → trust → jail → guard → ban book.

The service feeds entries and the time in, and carries out what comes back (actions, records, store writes).
"""

from __future__ import annotations

import ipaddress
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from portsentinel import record as R
from portsentinel.responder.config.jailconf import JailConfig
from portsentinel.responder.core import remote
from portsentinel.responder.core.bans import FOREVER, Ban, BanBook, bantime_for
from portsentinel.responder.core.guard import NeverBan, PerMinuteCap
from portsentinel.responder.core.jail import Failure, Jail
from portsentinel.responder.core.share import SHARE
from portsentinel.responder.core.sources import Entry
from portsentinel.responder.core.trust import journal_trusted


class Hit(Protocol):
    """What a filter reports for a matching entry."""

    @property
    def host(self) -> str: ...


class Matcher(Protocol):
    def match_record(self, fields: Mapping[str, str]) -> Hit | None: ...

    def match_line(self, line: str) -> Hit | None: ...


@dataclass(slots=True)
class Decision:
    """One outcome for the service to carry out and log."""

    kind: str  # "ban", "unban" (the fleet's), "ignored", "forged", "invalid"
    jail: str
    ip: str
    reason: str = ""
    ban: Ban | None = None
    fields: dict[str, str] = field(default_factory=dict)
    #: Bans in the same jail that the new (wider) ban covers: lifted before it is applied (nft interval sets
    #: refuse overlapping elements, and one network is one ban).
    replaces: list[Ban] = field(default_factory=list)
    #: "unban": the bans to lift (already out of the book).
    lifts: list[Ban] = field(default_factory=list)
    #: Fields for the decision's record (a remote ban's origin).
    extra: dict[str, str] = field(default_factory=dict)


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
    #: The matcher's record_host when it has one (responder.filter.filters: a record's canonical address without
    #: its Failure); else the engine takes match_record's hit.
    record_host: Callable[[Mapping[str, str]], str | None] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.record_host is None:
            self.record_host = getattr(self.matcher, "record_host", None)


class OffenceCounts(Protocol):
    def offences(self, jail: str, ip: str) -> int: ...


#: A ban decision's reason for the usual counts of failures.
_FAILURES = {n: f"{n} failure(s)" for n in range(1, 11)}

#: A batch of at least this many entries has its offence counts looked up at once (Engine.prefetch).
PREFETCH_MIN = 8

#: Wider IPv6 networks remembered for escalation (jail, network) → times of the bans inside it.
MAX_ESCALATION = 10_000


#: The fields a local jail's entry gives its failure (module names: 100,000 entries read them), and the usual
#: port numbers' texts.
_PORT, _VERIFIED, _PROTO, _SCAN, _MODE, _MESSAGE = R.F_PORT, R.F_VERIFIED, R.F_PROTO, R.F_SCAN, R.F_MODE, R.F_MESSAGE
PORT_NUMBERS = {str(n): n for n in range(1025)}


def local_info(port: str, proto: str, scan: str, mode: str, share: bool, verified: bool) -> dict[str, str]:
    """A local ban's info (Ban.info): its failure's port, protocol, scan kind and mode, those that are not empty,
    and when its jail shares its bans the share mark and whether the source was verified."""
    info: dict[str, str] = {}
    if port:
        info["port"] = port
    if proto:
        info["proto"] = proto
    if scan:
        info["scan"] = scan
    if mode:
        info["mode"] = mode
    if share:
        info[SHARE] = "1"
        info["verified"] = "1" if verified else "0"
    return info


class Engine:
    def __init__(self, jails: list[JailRuntime], never: NeverBan, book: BanBook, offences: OffenceCounts) -> None:
        self.jails = {j.cfg.name: j for j in jails}
        self.never = never
        self.book = book
        self.offences = offences
        self._wide: OrderedDict[tuple[str, str], deque[float]] = OrderedDict()
        #: Offence counts of the batch being decided (prefetch), per jail: (the targets looked up, target -> count
        #: of those with a row and of the batch's bans so far); None outside a batch.
        self._counts: dict[str, tuple[set[str], dict[str, int]]] | None = None

    def prefetch(self, source: str, entries: Sequence[Entry]) -> None:
        """Before deciding a batch read from ``source``: the offence counts of its sources (PS_SRC_NET, else
        PS_SRC) in every jail reading it, looked up at once (``offences_many``: one query per 500, not one per
        ban). A ban of another target (a prefix network of a local jail) still asks on its own. Until
        :meth:`end_batch`."""
        many = getattr(self.offences, "offences_many", None)
        self._counts = None
        if many is None or len(entries) < PREFETCH_MIN:
            return
        net, src = R.F_SRC_NET, R.F_SRC
        targets = {t for e in entries if (t := e.fields.get(net) or e.fields.get(src))}
        counts: dict[str, tuple[set[str], dict[str, int]]] = {}
        for rt in self.jails.values():
            if rt.source == source and targets and not rt.cfg.fleet:  # (the fleet jail counts no offences)
                counts[rt.cfg.name] = (targets, dict(many(rt.cfg.name, targets)))
        self._counts = counts

    def end_batch(self) -> None:
        self._counts = None

    def offences_before(self, jail: str, target: str) -> int:
        """The offence count of ``target`` in ``jail`` so far (before this ban)."""
        if self._counts is not None:
            known = self._counts.get(jail)
            if known is not None:
                count = known[1].get(target)
                if count is not None:
                    return count
                if target in known[0]:
                    return 0  # looked up: no row
        return self.offences.offences(jail, target)

    def count_offence(self, jail: str, target: str) -> int:
        """The offence number of a new ban of ``target`` in ``jail``, remembered for the rest of the batch."""
        count = self.offences_before(jail, target) + 1
        self.note_offence(jail, target, count)
        return count

    def note_offence(self, jail: str, target: str, count: int) -> None:
        """A new ban's offence number, remembered for the rest of the batch (the store has it once the batch's
        bans are committed)."""
        if self._counts is not None:
            known = self._counts.get(jail)
            if known is None:
                known = self._counts[jail] = (set(), {})
            known[1][target] = count

    @staticmethod
    def network(cfg: JailConfig, ip: str) -> str:
        """The network ``ip`` is counted and banned by in the jail (ban_prefix_v4 / ban_prefix_v6)."""
        return R.source_network(ip, cfg.ban_prefix_v4, cfg.ban_prefix_v6)

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
        host: str | None
        if e.line:
            hit = rt.matcher.match_line(e.line)
            host = None if hit is None else hit.host
        elif rt.record_host is not None:
            host = rt.record_host(e.fields)
        else:
            hit = rt.matcher.match_record(e.fields)
            host = None if hit is None else hit.host
        if host is None:
            return None
        try:
            ip = R.canonical_address(host)
        except ValueError:
            return Decision("invalid", name, "", f"matched host {host[:80]!r} is not an IP address")
        if rt.journal:
            why = journal_trusted(e.fields, rt.cfg)
            if why is not None:
                return Decision("forged", name, ip, f"record not trusted: {why}", fields=dict(e.fields))
        elif e.fields and not e.trusted:
            return Decision("forged", name, ip, "record from an untrusted file (owner or mode)")
        if rt.cfg.fleet:
            return self._remote(rt, e.fields, now)
        get = e.fields.get
        port_text = get(_PORT, "") or "0"
        port = PORT_NUMBERS.get(port_text)
        if port is None:
            if not (port_text.isascii() and port_text.isdigit() and int(port_text) <= 65535):
                return Decision("invalid", name, ip, f"{R.F_PORT} {port_text[:20]!r} is not a port number")
            port = int(port_text)
        return self.fail(rt, ip, now, None, verified=get(_VERIFIED) == "1", port=port, proto=get(_PROTO, ""),
                         scan=get(_SCAN, ""), mode=get(_MODE, ""), match=(e.line or get(_MESSAGE, ""))[:300])

    def fail(self, rt: JailRuntime, ip: str, now: float, counter: Jail | None = None, *, verified: bool = False,
             port: int = 0, proto: str = "", scan: str = "", mode: str = "", match: str = "") -> Decision | None:
        """One failure of the canonical address ``ip`` in the jail, counted for its network (an IPv6 /64 by
        default: a scanner rotating its address is one source); a ban Decision when the jail says so. ``counter``
        counts instead of the jail's own (the kernel trap's maxretry)."""
        net = self.network(rt.cfg, ip)
        if self.book.covering(rt.cfg.name, ip) is not None:
            return None  # already banned here (the address, or a network that holds it): nothing runs again
        f = Failure(net, now, verified=verified, port=port, proto=proto, scan=scan, mode=mode, match=match)
        decision = (counter or rt.jail).add(f)
        if decision is None:
            return None
        return self._ban(rt, ip, now, decision.failures, f, net=net)

    # ------------------------------------------------------------------ the fleet (responder.core.remote)
    def _remote(self, rt: JailRuntime, fields: Mapping[str, str], now: float) -> Decision | None:
        """A trusted line of the fleet daemon: a remote ban, the fleet jail's unban, or a fleet-wide unban."""
        name = rt.cfg.name
        try:
            r = remote.parse(fields)
        except ValueError as exc:
            return Decision("invalid", name, "", f"fleet line not applied: {exc}")
        if r.event == "unban":
            if r.fleet_wide:
                lifts = self.unban(r.target)
            else:
                ban = self.book.get(name, r.target)
                lifts = [ban] if ban is not None else []
                if ban is not None:
                    self.book.remove(name, ban.ip)
            why = (f"fleet-wide unban from {r.origin}" if r.fleet_wide
                   else f"unbanned by {r.origin} (jail {r.origin_jail})")
            extra = {**r.fields(), **({R.F_FLEET: "1"} if r.fleet_wide else {})}
            return Decision("unban", name, r.target, why, lifts=lifts, extra=extra)
        assert r.until is not None  # parse() requires it on a ban
        seconds = remote.bantime(rt.cfg, r.until, r.origins, now)
        if seconds is None:  # over at its origin: counted, not recorded (a file read from its start has many)
            rt.ignored_total += 1
            return None
        old = self.book.covering(name, r.target)
        if old is not None and not (old.ip == r.target and remote.renews(old.expires, now + seconds)):
            return None  # banned here already, at least as long: nothing runs again
        d = self._ban(rt, r.src, now, 1, None, net=r.target, seconds=seconds, info=r.info(), replace=old)
        if d.kind != "ban":
            d.extra.update(r.fields())
        return d

    def _ban(self, rt: JailRuntime, ip: str, now: float, failures: int, f: Failure | None,
             *, manual: bool = False, net: str = "", seconds: float | None = None,
             info: dict[str, str] | None = None, replace: Ban | None = None) -> Decision:
        """``seconds`` and ``info`` (with ``replace``, the ban it renews): a remote ban from the fleet (``info``
        becomes the ban's own dict, not copied)."""
        cfg = rt.cfg
        name = cfg.name
        why = self.never.why(ip, cfg.ignoreip, cfg.ignoreself)
        if why is not None:
            rt.ignored_total += 1
            return Decision("ignored", name, ip, f"never banned: {why}")
        if net and "/" in net:
            target, note = self.never.safe_target(ip, net, cfg.ignoreip, cfg.ignoreself)
            if not manual and seconds is None and "/" in target:
                target, note = self._escalate(rt, ip, target, now, note)
        else:
            target, note = net or ip, ""
        if not manual and replace is None and not rt.cap.allow(now):  # one network is one ban against the cap
            rt.ignored_total += 1
            return Decision("ignored", name, ip,
                            f"ban cap reached ({rt.cfg.maxbans_per_minute} per minute): not executed")
        # a remote ban (``seconds`` given) is its origin's offence (info origin_offence): no local count of its own
        count = 1 if seconds is not None else self.count_offence(name, target)
        if seconds is None:
            seconds = bantime_for(rt.cfg, count)
            if f is not None:
                _, _, verified, port, proto, scan, mode, _ = f
                info = local_info(str(port) if port else "", proto, scan, mode, rt.cfg.share, verified)
            else:
                info = local_info("", "", "", "", rt.cfg.share, False)
        if info is None:
            info = {}
        if target != ip:
            info["src"] = ip  # the address whose record made the ban: PS_SRC of the ban record
        if note:
            info["note"] = f"{info['note']}; {note}" if info.get("note") else note
        ban = Ban(name, target, now, FOREVER if seconds == FOREVER else now + seconds, count, failures, info,
                  matches="" if f is None else f.match)
        replaces = self.book.inside(name, target) if "/" in target else []
        if replace is not None and replace.ip == target:
            replaces.append(replace)
        for old in replaces:
            self.book.remove(name, old.ip)
        self.book.add(ban)
        rt.bans_total += 1
        return Decision("ban", name, target, "manual" if manual else _FAILURES.get(failures) or
                        f"{failures} failure(s)", ban, replaces=replaces)

    def _escalate(self, rt: JailRuntime, ip: str, target: str, now: float, note: str) -> tuple[str, str]:
        """The IPv6 network ``target``, or the wider ban_prefix_v6_escalate network around it when this makes
        ban_prefix_v6_escalate_after networks of it banned within ban_prefix_v6_escalate_window (and the wider
        network holds no protected address)."""
        cfg = rt.cfg
        if not cfg.ban_prefix_v6_escalate or ":" not in target:
            return target, note
        wide = R.source_network(ip, 32, cfg.ban_prefix_v6_escalate)
        key = (cfg.name, wide)
        times = self._wide.get(key)
        if times is None:
            times = self._wide[key] = deque()
            if len(self._wide) > MAX_ESCALATION:
                self._wide.popitem(last=False)
        else:
            self._wide.move_to_end(key)
        while times and now - times[0] > cfg.ban_prefix_v6_escalate_window:
            times.popleft()
        times.append(now)
        if len(times) < cfg.ban_prefix_v6_escalate_after:
            return target, note
        safe, why = self.never.safe_target(ip, wide, cfg.ignoreip, cfg.ignoreself)
        if safe != wide:
            return target, (note + "; " if note else "") + f"no escalation to {wide}: {why}"
        del self._wide[key]
        return wide, (f"{len(times)} networks of {wide} banned within "
                      f"{int(cfg.ban_prefix_v6_escalate_window)}s: escalated to {wide}")

    def manual_ban(self, jail: str, ip: str, now: float) -> Decision:
        rt = self.jails.get(jail)
        if rt is None:
            raise KeyError(f"no such jail: {jail}")
        target = R.canonical_network(ip.strip())  # an address, or a network (ADDRESS/PREFIX)
        if self.book.covering(jail, target) is not None:
            return Decision("ignored", jail, target, "already banned")
        if "/" not in target:
            return self._ban(rt, target, now, 0, None, manual=True)
        first = str(ipaddress.ip_network(target).network_address)
        return self._ban(rt, first, now, 0, None, manual=True, net=target)

    def unban(self, ip: str | None) -> list[Ban]:
        """Lift the bans of ``ip`` in every jail (``None``: every ban)."""
        if ip is None:
            bans = list(self.book.active.values())
        else:
            bans = self.book.by_ip(R.canonical_network(ip.strip()))
        for b in bans:
            self.book.remove(b.jail, b.ip)
            rt = self.jails.get(b.jail)
            if rt is not None:
                rt.jail.forget(b.ip)
        return bans
