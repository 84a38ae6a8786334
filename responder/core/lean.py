"""The engine's short way for a batch of records (a flood of scans: 10,000 detector records at once; a fleet
catch-up: 100,000 of the fleet daemon's lines).

A local jail that bans at the first failure (``maxretry`` 1, any record, IPv4 addresses banned as themselves),
and the fleet jail, decide most records of a batch the same few ways: already banned, or a new ban.
:func:`decide` takes each such record straight to its ban, with no Failure, BanDecision or Decision object and no
call per step, and hands every other entry to :meth:`Engine.entry` (a line, an unreadable entry, an IPv6 network,
an untrusted record, a never-ban address, a full ban cap, a host the jail still counts, a remote unban, a renewal,
a line the parser refuses...), before anything is counted for it, so each entry is decided exactly once, by one
of the two ways. The property tests (tests/unit/responder/core/test_lean.py) hold it to "the same bans,
decisions, counters and offence counts as Engine.entry for every batch".
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from portsentinel import record as R
from portsentinel.responder.config.jailconf import JailConfig
from portsentinel.responder.core import remote
from portsentinel.responder.core.bans import FOREVER, Ban, BanBook, bantime_for
from portsentinel.responder.core.engine import PORT_NUMBERS as _PORTS
from portsentinel.responder.core.engine import Engine, JailRuntime, local_info
from portsentinel.responder.core.guard import PerMinuteCap
from portsentinel.responder.core.sources import Entry
from portsentinel.responder.core.trust import journal_trusted

#: Batches of fewer entries go the long way (a few records: nothing to gain).
MIN_BATCH = 64
_PORT, _VERIFIED, _PROTO, _SCAN, _MODE, _MESSAGE = R.F_PORT, R.F_VERIFIED, R.F_PROTO, R.F_SCAN, R.F_MODE, R.F_MESSAGE
#: filter.d/portsentinel-fleet.conf's journalmatch, as the filter holds it.
_FLEET_MATCH = [{R.F_IDENT: R.FLEET_IDENTIFIER, R.F_EVENT: event} for event in ("ban", "unban")]
#: filter.d/portsentinel.conf's.
_SCAN_MATCH = [{R.F_IDENT: R.DETECTOR_IDENTIFIER, R.F_EVENT: "scan"}]
_IDENT, _EVENT, _SRC, _DETECTOR = R.F_IDENT, R.F_EVENT, R.F_SRC, R.DETECTOR_IDENTIFIER


def _stock(rt: JailRuntime, journalmatch: list[dict[str, str]]) -> bool:
    """The jail's filter decides a record from its PS_SRC field (no ignoreregex) when the record is one of
    ``journalmatch`` (one group of SYSLOG_IDENTIFIER and PS_EVENT): the stock filters, whose record_host the short
    ways compute inline."""
    matcher = rt.matcher
    rules = getattr(getattr(matcher, "record_rules", None), "match", None)
    return (getattr(matcher, "hostfield", "") == R.F_SRC and getattr(matcher, "journalmatch", None) == journalmatch
            and rules is not None and not rules.ignoreregex)


def jail_of(engine: Engine, source: str, batch: int = MIN_BATCH) -> JailRuntime | None:
    """The one jail reading ``source`` when :func:`decide` may take a batch of ``batch`` of its records (at least
    :data:`MIN_BATCH`), its filter naming the host field (``record_host``): the fleet jail, or a local jail
    banning at the first failure of any record, an IPv4 address as itself; None otherwise (Engine.entry decides
    every entry)."""
    if batch < MIN_BATCH:
        return None
    found = [rt for rt in engine.jails.values() if rt.source == source]
    if len(found) != 1:
        return None
    rt = found[0]
    cfg = rt.cfg
    if rt.record_host is None:
        return None
    if cfg.fleet:
        return rt
    if cfg.maxretry > 1 or cfg.verified_only or cfg.ban_prefix_v4 != 32 or rt.jail.cfg is not cfg:
        return None
    return rt


def _common(engine: Engine, rt: JailRuntime) -> tuple[JailConfig, str, Callable[[Mapping[str, str]], str | None],
                                                        BanBook, dict[tuple[str, str], Ban],
                                                        dict[tuple[str, int], Counter[int]],
                                                        Callable[..., str | None], Any, bool, PerMinuteCap]:
    """What both ways read per entry, as locals: the jail's configuration and name, its filter's record_host, the
    ban book, its bans, its network bans' prefix counts (a network ban may hold an address), the never-ban check
    with the jail's ignoreip and ignoreself, the ban cap."""
    cfg = rt.cfg
    assert rt.record_host is not None  # (jail_of)
    book = engine.book
    return (cfg, cfg.name, rt.record_host, book, book.active, book._plens,  # noqa: SLF001
            engine.never.why, cfg.ignoreip, cfg.ignoreself, rt.cap)


def decide(engine: Engine, rt: JailRuntime, source: str, entries: Sequence[Entry], now: float,
           bans: list[Ban], slow: Callable[[Entry], None]) -> list[tuple[Ban, dict[str, str]]]:
    """The batch's entries in order: each new ban appended to ``bans``, every entry it does not take handed to
    ``slow`` (the service's long way: an unreadable entry reported, Engine.entry's decisions carried out) at its
    place. Returns the new bans with their records' fields (for the metrics)."""
    if rt.cfg.fleet:
        return _remote(engine, rt, entries, now, bans, slow)
    cfg, name, record_host, book, active, nets, why, ignoreip, ignoreself, cap = _common(engine, rt)
    seen = rt.jail._seen  # noqa: SLF001 - a host the jail still counts (maxretry was higher): the long way
    jail, journal, share = rt.jail, rt.journal, cfg.share
    stock = _stock(rt, _SCAN_MATCH)  # record_host inline: PS_SRC of a detector's scan record
    canonical = R.canonical_address
    before, note = engine.offences_before, engine.note_offence
    add = book.add
    append = bans.append
    out: list[tuple[Ban, dict[str, str]]] = []
    for e in entries:
        fields = e.fields
        if e.error or e.line:
            slow(e)
            continue
        try:
            get = fields.get
            raw = get(_SRC) if stock else None
            if raw is None:
                host = record_host(fields)
            elif get(_IDENT) != _DETECTOR or get(_EVENT) != "scan":
                host = None
            else:
                try:
                    host = canonical(raw)
                except ValueError:
                    host = None
            if host is None:
                continue  # not the filter's: no decision (as Engine.entry with the same record_host)
            port_text = get(_PORT, "") or "0"
            if (port_text not in _PORTS or ":" in host or host in seen
                    or (journal_trusted(fields, cfg) is not None if journal else not e.trusted)):
                slow(e)  # a port to check, an IPv6 source (its network), a host still counted, a record not trusted
                continue
            if (name, host) in active or (nets.get((name, 4)) and book.covering(name, host) is not None):
                continue  # already banned here: nothing runs again
            if why(host, ignoreip, ignoreself) is not None or cap.full(now):
                slow(e)  # never banned, or the cap: Engine.entry decides and says so
                continue
            count = before(name, host) + 1
        except Exception:  # noqa: BLE001 - the long way raises it again, and the service reports the entry
            slow(e)
            continue
        # the ban: what Jail.add, PerMinuteCap.allow, Engine._ban and BanBook.add do for it
        jail.failures_total += 1
        cap.allow(now)
        note(name, host, count)
        info = local_info("" if port_text == "0" else port_text, get(_PROTO, ""), get(_SCAN, ""), get(_MODE, ""),
                          share, get(_VERIFIED) == "1")
        seconds = bantime_for(cfg, count)
        ban = Ban(name, host, now, FOREVER if seconds == FOREVER else now + seconds, count, 1, info,
                  get(_MESSAGE, "")[:300])
        add(ban)
        rt.bans_total += 1
        append(ban)
        out.append((ban, fields))
    return out


def _remote(engine: Engine, rt: JailRuntime, entries: Sequence[Entry], now: float, bans: list[Ban],
            slow: Callable[[Entry], None]) -> list[tuple[Ban, dict[str, str]]]:
    """:func:`decide` for the fleet jail: a remote ban of an address not banned here yet goes straight to its
    ban (what Engine._remote and Engine._ban do for it); an unban, a network, a ban to renew, a refusal go the
    long way."""
    cfg, name, record_host, book, active, nets, why, ignoreip, ignoreself, cap = _common(engine, rt)
    parse, bantime = remote.parse, remote.bantime
    stock = _stock(rt, _FLEET_MATCH)  # a line remote.parse takes is one the stock filter matches, same address
    add = book.add
    append = bans.append
    out: list[tuple[Ban, dict[str, str]]] = []
    for e in entries:
        fields = e.fields
        if e.error or e.line or not e.trusted:
            slow(e)
            continue
        try:
            if not stock and record_host(fields) is None:
                continue  # not the filter's: no decision
            r = parse(fields)  # (ValueError: the long way says whether it is the filter's, and what is wrong)
            target = r.target
            if r.event != "ban" or target != r.src:
                slow(e)  # an unban, a network (a never-ban address inside: its own address instead)
                continue
            assert r.until is not None  # (parse() requires it on a ban)
            seconds = bantime(cfg, r.until, r.origins, now)
            if seconds is None:
                rt.ignored_total += 1  # over at its origin: counted, not recorded (as Engine._remote)
                continue
            if ((name, target) in active or (nets.get((name, 6 if ":" in target else 4))
                                             and book.covering(name, target) is not None)
                    or why(target, ignoreip, ignoreself) is not None or cap.full(now)):
                slow(e)  # banned here already (or to renew), never banned, the cap: as ever
                continue
        except Exception:  # noqa: BLE001 - the long way raises it again (or names the bad field)
            slow(e)
            continue
        cap.allow(now)
        ban = Ban(name, target, now, now + seconds, 1, 1, r.info(), "")  # (its offence is its origin's)
        add(ban)
        rt.bans_total += 1
        append(ban)
        out.append((ban, fields))
    return out
